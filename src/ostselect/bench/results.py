"""Benchmark results: seed aggregation, `results.json`, the Markdown table, and the plots.

Rows are (subset, protocol) pairs with accuracy mean and std over seeds. "Compute" is wall time in
seconds on the machine that ran it: selection (proxy warm-up + scoring, zero for Full-SFT, the
oracle and Random) plus target training. Pretraining is shared by every row and left out.
Rows of the OST variants stage carry `variant` (their name); they get their own table and stay out
of the main table and the accuracy-vs-fraction plot.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ostselect.bench.metrics import mean_std


def aggregate_rows(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (row, protocol): accuracy mean/std over seeds, per category, costs."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        groups[(r["row"], r["protocol"])].append(r)
    out = []
    for (row, protocol), rs in groups.items():
        acc_mean, acc_std = mean_std([r["accuracy"] for r in rs])
        cats = sorted({c for r in rs for c in r["per_category"]})
        train_s = float(np.mean([r["train_s"] for r in rs]))
        out.append(
            {
                "row": row,
                "protocol": protocol,
                "method": rs[0]["method"],
                "fraction": rs[0]["fraction"],
                "n_train": rs[0]["n_train"],
                "noisy_share": float(np.mean([r["noisy_share"] for r in rs])),
                "seeds": [r["seed"] for r in rs],
                "accuracy_mean": acc_mean,
                "accuracy_std": acc_std,
                "per_category": {
                    c: float(np.mean([r["per_category"].get(c, math.nan) for r in rs]))
                    for c in cats
                },
                "unanswered": float(np.mean([r["unanswered"] for r in rs])),
                "steps": rs[0]["steps"],
                "train_s": round(train_s, 2),
                "selection_s": rs[0]["selection_s"],
                "compute_s": round(train_s + rs[0]["selection_s"], 2),
                **({"variant": rs[0]["variant"]} if "variant" in rs[0] else {}),
            }
        )
    return out


def main_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of the main table (the OST variants have a table of their own)."""
    return [r for r in rows if "variant" not in r]


def _fmt_acc(mean: float, std: float, n_seeds: int) -> str:
    """Mean ± std in %; one seed has no spread to show, so say so instead of printing ± 0.0."""
    if n_seeds < 2:
        return f"{100 * mean:.1f} (1 seed)"
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


def _scorer_of(method: str) -> str | None:
    return None if method in ("full", "clean", "random") else method


