"""The `ost` command line: a thin Typer skin over the library.

Each command group lives in its own module with a `register(app)` function; modules import torch and
transformers inside the command bodies only, so `ost --help` starts fast.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="ost",
    help="Select the multimodal SFT samples worth training on, with One-Step-Train utilities.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _start() -> None:
    """Runs before every command: library progress bars off, so ours is the only one."""
    from ostselect.cli.common import silence_library_progress

    silence_library_progress()


# In pipeline order: data in -> proxy -> scorer -> selection -> outputs/report, then the rest.
COMMAND_MODULES = (
    "validate",
    "proxy",
    "warmup",
    "anchor",
    "score",
    "select",
    "report",
    "baseline",
    "bench",
)

for _name in COMMAND_MODULES:
    importlib.import_module(f"ostselect.cli.{_name}").register(app)
