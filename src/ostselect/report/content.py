"""What a report says, independent of how it is rendered (HTML or Markdown).

`gather()` joins the scores with the pool once and computes every number, table and figure; the
renderers only lay them out, so HTML and Markdown can never disagree.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ostselect.data.sample import IMAGE_PLACEHOLDER, Sample
from ostselect.report import plots
from ostselect.scores import Scores, ranking_alerts, read_scores
from ostselect.select.coverage import GroupCoverage, coverage_by_group
from ostselect.select.policy import SelectionPolicy
from ostselect.select.provenance import check_provenance, load_pool

_GROUP = re.compile(r"^utility\[(.+)\]$")
MAX_STRATA = 24


@dataclass
class Card:
    """One gallery entry."""

    id: str
    rank: int
    utility: float
    toxic: bool
    question: str
    answer: str
    thumbnails: list[bytes]  # JPEG bytes
    more_images: int
    tags: dict[str, str]
    in_pool: bool
    hidden: str | None = None  # an evaluation-only label (the benchmark's noise tag), if given


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]]
    bar_column: int | None = None  # index of a 0..1 column drawn as a bar in HTML


@dataclass
class ReportContent:
    title: str
    summary: list[tuple[str, str]]
    figures: dict[str, tuple[str, bytes]]  # name -> (caption, PNG)
    tables: list[Table]
    top: list[Card]
    bottom: list[Card]
    provenance: list[tuple[str, str]]
    notes: list[str] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)  # shown first, in red (e.g. failed gates)
    hidden_label: str | None = None  # what `Card.hidden` is, e.g. "noise (hidden, benchmark only)"


def gather(
    scores: Scores | str | Path,
    pool: Sequence[Sample] | str | Path,
    *,
    cutoff: str | int | None = None,
    top_n: int = 12,
    bottom_n: int = 12,
    strata_fields: Sequence[str] | None = None,
    image_root: str | Path | None = None,
    selection: Any = None,
    hidden_tags: Mapping[str, str] | None = None,
    hidden_label: str = "hidden label",
    alerts: Sequence[str] = (),
    force: bool = False,
) -> ReportContent:
    """Every number, table and figure of the report.

    The kept set is the top `cutoff`, or the ids of `selection` (a `Selection` or its
    `selection.json`) when given, so a coverage or consensus subset can be looked at too.
    `hidden_tags` (id -> label) are evaluation-only labels a scorer never saw, e.g. the
    benchmark's noise type: each gallery card shows its own, marked `hidden_label`, so a person
    sees what the ranking kept and dropped. `alerts` open the report in red.

    Scores made on another pool raise `ProvenanceMismatchError`, as `select` does, unless `force`
    (then the mismatch opens the report, as do utilities that rank nothing: all equal or zero,
    or from a proxy that looks untrained, `scores.ranking_alerts`).
    """
    scores_path = None if isinstance(scores, Scores) else str(scores)
    if not isinstance(scores, Scores):
        scores = read_scores(scores)
    samples, pool_fp = load_pool(pool, image_root=image_root)
    pool_path = pool if isinstance(pool, str | Path) else None
    mismatch = check_provenance(
        scores,
        samples,
        pool_fp,
        force=force,
        scores_path=scores_path,
        pool_path=pool_path,
        action="report",
    )
    by_id = {s.id: s for s in samples}
    df = scores.to_pandas()
    df["id"] = df["id"].astype(str)
    if "rank" not in df.columns:
        from ostselect.scores import rank_descending

        df["rank"] = rank_descending(df["utility"].to_numpy())
    if "toxic" not in df.columns:
        df["toxic"] = df["utility"].fillna(0) < 0
    df = df.sort_values("rank", kind="stable").reset_index(drop=True)
    u = df["utility"].to_numpy(dtype=np.float64)
    n = len(df)
    k = SelectionPolicy(top=cutoff).top_count(n) if cutoff is not None else None
    kept = np.zeros(n, dtype=bool)
    if k:
        kept[:k] = True
    cutoff_value = float(u[k - 1]) if k else None
    chosen = _selection_ids(selection)
    if chosen is not None:
        kept = df["id"].isin(chosen.ids).to_numpy()
        k, cutoff_value = None, None

    figures = {
        "histogram": (
            "Utility of every scored sample. Blue: kept at the cutoff; red: toxic tail "
            "(the step on the sample raised the anchor loss).",
            plots.utility_histogram(u, cutoff_value, kept),
        )
    }
    if "loss" in df.columns and df["loss"].notna().any():
        figures["scatter"] = (
            "Utility against the sample's own loss at the proxy.",
            plots.utility_vs_loss(u, df["loss"].to_numpy(dtype=np.float64), kept),
        )
    tables = _strata_tables(df, kept, by_id, strata_fields)
    if hidden_tags:  # evaluation-only labels: what the ranking kept of each
        values = [str(hidden_tags.get(i, "(unlabelled)")) for i in df["id"]]
        tables.append(_stratum_table(f"By {hidden_label}", hidden_label, values, df, kept))
    groups = [m.group(1) for c in df.columns if (m := _GROUP.match(c))]
    if groups:
        table, kept_mean, rest_mean = _group_table(df, kept, groups)
        tables.append(table)
        figures["groups"] = (
            "Mean per-anchor-group utility: which topics the kept subset helps.",
            plots.group_bars(groups, kept_mean, rest_mean),
        )
        if kept.any():
            ok = np.isfinite(u)  # the scored pool: status ok, finite utility
            if "status" in df.columns:
                ok &= (df["status"] == "ok").to_numpy()
            raw = df[[f"utility[{g}]" for g in groups]].to_numpy(dtype=np.float64)[ok]
            cover = coverage_by_group(groups, raw, kept[ok])
            tables.append(_coverage_table(cover))
            pool_n = max(sum(c.main_pool for c in cover.values()), 1)
            kept_n = max(sum(c.main_kept for c in cover.values()), 1)
            figures["coverage"] = (
                "Samples by main benefit (the anchor group their utility helps most), as a share "
                "of the pool and of the kept set. A kept bar far below its pool bar is a skill "
                "the subset under-covers.",
                plots.coverage_bars(
                    groups,
                    [100 * cover[g].main_pool / pool_n for g in groups],
                    [100 * cover[g].main_kept / kept_n for g in groups],
                ),
            )

    fields = list(strata_fields) if strata_fields is not None else _strata_fields(samples)
    top = [_card(row, by_id, fields) for row in df.head(top_n).itertuples(index=False)]
    tail = df.tail(min(bottom_n, max(0, n - top_n))).iloc[::-1]
    bottom = [_card(row, by_id, fields) for row in tail.itertuples(index=False)]
    for card in (*top, *bottom):
        card.hidden = (hidden_tags or {}).get(card.id)

    toxic = int(df["toxic"].sum())
    mode = ", ".join(sorted(set(df["mode"].astype(str)))) if "mode" in df.columns else "?"
    summary = [
        ("scored samples", f"{n:,}"),
        ("scorer", mode),
        ("median utility", f"{np.nanmedian(u):.3g}" if n else "-"),
        ("toxic (utility < 0)", f"{toxic:,} ({100 * toxic / max(n, 1):.1f}%)"),
    ]
    if k is not None:
        summary.append((f"kept at cutoff {cutoff}", f"{k:,}  (≥ {cutoff_value:.3g})" if k else "0"))
    if chosen is not None:
        summary.append((f"kept by selection ({chosen.policy})", f"{int(kept.sum()):,}"))
    not_ok = int((df["status"] != "ok").sum()) if "status" in df.columns else 0
    notes = []
    if not_ok:
        notes.append(f"{not_ok} samples have a scoring status other than 'ok'.")
    prov = [(key, _fmt(val, key)) for key, val in _provenance_rows(scores.provenance)]
    prov.append(("report: pool", str(pool_path) if pool_path is not None else "(in memory)"))
    if pool_fp:
        prov.append(("report: pool fingerprint", pool_fp))
    if scores_path:
        prov.append(("report: scores file", scores_path))
    return ReportContent(
        title="ostselect report",
        summary=summary,
        figures=figures,
        tables=tables,
        top=top,
        bottom=bottom,
        provenance=prov,
        notes=notes,
        alerts=[*alerts, *mismatch, *ranking_alerts(u, scores.provenance)],
        hidden_label=hidden_label if hidden_tags else None,
    )


def _provenance_rows(provenance: dict[str, Any]) -> list[tuple[str, Any]]:
    """Shared keys, then the method's `settings` one per row (`settings.keep`), not one blob."""
    rows = [(str(k), v) for k, v in sorted(provenance.items()) if k != "settings"]
    settings = provenance.get("settings") or {}
    return rows + [(f"settings.{k}", v) for k, v in sorted(settings.items())]


