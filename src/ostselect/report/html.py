"""Render a `ReportContent` as one self-contained HTML file: inline CSS, images as data URIs, no JS,
no fonts or anything else fetched, so it opens offline and can be mailed around as one file."""

from __future__ import annotations

import base64
from collections import Counter
from html import escape

from ostselect.report.content import Card, ReportContent, Table

CSS = """
:root { --ink:#1f2933; --muted:#616e7c; --line:#e4e7eb; --bg:#f5f7fa; --card:#fff;
        --keep:#2f6fdf; --toxic:#d64545; --ok:#1f9d55; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 32px 28px 64px; }
header h1 { font-size: 28px; margin: 0 0 4px; letter-spacing: -0.01em; }
header p { margin: 0; color: var(--muted); }
h2 { font-size: 19px; margin: 40px 0 12px; letter-spacing: -0.005em; }
.stats { display:grid; grid-template-columns: repeat(auto-fit, minmax(170px, 1fr)); gap: 12px;
         margin-top: 22px; }
.stat { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
  padding: 12px 14px; }
.stat .k { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.stat .v { font-size: 18px; font-weight: 600; margin-top: 2px; }
.panel { background: var(--card); border: 1px solid var(--line); border-radius: 12px;
  padding: 16px 18px; }
.figs { display:grid; grid-template-columns: 1fr; gap: 16px; }
.figs.two { grid-template-columns: 3fr 2fr; }
figure { margin: 0; }
figure img { width: 100%; height: auto; display: block; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 6px; }
table { border-collapse: collapse; width: 100%; font-size: 14px; }
th, td { text-align: left; padding: 7px 10px; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { color: var(--muted); font-weight: 600; font-size: 12px; text-transform: uppercase;
  letter-spacing:.04em; }
td.num { font-variant-numeric: tabular-nums; }
.bar { display:flex; align-items:center; gap:8px; }
.bar span.track { flex: 0 0 110px; height: 8px; background: var(--line); border-radius: 4px;
  overflow:hidden; }
.bar span.fill { display:block; height:100%; background: var(--keep); }
.gallery { display:grid; grid-template-columns: repeat(auto-fill, minmax(270px, 1fr)); gap: 14px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 12px;
  overflow: hidden;
        display:flex; flex-direction: column; }
.card.toxic { border-color: #f3b8b8; }
.thumbs { display:flex; gap:2px; background:#eef1f4; justify-content:center; align-items:center;
          height: 180px; }
.thumbs img { height: 100%; width: auto; max-width: 100%; object-fit: contain; display:block; }
.noimg { color: var(--muted); font-size: 12px; padding: 10px; text-align:center;
  background:#eef1f4; }
.body { padding: 10px 12px 12px; display:flex; flex-direction:column; gap:6px; }
.meta { display:flex; justify-content: space-between; align-items: baseline; font-size: 13px; }
.meta .rank { color: var(--muted); }
.meta .u { font-weight: 650; font-variant-numeric: tabular-nums; color: var(--ok); }
.card.toxic .meta .u { color: var(--toxic); }
.id { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px;
      color: var(--muted); word-break: break-all; }
.q, .a { font-size: 13.5px; white-space: pre-wrap; word-break: break-word; }
.q b, .a b { color: var(--muted); font-weight: 600; font-size: 11px; text-transform: uppercase;
             letter-spacing: .05em; display:block; }
details summary { cursor: pointer; color: var(--keep); font-size: 12.5px; }
.tags { display:flex; flex-wrap: wrap; gap: 4px; }
.tag { background: #e8eefc; color: #234; border-radius: 999px; padding: 1px 8px;
  font-size: 11.5px; }
.tag.bad { background: #fde8e8; color: #8a1c1c; }
.tag.hidden { background: #f1e8fd; color: #4b2380; border: 1px dashed #9b7bd0; }
.muted { color: var(--muted); font-size: 13px; }
.alert { background: #fde8e8; border: 2px solid #d64545; color: #8a1c1c; border-radius: 10px;
         padding: 10px 14px; margin: 12px 0; font-weight: 600; }
.notes { background: #fff8e6; border: 1px solid #f5dfa3; border-radius: 10px; padding: 10px 14px;
         margin-top: 16px; font-size: 14px; }
.prov td:first-child { white-space: nowrap; color: var(--muted); width: 30%; }
.prov td { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px;
           word-break: break-all; }
footer { color: var(--muted); font-size: 12px; margin-top: 40px; }
@media (max-width: 800px) { .figs.two { grid-template-columns: 1fr; } }
"""

