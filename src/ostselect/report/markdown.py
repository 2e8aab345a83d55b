"""Render a `ReportContent` as Markdown, its PNGs (figures, thumbnails) in a folder beside it."""

from __future__ import annotations

import re
from pathlib import Path

from ostselect.report.content import Card, ReportContent, Table

PREVIEW_CHARS = 300


def render_markdown(content: ReportContent, out_path: Path) -> str:
    """Write the images to `<stem>_files/` next to `out_path` and return the Markdown text."""
    assets = out_path.parent / f"{out_path.stem}_files"
    assets.mkdir(parents=True, exist_ok=True)
    rel = assets.name
    lines = [f"# {content.title}", ""]
    lines += [*(f"> **{a}**" for a in content.alerts), *([""] if content.alerts else [])]
    lines += ["| | |", "|---|---|"] + [f"| {k} | {_cell(v)} |" for k, v in content.summary] + [""]
    lines += [f"> {n}" for n in content.notes] + ([""] if content.notes else [])
    for name, (caption, png) in content.figures.items():
        (assets / f"{name}.png").write_bytes(png)
        lines += [f"![{name}]({rel}/{name}.png)", "", f"*{caption}*", ""]
    for table in content.tables:
        lines += [f"## {table.title}", "", *_table(table), ""]
    for title, cards in (("Top samples", content.top), ("Bottom samples", content.bottom)):
        if cards:
            lines += [f"## {title}", ""]
            for c in cards:
                lines += _card(c, assets, rel)
    lines += ["## Provenance", "", "| key | value |", "|---|---|"]
    lines += [f"| {_cell(k)} | `{_cell(v)}` |" for k, v in content.provenance]
    return "\n".join(lines) + "\n"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(table: Table) -> list[str]:
    out = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    for row in table.rows:
        cells = [
            f"{100 * v:.1f}%" if j == table.bar_column and isinstance(v, float) else _cell(v)
            for j, v in enumerate(row)
        ]
        out.append("| " + " | ".join(cells) + " |")
    return out


def _card(c: Card, assets: Path, rel: str) -> list[str]:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", c.id)[:80]
    head = f"### rank {c.rank}: `{c.id}` (utility {c.utility:+.4g}{', toxic' if c.toxic else ''})"
    out = [head, ""]
    for j, thumb in enumerate(c.thumbnails):
        name = f"thumb_{c.rank}_{safe}_{j}.jpg"
        (assets / name).write_bytes(thumb)
        out.append(f"![{c.id}]({rel}/{name})")
    tags = [f"`{k}: {v}`" for k, v in c.tags.items()]
    if c.hidden is not None:
        tags.append(f"`hidden label: {c.hidden}`")
    if tags:
        out.append(" ".join(tags))
    for label, text in (("Question", c.question), ("Answer", c.answer)):
        short = text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + "…"
        out += ["", f"**{label}:** " + short.replace("\n", "  \n")]
    return [*out, ""]