# What a missing provenance value means, instead of a bare `None` in the report.
_NONE_MEANS = {
    "pool": "(samples passed in memory, not read from a file)",
    "proxy": "(a model passed in memory, not loaded from a folder)",
}


def _fmt(value: Any, key: str = "") -> str:
    if value is None:
        return _NONE_MEANS.get(key, "(not recorded)")
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def _strata_fields(samples: Sequence[Sample]) -> list[str]:
    """Categorical `extra` fields worth a breakdown: present in most samples, 2..24 values."""
    if not samples:
        return []
    counts: dict[str, set[str]] = {}
    seen: dict[str, int] = {}
    for s in samples:
        for key, val in s.extra.items():
            if isinstance(val, str | int | bool) and not isinstance(val, float):
                counts.setdefault(key, set()).add(str(val))
                seen[key] = seen.get(key, 0) + 1
    return [
        key
        for key, vals in counts.items()
        if 2 <= len(vals) <= MAX_STRATA
        and seen[key] >= 0.5 * len(samples)
        and len(vals) < len(samples)
    ]


def _strata_tables(df, kept, by_id, strata_fields) -> list[Table]:
    samples = list(by_id.values())
    fields = list(strata_fields) if strata_fields is not None else _strata_fields(samples)
    tables = []
    for f in fields:
        values = [
            str(by_id[i].extra.get(f, "(missing)")) if i in by_id else "(not in pool)"
            for i in df["id"]
        ]
        tables.append(_stratum_table(f"By {f}", f, values, df, kept))
    return tables


