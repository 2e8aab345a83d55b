"""Plain-language reading of a benchmark run, generated from its numbers.

A results table invites over-reading (a 1-point lead inside a 3-point seed spread, a "win" of a
model that cannot read). These sentences say what the numbers support and no more: gates first,
then the effect of the noise, then the best selection per budget against Random and Full-SFT,
saying "beats" only when the paired 95 % interval excludes zero, then what a selection policy
changed against plain top-k for the same scorer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ostselect.bench.gates import (
    competence_gates,
    failed_gates,
    fmt_gate_threshold,
    fmt_gate_value,
    unmeasured_gates,
)
from ostselect.bench.stats import (
    CLEAN_ROW,
    FULL_ROW,
    REFERENCE_METHODS,
    find_comparison,
    fmt_points,
    policy_of,
    row_comparisons,
    scorer_of,
)

PROTOCOL = "B"  # the headline protocol: every row trains the same number of steps


def _row_summaries(results: dict[str, Any], protocol: str) -> dict[str, dict[str, Any]]:
    """row -> its first run (method, fraction, policy...) plus mean accuracy and per category."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for r in results.get("runs") or []:
        if r["protocol"] == protocol:
            runs.setdefault(r["row"], []).append(r)
    out = {}
    for row, rs in runs.items():
        cats = sorted({c for r in rs for c in r.get("per_category", {})})
        out[row] = {
            **rs[0],
            "mean": float(np.mean([r["accuracy"] for r in rs])),
            "per_category_mean": {
                c: float(np.mean([r["per_category"][c] for r in rs if c in r["per_category"]]))
                for c in cats
            },
        }
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _interval(c: dict[str, Any]) -> str:
    return f"{round(100 * c['level'])}% interval [{fmt_points(c['lo'])}, {fmt_points(c['hi'])}]"


def verdict(c: dict[str, Any] | None, other: str, mean_diff: float | None = None) -> str:
    """'beats X by ...' / 'falls ... behind X' only when the interval excludes 0; else 'no
    significant difference'. Without a comparison, the plain difference of the means, which
    claims nothing (the caller says once that there are no intervals)."""
    if c is None:
        if mean_diff is None:
            return f"cannot be compared with {other}"
        if abs(mean_diff) < 0.0005:
            return f"matches {other}"
        side = "above" if mean_diff > 0 else "below"
        return f"is {fmt_points(abs(mean_diff))[1:]} points {side} {other}"
    if c["excludes_zero"] and c["diff"] > 0:
        return f"beats {other} by {fmt_points(c['diff'])} points ({_interval(c)})"
    if c["excludes_zero"] and c["diff"] < 0:
        return f"falls {fmt_points(-c['diff'])[1:]} points behind {other} ({_interval(c)})"
    return (
        f"shows no significant difference from {other} "
        f"({fmt_points(c['diff'])} points, {_interval(c)})"
    )


def _gate_sentence(gates: Sequence[dict[str, Any]]) -> str:
    if not gates:
        return "No competence gates were recorded; read the comparisons below with care."
    failed = failed_gates(gates)
    if failed:
        what = "; ".join(
            f"{g['name']} {fmt_gate_value(g)} (needs {fmt_gate_threshold(g)})" for g in failed
        )
        return (
            "The comparisons below are not meaningful: "
            f"{'a competence gate' if len(failed) == 1 else f'{len(failed)} competence gates'} "
            f"failed ({what}), so rows may differ by chance or by what the models cannot do "
            "rather than by their data."
        )
    missing = unmeasured_gates(gates)
    if missing:
        names = ", ".join(g["name"] for g in missing)
        return (
            f"Not every competence gate could be checked (not measured: {names}); "
            "read the comparisons below with care."
        )
    return (
        "All competence gates hold (the models read the digits, do the arithmetic, learn from "
        "clean data, and the noisy pool measurably hurts), so the comparisons below measure "
        "the data."
    )


def _noise_sentence(
    rows: dict[str, dict[str, Any]], comparisons: Sequence[dict[str, Any]]
) -> str | None:
    clean, full = rows.get(CLEAN_ROW), rows.get(FULL_ROW)
    if clean is None or full is None:
        return None
    c = find_comparison(comparisons, CLEAN_ROW, PROTOCOL, "full")
    head = (
        f"Training on the clean part of the pool only reaches {_pct(clean['mean'])} against "
        f"{_pct(full['mean'])} for Full-SFT (Protocol {PROTOCOL})"
    )
    if c is None:
        return f"{head}: a difference of {fmt_points(clean['mean'] - full['mean'])} points."
    if c["excludes_zero"] and c["diff"] > 0:
        return (
            f"{head}: the noisy samples cost Full-SFT {fmt_points(c['diff'])[1:]} points "
            f"({_interval(c)}), a significant negative transfer that selection can recover."
        )
    if c["excludes_zero"]:
        return (
            f"{head}: Full-SFT is {fmt_points(-c['diff'])[1:]} points better ({_interval(c)}); "
            "the extra data helps more than its noise hurts, so dropping samples has little to win."
        )
    return (
        f"{head}: no significant difference ({fmt_points(c['diff'])} points, {_interval(c)}); "
        "the noise does not measurably hurt, so selection has little to win."
    )


def _is_selection(row: dict[str, Any]) -> bool:
    return row["method"] not in REFERENCE_METHODS


