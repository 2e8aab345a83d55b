"""`ost validate`: check every record of a pool before any model runs, and say what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ostselect.cli.common import POOL_HELP, count_of_all, fail, progress

HELP = (
    "Check every record of a pool and write the bad ones to OUT/rejects.jsonl.\n\n"
    "Reads POOL (--pool, or positionally as before): messages JSONL (LLaMA-Factory / OpenAI "
    "style), LLaVA JSON or JSONL, Parquet, or a `datasets.save_to_disk` folder; relative image "
    "paths resolve against the pool's folder or --image-root. Each record is checked: parseable "
    "UTF-8 JSON, a user turn and a non-empty assistant turn, as many <image> placeholders as "
    "images, every image present and decodable (Pillow verify + load), no repeated id.\n\n"
    "Writes OUT/rejects.jsonl (one JSON line per bad record: id, file, line, reason, code) and "
    "prints a table of counts per reason. Exits 0 whenever the check ran to the end, even with "
    "rejects; non-zero only when POOL or an option cannot be used.\n\n"
    "Example:  ost validate --pool data/pool.jsonl --out runs/v1 --image-root data/images"
)


def _one_pool(positional: Path | None, option: Path | None) -> Path:
    """The pool from --pool or the old positional form: `--pool` is the name every other command
    uses, the positional keeps old scripts working; both or neither is ambiguous."""
    if positional is not None and option is not None:
        fail(f"the pool is given twice ({positional} and --pool {option}): keep only --pool")
    if option is not None:
        return option
    if positional is None:
        fail("no pool given: pass --pool FILE (a .jsonl/.json/.parquet file or a datasets folder)")
    return positional


def register(app: typer.Typer) -> None:
    @app.command("validate", help=HELP)
    def validate(
        pool_arg: Path | None = typer.Argument(
            None,
            metavar="POOL",
            show_default=False,
            help="The pool, positionally (kept for old scripts): prefer --pool.",
        ),
        pool_opt: Path | None = typer.Option(None, "--pool", help=POOL_HELP),
        out: Path = typer.Option(
            Path("ost-out"), "--out", "-o", help="Folder for rejects.jsonl (created if needed)."
        ),
        image_root: Path | None = typer.Option(
            None, "--image-root", help="Folder that relative image paths are resolved against."
        ),
        format: str = typer.Option(
            "auto", "--format", "-f", help="auto, messages, llava, parquet or hf."
        ),
        max_chars: int | None = typer.Option(
            None, "--max-chars", min=1, help="Reject samples whose turns hold more characters."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
    ) -> None:
        from ostselect.data import FORMATS, PoolError, count_records, validate_pool

        pool = _one_pool(pool_arg, pool_opt)
        if format not in FORMATS:
            fail(f"--format {format!r} is not known: use one of {', '.join(FORMATS)}")
        if not pool.exists():
            fail(f"--pool {pool} does not exist: pass a pool file or a datasets folder")
        if image_root is not None and not image_root.is_dir():
            fail(f"--image-root {image_root} is not a folder: pass the folder holding the images")
        if out.exists() and not out.is_dir():
            fail(f"--out {out} is a file: pass a folder for rejects.jsonl")
        try:
            total = count_records(pool, format=format)
            with progress(unit="records") as bar:
                task = bar.add_task("validating", total=total)

                def tick(_item: object) -> None:
                    bar.advance(task, 1)

                summary = validate_pool(
                    pool,
                    out,
                    image_root=image_root,
                    format=format,
                    max_chars=max_chars,
                    on_record=tick,
                )
        except PoolError as e:
            fail(str(e))
        except OSError as e:
            fail(f"cannot read {pool}: {e.strerror or e} (check the path and its permissions)")
        if as_json:
            typer.echo(json.dumps(summary.as_dict(), indent=2))
            return
        print_validation_summary(summary.as_dict())


def print_validation_summary(summary: dict) -> None:
    """Counts per reason as a Rich table, from `ValidationSummary.as_dict()` (`ost demo` too)."""
    from rich.console import Console
    from rich.table import Table

    from ostselect.data import REJECT_CODES

    rejected = summary["rejected"]
    table = Table(title=f"ost validate: {summary['pool']}", show_footer=False)
    table.add_column("result")
    table.add_column("code", style="dim")
    table.add_column("records", justify="right")
    table.add_row("[green]valid[/]", "", f"{summary['valid']:,}")
    for code, n in sorted(rejected.items(), key=lambda kv: (-kv[1], kv[0])):
        table.add_row(REJECT_CODES.get(code, code), code, f"{n:,}")
    table.add_row("[bold]total[/]", "", f"[bold]{summary['total']:,}[/]")
    out = Console()
    out.print(table)
    n_rejected = sum(rejected.values())
    empty = [] if n_rejected else [f"no rejects, {summary['rejects_path']} is empty"]
    line = count_of_all(
        summary["valid"], summary["total"], n_rejected, summary["rejects_path"], empty, "records"
    )
    out.print(f"valid: {line}", highlight=False)
