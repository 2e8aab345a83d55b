"""The shared progress display: rate over new work only, ETA, plain lines off a terminal, quiet."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from ostselect.progress import LiveProgress, format_duration, format_rate, make_progress


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def plain(buffer: io.StringIO, clock: FakeClock, **kwargs: float) -> LiveProgress:
    bar = LiveProgress(Console(file=buffer, width=200), mode="plain", clock=clock)
    for name, value in kwargs.items():
        setattr(bar, name, value)
    return bar


def test_resumed_work_moves_the_count_not_the_rate(clock: FakeClock) -> None:
    bar = plain(io.StringIO(), clock)
    with bar:
        task = bar.add_task("scoring exact", total=100)
        clock.now += 50  # model loading: not part of any rate
        bar.advance(task, 50, resumed=True)  # shards of an earlier run, counted at once
        assert bar.tasks[0].fields["speed"] is None
        clock.now += 10
        bar.advance(task, 5)  # first new batch: its time is mostly set-up, no rate yet
        assert bar.tasks[0].fields["speed"] is None
        clock.now += 2
        bar.update(task, advance=5)  # from the second report on: steady state only
        fields = bar.tasks[0].fields
        assert fields["speed"] == pytest.approx(2.5)
        assert fields["eta_at"] == pytest.approx(clock.now + 40 / 2.5)
        assert bar.tasks[0].completed == 60


def test_plain_lines_every_tenth_and_when_done(clock: FakeClock) -> None:
    out = io.StringIO()
    with plain(out, clock) as bar:
        task = bar.add_task("scoring exact", total=1000)
        bar.advance(task, 200, resumed=True)
        for _ in range(16):  # 50 samples every 5 s: 10/s
            clock.now += 5
            bar.advance(task, 50)
    lines = out.getvalue().splitlines()
    assert lines[0] == "scoring exact: 250/1,000 samples (200 resumed)"  # no rate yet
    assert lines[1] == "scoring exact: 300/1,000 samples (200 resumed), 10.0 samples/s, ETA 70 s"
    done = "scoring exact: 1,000/1,000 samples (200 resumed), 10.0 samples/s, done in 80 s"
    assert lines[-1] == done
    assert len(lines) == 9  # 25%, then one per 10% of the total up to 100%


def test_plain_lines_without_a_total_come_with_time(clock: FakeClock) -> None:
    out = io.StringIO()
    with plain(out, clock, plain_every_s=30.0) as bar:
        task = bar.add_task("validating", total=None, unit="records")
        for _ in range(10):
            clock.now += 10
            bar.advance(task, 20)
    lines = out.getvalue().splitlines()
    assert lines[:3] == [
        "validating: 60 records, 2.0 records/s",
        "validating: 120 records, 2.0 records/s",
        "validating: 180 records, 2.0 records/s",
    ]
    assert lines[-1] == "validating: 200 records, 2.0 records/s"  # the last state, at stop


def test_a_total_cut_to_the_work_done_ends_the_task(clock: FakeClock) -> None:
    out = io.StringIO()
    with plain(out, clock, plain_every_fraction=1.0) as bar:
        task = bar.add_task("scoring exact", total=10)
        clock.now += 1
        bar.advance(task, 4)
        clock.now += 1
        bar.advance(task, 4)  # two records were rejected by the reader: no more work comes
        bar.update(task, total=8)
    assert out.getvalue().splitlines()[-1].endswith("8/8 samples, 4.0 samples/s, done in 2 s")


def test_callers_own_rate_text_and_note_are_shown(clock: FakeClock) -> None:
    out = io.StringIO()
    with plain(out, clock) as bar:
        task = bar.add_task("warm-up", total=4)
        bar.update(task, advance=4, note="loss 1.234")
    assert out.getvalue().splitlines()[-1].startswith("warm-up: 4/4 samples, loss 1.234, done")


def test_quiet_prints_nothing_but_still_counts() -> None:
    out = io.StringIO()
    with LiveProgress(Console(file=out), mode="quiet") as bar:
        task = bar.add_task("scoring exact", total=3)
        bar.advance(task, 3)
    assert out.getvalue() == ""
    assert bar.tasks[0].completed == 3


def test_mode_follows_the_console() -> None:
    assert make_progress(Console(file=io.StringIO())).mode == "plain"  # a log, a pipe, CI
    assert make_progress(Console(file=io.StringIO(), force_terminal=True)).mode == "live"
    assert make_progress(Console(file=io.StringIO(), force_terminal=True), quiet=True).mode == (
        "quiet"
    )


def test_formats() -> None:
    assert format_rate(3.14) == "3.1 samples/s"
    assert format_rate(0.25) == "4.0 s/sample"
    assert format_rate(None) == ""
    assert format_rate(2.0, "") == "2.0/s"
    assert format_duration(42) == "42 s"
    assert format_duration(47 * 60) == "47 min"
    assert format_duration(3.2 * 3600) == "3.2 h"


def test_a_fully_resumed_pass_writes_one_line(clock: FakeClock) -> None:
    out = io.StringIO()
    with plain(out, clock) as bar:
        task = bar.add_task("scoring exact", total=100)
        for _ in range(10):
            bar.advance(task, 10, resumed=True)
    assert out.getvalue().splitlines() == [
        "scoring exact: 100/100 samples (100 resumed), done in 0 s"
    ]
