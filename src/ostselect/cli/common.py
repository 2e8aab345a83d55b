"""Shared CLI helpers: one Rich console, one progress-bar style, one way to fail."""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from ostselect.progress import LiveProgress, make_progress

if TYPE_CHECKING:
    from pydantic import ValidationError

    from ostselect.proxy.model import Proxy

console = Console(stderr=True)


def _plain_switches_in_help() -> None:
    """Show boolean flags as bare switches in Rich help, not `--resume <bool>`.

    Typer 0.29's Rich options panel asks every option for its type label, flags included (its
    plain-text formatter and older Typers skip flags), so `--help <bool>` suggested that flags
    take a value and users wrote `--drop-toxic true`. Every command module imports this one, so
    patching the label once here covers every `--help`; other options are untouched.
    """
    from typer.core import TyperOption

    original = TyperOption.display_type_rich
    if getattr(original, "_ost_plain_switches", False):
        return

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        if getattr(self, "is_flag", False) and not getattr(self, "count", False):
            return None
        return original(self, ctx)

    display_type_rich._ost_plain_switches = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_plain_switches_in_help()

POOL_HELP = "Pool file or folder: messages/LLaVA JSON(L), Parquet, or `datasets.save_to_disk`."
POOL = typer.Option(..., "--pool", help=POOL_HELP)
"""The one required `--pool` option (score, warmup, select, report)."""

DEVICE_CHOICES = "auto (cuda if available, else cpu), cpu, cuda or cuda:N"
DEVICE = typer.Option("auto", "--device", help=f"{DEVICE_CHOICES}.")
"""The one `--device` option: every command that takes one shares its default and help."""


def resolve_device(name: str, flag: str = "--device") -> str:
    """`auto` -> cuda when visible, else cpu; refuse a name torch cannot use before slow work."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name != "cpu" and not re.fullmatch(r"cuda(:\d+)?", name):
        fail(f"{flag} {name!r} is not a device: use {DEVICE_CHOICES}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        fail(f"{flag} {name} but no CUDA device is visible: use {flag} cpu or auto")
    return name


def count_of_all(
    n: int,
    total: int,
    rejected: int,
    rejects: Path | str | None,
    notes: Sequence[str] = (),
    noun: str = "samples",
) -> str:
    """`28 of 30 samples (2 rejected, see out/rejects.jsonl; ...)` for a summary line.

    `total` counts every record read, rejected ones included: "28 of 28" when 2 of 30 records
    were rejected hid them. `notes` join the same parentheses.
    """
    parts = [f"{rejected:,} rejected, see {rejects}"] if rejected else []
    parts += [note for note in notes if note]
    return f"{n:,} of {total:,} {noun}" + (f" ({'; '.join(parts)})" if parts else "")


def require_positive_finite(flag: str, value: float, example: str) -> None:
    """Refuse 0, a negative or a non-finite number for a rate-like option, naming the flag."""
    if not (math.isfinite(value) and value > 0):
        fail(f"{flag} {value:g} is not usable: pass a positive, finite number such as {example}")


def fail_validation(err: ValidationError, flags: Mapping[str, str] | None = None) -> NoReturn:
    """Fail with an option model's pydantic errors as `--flag: must be ...`, one line.

    Pydantic speaks in field names (`top: Value error, ...`, `Input should be ...`); users typed
    flags. `flags` maps a field to its flag where the names differ (default `--field-name`).
    """
    parts = []
    for e in err.errors():
        field = str(e["loc"][0]) if e["loc"] else ""
        flag = (flags or {}).get(field) or "--" + field.replace("_", "-")
        msg = str(e["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
        msg = re.sub(r"^Input should be ", "must be ", msg)
        msg = re.sub(r"^Extra inputs are not permitted$", "is not an option here", msg)
        value = e.get("input")
        named = isinstance(value, dict) or value is None or str(value) in msg
        shown = "" if named else f" {value}"
        parts.append(f"{flag}{shown}: {msg}")
    fail("; ".join(parts))


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a message that says what to fix and exit non-zero (unusable arguments or files).

    The message is printed literally: paths and values such as `[x>=1]` are not Rich markup.
    """
    console.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def check_proxy_folder(path: Path, flag: str = "--proxy") -> None:
    """Fail in one line unless `path` is a model folder (or a hub name), before any slow work."""
    from ostselect.proxy.folder import NotAModelFolderError, check_model_folder

    try:
        check_model_folder(path)
    except NotAModelFolderError as err:
        fail(f"{flag} {err}")


def load_proxy_or_fail(path: Path, flag: str = "--proxy", **kwargs: Any) -> Proxy:
    """`load_proxy` for a command: whatever stops it becomes one line naming the flag and path."""
    check_proxy_folder(path, flag)
    from ostselect.proxy import load_proxy

    try:
        return load_proxy(path, **kwargs)
    except FileNotFoundError as err:
        fail(str(err))
    except (OSError, ValueError) as err:
        fail(f"cannot load {flag} {path}: {err}")


def progress(*, quiet: bool = False, unit: str = "samples") -> LiveProgress:
    """The progress display for anything long: count, rate, elapsed and ETA.

    A live bar on a terminal; in logs, CI and pipes a plain line every ~30 s or 10% instead (a
    bar there prints nothing until it ends); nothing under `quiet`. Report work with
    `advance(task, n)`; pass `resumed=True` for work done by an earlier run, so the rate and ETA
    measure only new work. See `ostselect.progress.LiveProgress`.
    """
    return make_progress(console, quiet=quiet, unit=unit)


def silence_library_progress() -> None:
    """Turn off transformers' and huggingface_hub's tqdm bars ("Loading weights ...").

    They would interleave with our own progress display and fill logs with carriage returns. The
    environment variable reaches libraries imported later (and Ray workers, which inherit it)
    without importing transformers here (~5 s); libraries already imported are told directly.
    """
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers.utils.logging" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