PREVIEW_CHARS = 420


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def render_html(content: ReportContent) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(content.title)}</title><style>{CSS}</style></head><body><main>",
        f"<header><h1>{escape(content.title)}</h1>",
        "<p>One-Step-Train utilities: how much one simulated optimizer step on a sample lowers the "
        "loss on the anchor set. Higher is better; below zero the sample hurts.</p></header>",
        *(f'<div class="alert">{escape(a)}</div>' for a in content.alerts),
        '<section class="stats">',
        *(
            f'<div class="stat"><div class="k">{escape(k)}</div>'
            f'<div class="v">{escape(v)}</div></div>'
            for k, v in content.summary
        ),
        "</section>",
    ]
    if content.notes:
        parts.append(
            '<div class="notes">' + "<br>".join(escape(n) for n in content.notes) + "</div>"
        )
    parts.append("<h2>Utility distribution</h2>")
    figs = [name for name in ("histogram", "scatter") if name in content.figures]
    parts.append(f'<div class="figs{" two" if len(figs) == 2 else ""}">')
    for name in figs:
        parts.append(_figure(name, *content.figures[name]))
    parts.append("</div>")
    for table in content.tables:
        parts.append(f"<h2>{escape(table.title)}</h2>")
        beside = {"By anchor group": "groups", "Coverage by anchor group": "coverage"}
        fig = beside.get(table.title)
        if fig is not None and fig in content.figures:
            parts.append('<div class="figs two">')
            parts.append(f'<div class="panel">{_table(table)}</div>')
            parts.append(_figure(fig, *content.figures[fig]))
            parts.append("</div>")
        else:
            parts.append(f'<div class="panel">{_table(table)}</div>')
    parts.append(f"<h2>Top {len(content.top)}: the samples worth training on</h2>")
    parts.append(_hidden_note(content, content.top) + _gallery(content.top, content.hidden_label))
    if content.bottom:
        parts.append(f"<h2>Bottom {len(content.bottom)}: the lowest utilities</h2>")
        parts.append(
            _hidden_note(content, content.bottom) + _gallery(content.bottom, content.hidden_label)
        )
    parts.append("<h2>Provenance</h2>")
    rows = "".join(
        f"<tr><td>{escape(k)}</td><td>{escape(v)}</td></tr>" for k, v in content.provenance
    )
    parts.append(f'<div class="panel"><table class="prov">{rows}</table></div>')
    parts.append("<footer>Generated by ostselect. This file is self-contained.</footer>")
    parts.append("</main></body></html>")
    return "\n".join(parts)


def _figure(name: str, caption: str, png: bytes) -> str:
    return (
        f'<figure class="panel" id="fig-{name}"><img alt="{escape(name)}" '
        f'src="{data_uri(png, "image/png")}"><figcaption>{escape(caption)}</figcaption></figure>'
    )


def _table(table: Table) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in table.columns)
    body = []
    for row in table.rows:
        cells = []
        for j, val in enumerate(row):
            if j == table.bar_column and isinstance(val, float):
                cells.append(
                    f'<td><div class="bar"><span class="track"><span class="fill" '
                    f'style="width:{100 * val:.1f}%"></span></span>{100 * val:.1f}%</div></td>'
                )
            elif isinstance(val, int | float):
                cells.append(f'<td class="num">{escape(str(val))}</td>')
            else:
                cells.append(f"<td>{escape(str(val))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _text_block(label: str, cls: str, text: str) -> str:
    if len(text) <= PREVIEW_CHARS:
        return f'<div class="{cls}"><b>{label}</b>{escape(text)}</div>'
    return (
        f'<div class="{cls}"><b>{label}</b>{escape(text[:PREVIEW_CHARS])}…'
        f"<details><summary>show all</summary>{escape(text)}</details></div>"
    )


def _hidden_note(content: ReportContent, cards: list[Card]) -> str:
    """How the hidden labels split this gallery, e.g. "10 clean, 2 misread" (benchmarks)."""
    labels = [c.hidden for c in cards if c.hidden is not None]
    if not labels or content.hidden_label is None:
        return ""
    counts = Counter(labels)
    text = ", ".join(f"{n} {k}" for k, n in counts.most_common())
    return f'<p class="muted">{escape(content.hidden_label)}: {escape(text)}</p>'


def _gallery(cards: list[Card], hidden_label: str | None = None) -> str:
    body = "".join(_card(c, hidden_label) for c in cards)
    return '<div class="gallery">' + body + "</div>"


def _card(c: Card, hidden_label: str | None = None) -> str:
    if c.thumbnails:
        imgs = "".join(
            f'<img class="thumb" alt="image of {escape(c.id)}" src="{data_uri(t, "image/jpeg")}">'
            for t in c.thumbnails
        )
        more = f'<div class="noimg">+{c.more_images} more</div>' if c.more_images else ""
        thumbs = f'<div class="thumbs">{imgs}</div>{more}'
    else:
        thumbs = f'<div class="noimg">{"no image" if c.in_pool else "not in the pool"}</div>'
    tags = "".join(f'<span class="tag">{escape(k)}: {escape(v)}</span>' for k, v in c.tags.items())
    if c.toxic:
        tags += '<span class="tag bad">toxic</span>'
    if c.hidden is not None:
        label = escape(hidden_label or "hidden")
        tags += f'<span class="tag hidden" title="{label}">{label}: {escape(c.hidden)}</span>'
    return (
        f'<article class="card{" toxic" if c.toxic else ""}">{thumbs}<div class="body">'
        f'<div class="meta"><span class="rank">rank {c.rank:,}</span>'
        f'<span class="u">utility {c.utility:+.4g}</span></div>'
        f'<div class="id">{escape(c.id)}</div>'
        + (f'<div class="tags">{tags}</div>' if tags else "")
        + _text_block("question", "q", c.question)
        + _text_block("answer", "a", c.answer)
        + "</div></article>"
    )