def markdown_table(results: dict[str, Any]) -> str:
    """The main table (both protocols side by side) plus the scorer, ablation and variant tables."""
    rows = main_rows(results["rows"])
    by = {(r["row"], r["protocol"]): r for r in rows}
    names = list(dict.fromkeys(r["row"] for r in rows))
    scorers = results.get("scorers", {})
    cats = sorted({c for r in rows for c in r["per_category"]})
    lines = [
        "| method | kept | noisy share | acc A (%) | acc B (%) | "
        + " | ".join(f"B {c}" for c in cats)
        + " | train s A / B | selection s | noise AUROC | clean P@k |",
        "|---|---|---|---|---|" + "---|" * len(cats) + "---|---|---|---|",
    ]
    for name in names:
        a, b = by.get((name, "A")), by.get((name, "B"))
        ref = b or a
        assert ref is not None
        scorer = scorers.get(_scorer_of(ref["method"]) or "", {})
        pk = scorer.get("precision_at", {}).get(f"{round(ref['fraction'] * 100)}%")
        lines.append(
            f"| {name} | {ref['n_train']} | {100 * ref['noisy_share']:.0f}% | "
            + (_fmt_acc(a["accuracy_mean"], a["accuracy_std"], len(a["seeds"])) if a else "–")
            + " | "
            + (_fmt_acc(b["accuracy_mean"], b["accuracy_std"], len(b["seeds"])) if b else "–")
            + " | "
            + " | ".join(
                f"{100 * b['per_category'].get(c, math.nan):.0f}" if b else "–" for c in cats
            )
            + f" | {a['train_s'] if a else '–'} / {b['train_s'] if b else '–'}"
            + f" | {ref['selection_s']:.0f}"
            + (f" | {scorer['auroc']:.3f}" if "auroc" in scorer else " | –")
            + (f" | {pk:.2f} |" if pk is not None else " | – |")
        )
    out = ["## Accuracy on the clean test split (exact match, mean ± std over seeds)", ""]
    out += lines
    out += ["", "## Noise detection per scorer (hidden tags; clean = positive)", ""]
    kinds = sorted({k for s in scorers.values() for k in s.get("auroc_by_type", {})})
    out.append(
        "| scorer | scoring s | AUROC | "
        + " | ".join(kinds)
        + " | "
        + " | ".join(f"P@{k}" for k in _pk_keys(scorers))
        + " |"
    )
    out.append("|---|---|---|" + "---|" * (len(kinds) + len(_pk_keys(scorers))))
    for name, s in scorers.items():
        if "error" in s:
            out.append(f"| {name} | failed: {s['error'][:80]} |")
            continue
        out.append(
            f"| {name} | {s['scoring_s']:.1f} | {s['auroc']:.3f} | "
            + " | ".join(f"{s['auroc_by_type'].get(k, math.nan):.2f}" for k in kinds)
            + " | "
            + " | ".join(f"{s['precision_at'].get(k, math.nan):.2f}" for k in _pk_keys(scorers))
            + " |"
        )
    ablation = results.get("ablation") or []
    if ablation:
        out += ["", "## Warm-up ablation (proxy checkpoint -> OST-exact, Protocol B)", ""]
        out.append("| warm-up | noise AUROC | clean P@k | OST-k acc (%) |")
        out.append("|---|---|---|---|")
        for r in ablation:
            out.append(
                f"| {round(100 * r['warmup'])}% | {r['auroc']:.3f} | {r['precision']:.2f} | "
                f"{_fmt_acc(r['accuracy_mean'], r['accuracy_std'], len(r['seeds']))} "
                f"(k={round(100 * r['fraction'])}%) |"
            )
    out += variants_table(results.get("variants") or [])
    return "\n".join(out) + "\n"


def variants_table(variants: Sequence[dict[str, Any]]) -> list[str]:
    """The OST variants stage: one line per variant (OST-exact top k, Protocol B, every seed)."""
    if not variants:
        return []
    k = round(100 * variants[0]["fraction"])
    out = ["", f"## OST variants (OST-exact top {k}%, Protocol B)", ""]
    out.append(
        "| variant | scorer | scoring s | noise AUROC | clean P@k | noisy share "
        "| kept per category | acc B (%) |"
    )
    out.append("|---|---|---|---|---|---|---|---|")
    for v in variants:
        kept = ", ".join(f"{c} {n}" for c, n in v["kept_per_category"].items())
        out.append(
            f"| {v['name']} | {v['scorer']} (eta {v['eta']:g}, {v['proxy']}) "
            f"| {v['scoring_s']:.1f} | {v['auroc']:.3f} | {v['precision']:.2f} "
            f"| {100 * v['noisy_share']:.0f}% | {kept} "
            f"| {_fmt_acc(v['accuracy_mean'], v['accuracy_std'], len(v['seeds']))} |"
        )
    out += [
        "",
        "Clean P@k ranks the scorer's plain top k; noisy share and kept per category describe the "
        "subset the variant trained on (balanced if the variant balances).",
    ]
    return out


def _pk_keys(scorers: dict[str, Any]) -> list[str]:
    for s in scorers.values():
        if "precision_at" in s:
            return list(s["precision_at"])
    return []