def _budget_sentences(
    rows: dict[str, dict[str, Any]], comparisons: Sequence[dict[str, Any]]
) -> list[str]:
    out = []
    randoms = {round(r["fraction"], 6): r for r in rows.values() if r["method"] == "random"}
    full = rows.get(FULL_ROW)
    fractions = sorted({round(r["fraction"], 6) for r in rows.values() if _is_selection(r)})
    for k in fractions:
        cands = [r for r in rows.values() if _is_selection(r) and round(r["fraction"], 6) == k]
        best = max(cands, key=lambda r: r["mean"])  # first listed wins a tie
        out.append(_against_references(best, randoms.get(k), full, comparisons, k, "best"))
        rnd = randoms.get(k)
        if rnd is not None:
            measured = [find_comparison(comparisons, r["row"], PROTOCOL, "random") for r in cands]
            if all(c is not None for c in measured):
                wins = sum(c["excludes_zero"] and c["diff"] > 0 for c in measured)  # type: ignore[index]
                out.append(
                    f"{wins} of {len(cands)} selection rows at {round(100 * k)}% beat "
                    f"{rnd['row']} significantly."
                )
        ost = [r for r in cands if str(r["method"]).startswith("ost")]
        if ost and not str(best["method"]).startswith("ost"):
            best_ost = max(ost, key=lambda r: r["mean"])
            out.append(_against_references(best_ost, rnd, full, comparisons, k, "best OST"))
    return out


def _against_references(
    row: dict[str, Any],
    rnd: dict[str, Any] | None,
    full: dict[str, Any] | None,
    comparisons: Sequence[dict[str, Any]],
    k: float,
    which: str,
) -> str:
    parts = []
    if rnd is not None:
        c = find_comparison(comparisons, row["row"], PROTOCOL, "random")
        parts.append(verdict(c, f"{rnd['row']} ({_pct(rnd['mean'])})", row["mean"] - rnd["mean"]))
    if full is not None:
        c = find_comparison(comparisons, row["row"], PROTOCOL, "full")
        parts.append(verdict(c, f"{FULL_ROW} ({_pct(full['mean'])})", row["mean"] - full["mean"]))
    head = (
        f"At {round(100 * k)}% of the pool the {which} selection row is {row['row']} "
        f"at {_pct(row['mean'])}"
    )
    if not parts:
        return head + "."
    return f"{head}: it " + " and ".join(parts) + "."


def _kept_change(plain: dict[str, Any], policy: dict[str, Any]) -> str:
    before, after = plain.get("kept_per_category") or {}, policy.get("kept_per_category") or {}
    if not before or not after:
        return ""
    cats = sorted(
        set(before) | set(after), key=lambda c: (-abs(after.get(c, 0) - before.get(c, 0)), c)
    )
    moved = [c for c in cats if after.get(c, 0) != before.get(c, 0)][:3]
    if not moved:
        return ""
    return "; kept per category " + ", ".join(
        f"{c} {before.get(c, 0)} → {after.get(c, 0)}" for c in moved
    )


def _category_change(plain: dict[str, Any], policy: dict[str, Any]) -> str:
    a, b = plain["per_category_mean"], policy["per_category_mean"]
    common = [c for c in a if c in b]
    if not common:
        return ""
    c = max(common, key=lambda c: abs(b[c] - a[c]))
    return f"; the largest per-category change is {c} {fmt_points(b[c] - a[c])} points"


def _policy_sentences(
    rows: dict[str, dict[str, Any]], comparisons: Sequence[dict[str, Any]]
) -> list[str]:
    plain_rows: dict[tuple[str, float], dict[str, Any]] = {}
    for r in rows.values():  # a main-table row wins over a variant with the same scorer
        if _is_selection(r) and policy_of(r) == "topk":
            key = (scorer_of(r), round(r["fraction"], 6))
            if key not in plain_rows or ("variant" in plain_rows[key] and "variant" not in r):
                plain_rows[key] = r
    out = []
    for r in rows.values():
        if not _is_selection(r) or policy_of(r) == "topk":
            continue
        plain = plain_rows.get((scorer_of(r), round(r["fraction"], 6)))
        if plain is None:
            continue
        c = find_comparison(comparisons, r["row"], PROTOCOL, "topk")
        if c is None:
            how = f"{fmt_points(r['mean'] - plain['mean'])} points"
        elif c["excludes_zero"]:
            how = f"{fmt_points(c['diff'])} points, significant ({_interval(c)})"
        else:
            how = f"{fmt_points(c['diff'])} points, no significant difference ({_interval(c)})"
        out.append(
            f"The {policy_of(r)} policy moved {scorer_of(r)} at {round(100 * r['fraction'])}% "
            f"from {_pct(plain['mean'])} (plain top-k, {plain['row']}) to {_pct(r['mean'])}: "
            f"{how}{_kept_change(plain, r)}{_category_change(plain, r)}."
        )
    return out


def interpretation(results: dict[str, Any]) -> list[str]:
    """Short sentences on what the results show, from `results` alone (gates, comparisons and
    runs; `gates`/`comparisons` are computed when the dict does not carry them yet)."""
    gates = results.get("gates")
    if gates is None:
        gates = competence_gates(results)
    comparisons = results.get("comparisons")
    if comparisons is None:
        comparisons = row_comparisons(results)
    out = [_gate_sentence(gates)]
    rows = _row_summaries(results, PROTOCOL)
    if not rows:
        out.append(f"There are no Protocol {PROTOCOL} rows to compare.")
        return out
    if not any(c["protocol"] == PROTOCOL for c in comparisons):
        out.append(
            "These results carry no per-item test results, so the differences below have no "
            "intervals and support no claim that one row beats another."
        )
    noise = _noise_sentence(rows, comparisons)
    if noise:
        out.append(noise)
    out += _budget_sentences(rows, comparisons)
    out += _policy_sentences(rows, comparisons)
    return out
