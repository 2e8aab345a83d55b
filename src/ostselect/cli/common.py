"""Shared CLI helpers: one Rich console, one progress-bar style, one way to fail."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

if TYPE_CHECKING:
    from ostselect.proxy.model import Proxy

console = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a message that says what to fix and exit non-zero (unusable arguments or files)."""
    console.print(f"[bold red]error:[/] {message}")
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


def progress() -> Progress:
    """The progress bar used for anything long: count, rate, elapsed and ETA."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