def _stratum_table(title: str, column: str, values: list[str], df, kept) -> Table:
    """Samples, utility, toxic share and kept share per value of one label of each sample."""
    frame = pd.DataFrame(
        {"stratum": values, "utility": df["utility"], "toxic": df["toxic"], "kept": kept}
    )
    rows = []
    for name, g in frame.groupby("stratum", sort=True):
        rows.append(
            [
                name,
                len(g),
                round(float(g["utility"].mean()), 4),
                round(float(g["utility"].median()), 4),
                f"{100 * g['toxic'].mean():.1f}%",
                float(g["kept"].mean()),
            ]
        )
    return Table(
        title=title,
        columns=[column, "samples", "mean utility", "median", "toxic", "kept at cutoff"],
        rows=rows,
        bar_column=5,
    )


def _group_table(df, kept, groups) -> tuple[Table, list[float], list[float]]:
    rows, kept_mean, rest_mean = [], [], []
    for g in groups:
        col = df[f"utility[{g}]"].to_numpy(dtype=np.float64)
        km = float(np.nanmean(col[kept])) if kept.any() else float("nan")
        rm = float(np.nanmean(col[~kept])) if (~kept).any() else float("nan")
        kept_mean.append(0.0 if np.isnan(km) else km)
        rest_mean.append(0.0 if np.isnan(rm) else rm)
        rows.append(
            [
                g,
                round(float(np.nanmean(col)), 4),
                round(km, 4),
                round(rm, 4),
                float(np.mean(col < 0)),
            ]
        )
    table = Table(
        title="By anchor group",
        columns=["anchor group", "mean utility", "kept", "not kept", "samples that hurt it"],
        rows=rows,
        bar_column=4,
    )
    return table, kept_mean, rest_mean


@dataclass
class _Chosen:
    ids: list[str]
    policy: str


def _selection_ids(selection: Any) -> _Chosen | None:
    """Kept ids and policy name of a `Selection`, or of a `selection.json` path."""
    if selection is None:
        return None
    if isinstance(selection, str | Path):
        data = json.loads(Path(selection).read_text())
        if "kept_ids" not in data:
            raise ValueError(f"{selection} is not a selection.json (no kept_ids): run ost select")
        return _Chosen(
            [str(i) for i in data["kept_ids"]], data.get("policy", {}).get("policy", "topk")
        )
    return _Chosen(list(selection.kept_ids), selection.policy.policy)


def _coverage_table(cover: dict[str, GroupCoverage]) -> Table:
    rows = [
        [
            g,
            c.main_pool,
            c.main_kept,
            round(c.mass_pool, 4),
            round(c.mass_kept, 4),
            c.mass_share or 0.0,
        ]
        for g, c in cover.items()
    ]
    return Table(
        title="Coverage by anchor group",
        columns=[
            "anchor group",
            "main benefit: pool",
            "kept",
            "utility mass: pool",
            "kept",
            "mass kept",
        ],
        rows=rows,
        bar_column=5,
    )


def _card(row, by_id: dict[str, Sample], fields: list[str]) -> Card:
    s = by_id.get(row.id)
    if s is None:
        return Card(
            row.id, int(row.rank), float(row.utility), bool(row.toxic), "", "", [], 0, {}, False
        )
    thumbs = []
    for im in s.images[:2]:
        thumb = thumbnail(im)
        if thumb is not None:
            thumbs.append(thumb)
    question = s.user_text.replace(IMAGE_PLACEHOLDER, "").strip()
    tags = {f: str(s.extra[f]) for f in fields if f in s.extra}
    return Card(
        id=s.id,
        rank=int(row.rank),
        utility=float(row.utility),
        toxic=bool(row.toxic),
        question=question,
        answer=s.assistant_text.strip(),
        thumbnails=thumbs,
        more_images=max(0, len(s.images) - len(thumbs)),
        tags=tags,
        in_pool=True,
    )


def thumbnail(image, max_side: int = 360, min_side: int = 180) -> bytes | None:
    """A small JPEG of an `ImageRef` (None when it cannot be read: the card says so).

    Small images are upscaled to `min_side` so the gallery shows them at a readable size; tiny
    ones (e.g. 8x8 scans) with nearest-neighbour so their pixels stay crisp.
    """
    from PIL import Image

    try:
        im = image.open()
    except Exception:
        return None
    im.thumbnail((max_side, max_side))
    if max(im.size) < min_side:
        scale = min_side / max(im.size)
        resample = Image.Resampling.NEAREST if max(im.size) <= 32 else Image.Resampling.LANCZOS
        im = im.resize((round(im.width * scale), round(im.height * scale)), resample=resample)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=85)
    return buf.getvalue()
