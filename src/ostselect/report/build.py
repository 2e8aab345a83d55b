"""`build_report()`: scores + pool -> one report to look at before trusting a subset."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

from ostselect.atomic import temp_beside
from ostselect.data.sample import Sample
from ostselect.report.content import gather
from ostselect.report.html import render_html
from ostselect.report.markdown import render_markdown
from ostselect.scores import Scores
from ostselect.select.selection import Selection


def build_report(
    scores: Scores | str | Path,
    pool: Sequence[Sample] | str | Path,
    out_path: str | Path,
    *,
    cutoff: str | int | None = None,
    top_n: int = 12,
    bottom_n: int = 12,
    format: Literal["html", "md"] = "html",
    strata_fields: Sequence[str] | None = None,
    image_root: str | Path | None = None,
    selection: Selection | str | Path | None = None,
    hidden_tags: Mapping[str, str] | None = None,
    hidden_label: str = "hidden label",
    alerts: Sequence[str] = (),
    force: bool = False,
) -> Path:
    """Write the report: `format="html"`, one self-contained file; `"md"`, Markdown + PNGs.

    `cutoff` ("20%" or a count) marks the would-be-kept samples in the plots and tables;
    `selection` (a `Selection` or its `selection.json`) marks its kept ids instead, e.g. a
    coverage-aware subset; with per-anchor-group columns the report then shows the subset's
    coverage per group. `strata_fields` defaults to the categorical `Sample.extra` fields found
    in the pool. `hidden_tags`/`hidden_label`: evaluation-only labels shown on each gallery
    card (the benchmark's noise tags); `alerts`: lines shown first, in red. Scores made on another
    pool raise `ProvenanceMismatchError` unless `force`, as in `select`.
    """
    if format not in ("html", "md"):
        raise ValueError(f"unknown report format {format!r} (use 'html' or 'md')")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    content = gather(
        scores,
        pool,
        cutoff=cutoff,
        top_n=top_n,
        bottom_n=bottom_n,
        strata_fields=strata_fields,
        image_root=image_root,
        selection=selection,
        hidden_tags=hidden_tags,
        hidden_label=hidden_label,
        alerts=alerts,
        force=force,
    )
    text = render_html(content) if format == "html" else render_markdown(content, out_path)
    _write_atomic(out_path, text)
    return out_path


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = temp_beside(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
