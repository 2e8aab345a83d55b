"""`ost report`: one self-contained HTML page (or Markdown + PNGs) about a scores table."""

from __future__ import annotations

from pathlib import Path

import typer

from ostselect.cli.common import POOL, console, fail

HELP = (
    "Write a report on a scores table over its pool: the utility histogram with the cutoff and "
    "the toxic tail marked, utility vs own loss, per-stratum and per-anchor-group breakdowns, a "
    "gallery of the top and bottom samples with their images, question, answer, utility and "
    "rank, and the scores' provenance. With per-anchor-group columns and a kept set (--cutoff, "
    "or --selection with an `ost select` selection.json of any policy), the subset's coverage "
    "per anchor group against the pool's.\n\n"
    "--format html (default) writes one self-contained file (images embedded, no network needed "
    "to view it); --format md writes Markdown with its PNGs in <OUT stem>_files/.\n\n"
    "Refuses scores made on another pool (missing ids, another pool fingerprint) unless "
    "--force, like `ost select`.\n\n"
    "Example:  ost report --pool data/pool.jsonl --scores runs/scores.parquet "
    "--out runs/report.html --cutoff 20%"
)


def register(app: typer.Typer) -> None:
    @app.command("report", help=HELP)
    def report(
        pool: Path = POOL,
        scores: Path = typer.Option(..., "--scores", help="Scores Parquet (ost score/baseline)."),
        out: Path = typer.Option(Path("report.html"), "--out", "-o", help="Report file."),
        cutoff: str | None = typer.Option(
            None, "--cutoff", help="Mark the would-be-kept top N or P% (e.g. 20%)."
        ),
        format: str = typer.Option("html", "--format", "-f", help="html or md."),
        top_n: int = typer.Option(12, "--top-n", min=0, help="Gallery size, best samples."),
        bottom_n: int = typer.Option(12, "--bottom-n", min=0, help="Gallery size, worst samples."),
        image_root: Path | None = typer.Option(
            None, "--image-root", help="Folder that relative image paths are resolved against."
        ),
        selection: Path | None = typer.Option(
            None,
            "--selection",
            help="An `ost select` selection.json: mark its kept samples (any --policy) instead "
            "of a --cutoff.",
        ),
        force: bool = typer.Option(
            False, "--force", help="Report even if the scores were made on another pool."
        ),
        labels: Path | None = typer.Option(
            None,
            "--labels",
            help="JSON of evaluation-only labels the scorer never saw (id -> label, or id -> "
            "object with a --labels-field key; e.g. a benchmark's pool.noise.json): shown on "
            "each gallery card and as a table of what was kept per label.",
        ),
        labels_field: str = typer.Option(
            "noise", "--labels-field", help="Key of the label when --labels maps ids to objects."
        ),
    ) -> None:
        from pydantic import ValidationError

        from ostselect.data import PoolError
        from ostselect.report import build_report
        from ostselect.select import SelectionPolicy

        if format not in ("html", "md"):
            fail(f"--format {format!r} is not known: use html or md")
        if not pool.exists():
            fail(f"--pool {pool} does not exist")
        if not scores.exists():
            fail(f"--scores {scores} does not exist: run `ost score` first")
        _check_scores_file(scores)
        if selection is not None and not selection.exists():
            fail(f"--selection {selection} does not exist: run `ost select` first")
        if selection is not None and cutoff is not None:
            fail("--selection and --cutoff both say what is kept: give one")
        if cutoff is not None:
            try:
                SelectionPolicy(top=cutoff)
            except ValidationError:
                fail(f"--cutoff {cutoff!r}: use a count like 5000 or a percentage like 20%")
        tags = _read_labels(labels, labels_field) if labels is not None else None
        try:
            path = build_report(
                scores,
                pool,
                out,
                cutoff=cutoff,
                top_n=top_n,
                bottom_n=bottom_n,
                format=format,
                image_root=image_root,
                selection=selection,
                force=force,
                hidden_tags=tags,
                hidden_label=f"{labels_field} (hidden label, not seen by the scorer)",
            )
        except (PoolError, ValueError) as e:
            fail(str(e))
        size = path.stat().st_size
        console.print(f"wrote {path} ({size / 1024:.0f} KiB)")


def _check_scores_file(path: Path) -> None:
    """Refuse a --scores that is not Parquet (a pool passed by mistake) in one line naming the
    flag, before pyarrow's own `Parquet magic bytes not found` reaches the user."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pq.read_schema(path)
    except (pa.ArrowException, OSError) as err:
        fail(
            f"--scores {path} is not a scores table (the Parquet file `ost score` or "
            f"`ost baseline` writes): {err}"
        )


def _read_labels(path: Path, field: str) -> dict[str, str]:
    """id -> label from a JSON object whose values are labels or objects holding `field`."""
    import json

    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        fail(f"--labels {path}: not readable JSON ({err})")
    if not isinstance(raw, dict):
        fail(f"--labels {path}: expected a JSON object mapping sample ids to labels")
    out: dict[str, str] = {}
    for sid, value in raw.items():
        if isinstance(value, dict):
            if field not in value:
                fail(f"--labels {path}: sample {sid!r} has no {field!r} key (see --labels-field)")
            value = value[field]
        out[str(sid)] = str(value)
    return out
