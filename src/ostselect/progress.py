"""One progress display for every long job: live bar on a terminal, plain lines in logs, or nothing.

Rich's own speed estimate counts whatever `advance` reports, so a resumed run (thousands of
finished samples counted at once) would show an absurd rate and an ETA near zero; and in a log
file or CI, a live bar prints nothing until it stops. `LiveProgress` therefore measures the rate
on new work only (reports marked `resumed=True` move the count, not the rate), derives the ETA
from it, and, when the console is not a terminal, writes a plain line every `plain_every_s`
seconds or every `plain_every_fraction` of the total, e.g.

    scoring exact: 1,200/10,000 samples, 3.1/s, ETA 47 min

The first report of new work includes set-up (model load, anchor preparation), so the rate is
measured from it on, and shown once a second report arrives.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

__all__ = ["LiveProgress", "format_duration", "format_rate", "make_progress"]


def format_rate(speed: float | None, unit: str = "samples") -> str:
    """`3.1 samples/s`, or `4.2 s/sample` below one per second (easier to read for slow models)."""
    if speed is None or not math.isfinite(speed) or speed <= 0:
        return ""
    if speed >= 1:
        return f"{speed:,.1f} {unit}/s" if unit else f"{speed:,.1f}/s"
    one = unit[:-1] if unit.endswith("s") else unit
    return f"{1 / speed:,.1f} s/{one}" if one else f"{1 / speed:,.1f} s each"


def format_duration(seconds: float) -> str:
    """`42 s`, `47 min`, `3.2 h`: the precision an ETA deserves."""
    if seconds < 90:
        return f"{max(seconds, 0):.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass
class _Meter:
    """Rate bookkeeping of one task: new work only (resumed work is counted apart)."""

    fresh: int = 0  # samples of new work reported so far
    reports: int = 0  # reports of new work
    first_n: int = 0  # size of the first report of new work (it carries the set-up time)
    first_t: float = 0.0
    resumed: int = 0
    last_line_t: float = 0.0  # plain mode: when the last line was written (or the task began)
    next_step: int = 0  # plain mode: lines come at this many `plain_every_fraction`s of the total
    last_line_done: float = -1.0
    done_line: bool = False  # plain mode: the task's "done" line is written

    def report(self, n: float, resumed: bool, now: float) -> None:
        if resumed:
            self.resumed += int(n)
            return
        if self.reports == 0:
            self.first_n, self.first_t = int(n), now
        self.fresh += int(n)
        self.reports += 1

    def speed(self, now: float) -> float | None:
        """Samples/s from the first report of new work on; None before a second report (the
        first one's time is mostly set-up: a 10-s model load would make a 6-min ETA)."""
        if self.reports >= 2 and now > self.first_t:
            return (self.fresh - self.first_n) / (now - self.first_t)
        return None


class _RateColumn(ProgressColumn):
    """The caller's own text in `rate` if it set one, else the measured rate."""

    def render(self, task: Task) -> Text:
        text = task.fields.get("rate") or format_rate(
            task.fields.get("speed"), task.fields.get("unit", "samples")
        )
        note = task.fields.get("note")
        return Text(f"{text} {note}".strip() if note else text)


class _EtaColumn(ProgressColumn):
    """Counts down between reports (the estimate is a deadline, not a number frozen per batch)."""

    max_refresh = 0.5

    def render(self, task: Task) -> Text:
        if task.finished:
            return Text("done", style="progress.remaining")
        eta_at = task.fields.get("eta_at")
        if eta_at is None:
            return Text("ETA -:--:--", style="progress.remaining")
        left = int(max(eta_at - task.get_time(), 0))
        return Text(
            f"ETA {left // 3600}:{left % 3600 // 60:02d}:{left % 60:02d}",
            style="progress.remaining",
        )


class LiveProgress(Progress):
    """A `rich.progress.Progress` whose rate and ETA ignore resumed work, with a plain-line mode.

    Use it like Rich's: `add_task(description, total=..., unit="samples")`, then
    `advance(task, n)` or `update(task, advance=n)`; pass `resumed=True` for work that was already
    done (counted, not timed). `note=` sets a short text after the rate (e.g. the training loss).
    """

    plain_every_s: float = 30.0
    plain_every_fraction: float = 0.1

    def __init__(
        self,
        console: Console,
        *,
        mode: str = "live",
        unit: str = "samples",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if mode not in ("live", "plain", "quiet"):
            raise ValueError(f"unknown progress mode {mode!r}")
        self.mode = mode
        self._unit = unit
        self._meters: dict[TaskID, _Meter] = {}
        super().__init__(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            _RateColumn(),
            TimeElapsedColumn(),
            _EtaColumn(),
            console=console,
            transient=False,
            disable=mode != "live",
            get_time=clock,
        )

    def add_task(
        self,
        description: str,
        start: bool = True,
        total: float | None = None,
        completed: int = 0,
        visible: bool = True,
        **fields: Any,
    ) -> TaskID:
        fields.setdefault("rate", "")
        fields.setdefault("note", "")
        fields.setdefault("unit", self._unit)
        fields.setdefault("speed", None)
        fields.setdefault("eta_at", None)
        task_id = super().add_task(description, start, total, completed, visible, **fields)
        now = self.get_time()
        self._meters[task_id] = _Meter(last_line_t=now)
        return task_id

    def update(
        self,
        task_id: TaskID,
        *,
        total: float | None = None,
        completed: float | None = None,
        advance: float | None = None,
        description: str | None = None,
        visible: bool | None = None,
        refresh: bool = False,
        resumed: bool = False,
        **fields: Any,
    ) -> None:
        before = self._tasks[task_id].completed
        super().update(
            task_id,
            total=total,
            completed=completed,
            advance=advance,
            description=description,
            visible=visible,
            refresh=refresh,
            **fields,
        )
        self._measured(task_id, self._tasks[task_id].completed - before, resumed)
        # A task can end without new work, e.g. when its total is cut to what was done.
        if self.mode == "plain" and self._unwritten(task_id):
            self._write_line(task_id, self.get_time())

    def advance(self, task_id: TaskID, advance: float = 1, *, resumed: bool = False) -> None:
        super().advance(task_id, advance)
        self._measured(task_id, advance, resumed)

    def stop(self) -> None:
        super().stop()
        if self.mode == "plain":
            for task_id in list(self._meters):
                if self._unwritten(task_id, any_change=True):
                    self._write_line(task_id, self.get_time())

    # -- internals --------------------------------------------------------------------------------
    def _unwritten(self, task_id: TaskID, *, any_change: bool = False) -> bool:
        """Plain mode: the task finished (or, with `any_change`, moved) since its last line."""
        task, meter = self._tasks[task_id], self._meters[task_id]
        if task.finished and not meter.done_line:
            return True
        return any_change and task.completed != meter.last_line_done

    def _measured(self, task_id: TaskID, n: float, resumed: bool) -> None:
        if not n:
            return
        now = self.get_time()
        meter = self._meters[task_id]
        meter.report(n, resumed, now)
        task = self._tasks[task_id]
        speed = meter.speed(now)
        eta_at = None
        if speed and task.total is not None:
            eta_at = now + max(task.total - task.completed, 0) / speed
        task.fields["speed"], task.fields["eta_at"] = speed, eta_at
        # Resumed shards arrive in a burst: one line when new work starts says how many there were.
        due = self._unwritten(task_id) or (not resumed and self._line_due(task, meter, now))
        if self.mode == "plain" and due:
            self._write_line(task_id, now)

    def _line_due(self, task: Task, meter: _Meter, now: float) -> bool:
        if now - meter.last_line_t >= self.plain_every_s:
            return True
        return bool(task.total) and self._steps(task) >= meter.next_step

    def _steps(self, task: Task) -> int:
        """Whole `plain_every_fraction`s done (the epsilon keeps 0.3 / 0.1 from giving 2)."""
        return math.floor(task.completed / (task.total or 1) / self.plain_every_fraction + 1e-9)

    def _write_line(self, task_id: TaskID, now: float) -> None:
        task = self._tasks[task_id]
        meter = self._meters[task_id]
        unit = task.fields.get("unit", "")
        done = f"{task.completed:,.0f}"
        if task.total is not None:
            done += f"/{task.total:,.0f}"
        parts = [f"{task.description}: {done} {unit}".rstrip()]
        if meter.resumed:
            parts[0] += f" ({meter.resumed:,} resumed)"
        rate = task.fields.get("rate") or format_rate(task.fields.get("speed"), unit)
        if rate:
            parts.append(rate)
        if task.fields.get("note"):
            parts.append(str(task.fields["note"]))
        if task.finished:
            parts.append(f"done in {format_duration(task.finished_time or task.elapsed or 0)}")
        elif task.fields.get("eta_at") is not None:
            parts.append(f"ETA {format_duration(task.fields['eta_at'] - now)}")
        self.console.print(", ".join(parts), markup=False, highlight=False, soft_wrap=True)
        meter.last_line_t = now
        meter.last_line_done = task.completed
        meter.done_line = task.finished
        meter.next_step = self._steps(task) + 1


def make_progress(
    console: Console | None = None, *, quiet: bool = False, unit: str = "samples"
) -> LiveProgress:
    """The shared progress display: live on a terminal, plain lines otherwise, silent if quiet."""
    console = console or Console(stderr=True)
    if quiet:
        mode = "quiet"
    elif console.is_terminal and not console.is_dumb_terminal:
        mode = "live"
    else:
        mode = "plain"
    return LiveProgress(console, mode=mode, unit=unit)