# ---- plots -----------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy_vs_fraction(results: dict[str, Any], path: Path) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    every = sorted({r["method"] for r in main_rows(results["rows"])} - {"full", "clean"})
    palette = plt.get_cmap("tab20").colors
    color = {m: palette[i % len(palette)] for i, m in enumerate(every)}  # same in both panels
    for ax, protocol in zip(axes, ("A", "B"), strict=True):
        rows = [r for r in main_rows(results["rows"]) if r["protocol"] == protocol]
        refs = {r["method"]: r for r in rows if r["method"] in ("full", "clean")}
        if "full" in refs:
            ax.axhline(100 * refs["full"]["accuracy_mean"], color="k", ls="--", label="Full-SFT")
        if "clean" in refs:
            ax.axhline(100 * refs["clean"]["accuracy_mean"], color="g", ls=":", label="Clean-only")
        methods = sorted({r["method"] for r in rows} - {"full", "clean"})
        for m in methods:
            pts = sorted((r["fraction"], r) for r in rows if r["method"] == m)
            xs = [100 * f for f, _ in pts]
            ys = [100 * r["accuracy_mean"] for _, r in pts]
            es = [100 * r["accuracy_std"] for _, r in pts]
            style = "-o" if m.startswith("ost") else ("-s" if m == "random" else "--.")
            # hybrid usually picks exact's subset: a hollow, larger marker keeps both visible
            hollow = {"mfc": "none", "ms": 10} if m == "ost-hybrid" else {}
            ax.errorbar(xs, ys, yerr=es, fmt=style, capsize=3, label=m, color=color[m], **hollow)
        ax.set_title(f"Protocol {protocol}")
        ax.set_xlabel("data kept (%)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)")
    axes[1].legend(fontsize=7, loc="lower right", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_pareto(results: dict[str, Any], path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for protocol, marker in (("A", "o"), ("B", "^")):
        rows = [r for r in results["rows"] if r["protocol"] == protocol]
        xs = [r["compute_s"] for r in rows]
        ys = [100 * r["accuracy_mean"] for r in rows]
        ax.scatter(xs, ys, marker=marker, label=f"Protocol {protocol}")
        for r, x, y in zip(rows, xs, ys, strict=True):
            if r["method"] in ("full", "clean", "ost-exact", "ost-hybrid", "random"):
                ax.annotate(r["row"], (x, y), fontsize=6, xytext=(3, 2), textcoords="offset points")
    ax.set_xlabel("total compute: selection + target training (s, wall)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_utility_by_noise(utility_by_noise: dict[str, list[float]], path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    finite = [v for vs in utility_by_noise.values() for v in vs if math.isfinite(v)]
    if finite:
        lo, hi = float(np.percentile(finite, 0.5)), float(np.percentile(finite, 99.5))
        bins = np.linspace(lo, hi, 40)
        for kind, values in utility_by_noise.items():
            v = [x for x in values if math.isfinite(x)]
            ax.hist(v, bins=bins, histtype="step", lw=1.5, label=f"{kind} ({len(v)})")
    ax.set_xlabel("OST-exact utility (anchor loss drop)")
    ax.set_ylabel("pool samples")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_results(results: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write results.json, results.md and the plots into `out_dir`; return the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "markdown": out / "results.md"}
    paths["json"].write_text(json.dumps(results, indent=1, default=str) + "\n", encoding="utf-8")
    header = "# DigitMath benchmark results\n\n"
    if results.get("command"):
        header += f"Produced by `{results['command']}`.\n\n"
    timings = results.get("timings", {})
    if "total_s" in timings:
        header += f"Total wall time: {timings['total_s'] / 60:.1f} min.\n\n"
    paths["markdown"].write_text(header + markdown_table(results), encoding="utf-8")
    paths["accuracy_vs_fraction"] = plot_accuracy_vs_fraction(
        results, out / "accuracy_vs_fraction.png"
    )
    paths["pareto"] = plot_pareto(results, out / "pareto.png")
    if results.get("utility_by_noise"):
        paths["utility_by_noise"] = plot_utility_by_noise(
            results["utility_by_noise"], out / "utility_by_noise.png"
        )
    return paths
