"""Benchmark results: seed aggregation, `results.json`, the Markdown tables, the plots, and the
terminal summary the demo prints.

Rows are (subset, protocol) pairs with accuracy mean and std over seeds. "Compute" is wall time in
seconds on the machine that ran it: selection (proxy warm-up + scoring, zero for Full-SFT, the
oracle and Random) plus target training. Pretraining is shared by every row and left out.
Rows of the OST variants stage carry `variant` (their name); they get their own table and stay out
of the main table and the accuracy-vs-fraction plot.

A reader must see whether the run can be trusted before its numbers, so results.md opens with the
competence gates (`gates.py`), then the generated interpretation (`interpret.py`), then the tables
with paired differences and their bootstrap intervals (`stats.py`).
"""

from __future__ import annotations

import json
import math
import uuid
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ostselect.bench.gates import (
    competence_gates,
    failed_gates,
    fmt_gate_status,
    fmt_gate_threshold,
    fmt_gate_value,
    unmeasured_gates,
)
from ostselect.bench.interpret import interpretation
from ostselect.bench.metrics import mean_std
from ostselect.bench.stats import find_comparison, fmt_diff, row_comparisons

if TYPE_CHECKING:
    from rich.console import Console


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
                **({"policy": rs[0]["policy"]} if "policy" in rs[0] else {}),
                **_kept_per_category(rs),
            }
        )
    return out


def _kept_per_category(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """{"kept_per_category": ...} when the runs record it: the common counts, else the seed mean
    (a Random subset differs per seed)."""
    kept = [r["kept_per_category"] for r in runs if r.get("kept_per_category")]
    if not kept:
        return {}
    if all(k == kept[0] for k in kept):
        return {"kept_per_category": dict(kept[0])}
    cats = sorted({c for k in kept for c in k})
    return {
        "kept_per_category": {
            c: round(float(np.mean([k.get(c, 0) for k in kept])), 1) for c in cats
        }
    }


# ---- gates, paired comparisons, interpretation -------------------------------------------------
def analyse(results: dict[str, Any]) -> dict[str, Any]:
    """Store `gates`, `comparisons` and `interpretation` in `results` (recomputed from its runs
    and pretraining numbers) and return it."""
    results["gates"] = competence_gates(results)
    results["comparisons"] = row_comparisons(results)
    results["interpretation"] = interpretation(results)
    return results


def _analysis(results: dict[str, Any]) -> tuple[list, list, list[str]]:
    """(gates, comparisons, interpretation): the stored ones, else computed now (not stored)."""
    if all(k in results for k in ("gates", "comparisons", "interpretation")):
        return results["gates"], results["comparisons"], results["interpretation"]
    copy = analyse(dict(results))
    return copy["gates"], copy["comparisons"], copy["interpretation"]


def gates_markdown(gates: Sequence[dict[str, Any]]) -> list[str]:
    """The gates table; a failed gate shows **FAILED** and a line under the table says so."""
    if not gates:
        return []
    out = [
        "## Competence gates",
        "",
        "| gate | value | needs | status | what it checks |",
        "|---|---|---|---|---|",
    ]
    for g in gates:
        status = fmt_gate_status(g)
        if g["passed"] is False and g.get("required", True):
            status = f"**{status}**"
        out.append(
            f"| {g['name']} | {fmt_gate_value(g)} | {fmt_gate_threshold(g)} | {status} "
            f"| {g['description']} |"
        )
    out.append("")
    if failed_gates(gates):
        out.append(
            "**A competence gate FAILED: the comparisons below are not meaningful** (the models "
            "cannot do the task well enough, or the noise does not hurt, so rows differ by chance "
            "or by what the models cannot do rather than by their data)."
        )
    elif unmeasured_gates(gates):
        out.append(
            "Some gates could not be measured from these results: read the comparisons with care."
        )
    else:
        out.append("Every gate passed: the comparisons below measure the data.")
    return out


def protocols_markdown(results: dict[str, Any]) -> list[str]:
    """One sentence per protocol, with this run's epoch and step counts when known."""
    epochs = (results.get("config") or {}).get("epochs_a")
    steps = results.get("protocol_b_steps")
    steps = steps if isinstance(steps, int) else None
    return [
        "- **Protocol A** (fixed epochs): each row trains "
        + (f"{epochs} epochs" if epochs else "a fixed number of epochs")
        + " over its own subset, so a 20% subset also gets a fifth of Full-SFT's training steps.",
        "- **Protocol B** (fixed compute, the headline): every row trains "
        + (f"the same {steps} optimizer steps" if steps else "the same number of optimizer steps")
        + " as Full-SFT, repeating a smaller subset more often, so rows differ only by their data.",
    ]


def _delta_cell(comparisons: Sequence[dict[str, Any]], row: str, kind: str) -> str:
    c = find_comparison(comparisons, row, "B", kind)
    if c is None:
        return "–"
    text = fmt_diff(c)
    return f"**{text}**" if c["excludes_zero"] else text


def _kept_cell(row: dict[str, Any] | None) -> str:
    kept = (row or {}).get("kept_per_category")
    if not kept:
        return "–"
    return ", ".join(f"{c} {n:g}" for c, n in kept.items())


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
    """The main table (both protocols side by side, paired differences under Protocol B) plus the
    scorer, ablation and variant tables."""
    rows = main_rows(results["rows"])
    comparisons = results.get("comparisons")
    if comparisons is None:
        comparisons = row_comparisons(results)
    by = {(r["row"], r["protocol"]): r for r in rows}
    names = list(dict.fromkeys(r["row"] for r in rows))
    scorers = results.get("scorers", {})
    cats = sorted({c for r in rows for c in r["per_category"]})
    with_kept = any(r.get("kept_per_category") for r in rows)
    lines = [
        "| method | kept | noisy share | acc A (%) | acc B (%) "
        "| Δ vs Random-k B | Δ vs Full-SFT B | "
        + " | ".join(f"B {c}" for c in cats)
        + (" | kept per category" if with_kept else "")
        + " | train s A / B | selection s | noise AUROC | clean P@k |",
        "|---|---|---|---|---|---|---|"
        + "---|" * len(cats)
        + ("---|" if with_kept else "")
        + "---|---|---|---|",
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
            + f" | {_delta_cell(comparisons, name, 'random')}"
            + f" | {_delta_cell(comparisons, name, 'full')} | "
            + " | ".join(
                f"{100 * b['per_category'].get(c, math.nan):.0f}" if b else "–" for c in cats
            )
            + (f" | {_kept_cell(b or a)}" if with_kept else "")
            + f" | {a['train_s'] if a else '–'} / {b['train_s'] if b else '–'}"
            + f" | {ref['selection_s']:.0f}"
            + (f" | {scorer['auroc']:.3f}" if "auroc" in scorer else " | –")
            + (f" | {pk:.2f} |" if pk is not None else " | – |")
        )
    out = ["## Accuracy on the clean test split (exact match, mean ± std over seeds)", ""]
    out += protocols_markdown(results)
    out += [
        "",
        "Δ columns: the paired difference to Random at the same k and to Full-SFT under "
        "Protocol B, in points, with its 95% bootstrap interval over seeds and test items; "
        "**bold** when the interval excludes 0 (only then does a row beat or trail the other). "
        "B per category: Protocol B accuracy (%) on each test category.",
        "",
    ]
    out += lines
    if scorers:
        out += noise_table(scorers)
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
    out += variants_table(results.get("variants") or [], comparisons)
    return "\n".join(out) + "\n"


def noise_table(scorers: dict[str, Any]) -> list[str]:
    """Noise detection of each scorer against the hidden tags."""
    out = ["", "## Noise detection per scorer (hidden tags; clean = positive)", ""]
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
    return out


def variants_table(
    variants: Sequence[dict[str, Any]], comparisons: Sequence[dict[str, Any]] = ()
) -> list[str]:
    """The OST variants stage: one line per variant (OST-exact top k, Protocol B, every seed)."""
    if not variants:
        return []
    k = round(100 * variants[0]["fraction"])
    out = ["", f"## OST variants (OST-exact top {k}%, Protocol B)", ""]
    out.append(
        "| variant | scorer | scoring s | noise AUROC | clean P@k | noisy share "
        "| kept per category | acc B (%) | Δ vs Random-k | Δ vs Full-SFT | Δ vs plain top-k |"
    )
    out.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for v in variants:
        kept = ", ".join(f"{c} {n}" for c, n in v["kept_per_category"].items())
        row = v.get("row", "")
        out.append(
            f"| {v['name']} | {v['scorer']} ({_step(v)}, {v['proxy']}) "
            f"| {v['scoring_s']:.1f} | {v['auroc']:.3f} | {v['precision']:.2f} "
            f"| {100 * v['noisy_share']:.0f}% | {kept} "
            f"| {_fmt_acc(v['accuracy_mean'], v['accuracy_std'], len(v['seeds']))} "
            f"| {_delta_cell(comparisons, row, 'random')} "
            f"| {_delta_cell(comparisons, row, 'full')} "
            f"| {_delta_cell(comparisons, row, 'topk')} |"
        )
    out += [
        "",
        "Clean P@k ranks the scorer's plain top k; noisy share and kept per category describe the "
        "subset the variant trained on (balanced if the variant balances).",
    ]
    return out


def _step(variant: dict[str, Any]) -> str:
    """How a variant stepped: "eta 0.005" (SGD), "adamw, warm-up lr" (the warm-up's next lr)."""
    optimizer = variant.get("optimizer") or "sgd"
    eta = variant.get("eta")
    size = "warm-up lr" if eta is None else f"eta {eta:g}"
    return size if optimizer == "sgd" else f"{optimizer}, {size}"


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
        rows = [
            r
            for r in main_rows(results["rows"])
            if r["protocol"] == protocol and r.get("policy", "topk") == "topk"
        ]  # policy rows share their scorer's method; the tables show them
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


def _dumps(results: dict[str, Any]) -> str:
    """results.json, indented, but with each flat list of numbers on one line: the per-item
    `correct` vectors (thousands of 0/1 per run) would otherwise take a line per item."""
    token = f"@@flat-{uuid.uuid4().hex}-"
    flat: list[str] = []

    def pack(x: Any) -> Any:
        if isinstance(x, np.ndarray | np.generic):
            x = x.tolist()  # numpy scalars and arrays as plain numbers and lists
        if isinstance(x, dict):
            return {k: pack(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            if len(x) > 8 and all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in x
            ):
                flat.append(json.dumps(list(x), separators=(",", ":")))
                return f"{token}{len(flat) - 1}@@"
            return [pack(v) for v in x]
        return x

    text = json.dumps(pack(results), indent=1, default=str)
    for i, packed in enumerate(flat):
        text = text.replace(f'"{token}{i}@@"', packed, 1)
    return text + "\n"


def results_markdown(results: dict[str, Any]) -> str:
    """The whole results.md: provenance, gates, interpretation, then the tables."""
    gates, _, sentences = _analysis(results)
    out = ["# DigitMath benchmark results", ""]
    if results.get("command"):
        out += [f"Produced by `{results['command']}`.", ""]
    timings = results.get("timings", {})
    if "total_s" in timings:
        out += [f"Total wall time: {timings['total_s'] / 60:.1f} min.", ""]
    out += gates_markdown(gates)
    if sentences:
        out += ["", "## Interpretation (generated from the numbers below)", ""]
        out += [f"- {s}" for s in sentences]
    out.append("")
    return "\n".join(out) + "\n" + markdown_table(results)


def write_results(results: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Add gates, paired comparisons and the interpretation to `results` (`analyse`), then write
    results.json, results.md and the plots into `out_dir`; return the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    analyse(results)
    paths = {"json": out / "results.json", "markdown": out / "results.md"}
    paths["json"].write_text(_dumps(results), encoding="utf-8")
    paths["markdown"].write_text(results_markdown(results), encoding="utf-8")
    paths["accuracy_vs_fraction"] = plot_accuracy_vs_fraction(
        results, out / "accuracy_vs_fraction.png"
    )
    paths["pareto"] = plot_pareto(results, out / "pareto.png")
    if results.get("utility_by_noise"):
        paths["utility_by_noise"] = plot_utility_by_noise(
            results["utility_by_noise"], out / "utility_by_noise.png"
        )
    return paths


# ---- terminal ----------------------------------------------------------------------------------
def render_console(results: dict[str, Any], console: Console) -> None:
    """Gates, the Protocol B table with paired differences, and the interpretation, for `ost demo`.

    Uses the stored `gates`/`comparisons`/`interpretation` (see `write_results`), else computes
    them. Every cell is plain text (no Rich markup), so brackets in intervals print as they are.
    """
    from rich.table import Table
    from rich.text import Text

    gates, comparisons, sentences = _analysis(results)
    if gates:
        table = Table(title="Competence gates", title_justify="left")
        for col in ("gate", "value", "needs", "status"):
            table.add_column(col, justify="left" if col in ("gate", "status") else "right")
        colour = {True: "green", False: "bold red", None: "yellow"}
        for g in gates:
            style = colour[g["passed"]] if g.get("required", True) else "dim"
            table.add_row(
                g["name"],
                fmt_gate_value(g),
                fmt_gate_threshold(g),
                Text(fmt_gate_status(g), style=style),
            )
        console.print(table)
        if failed_gates(gates):
            console.print(
                Text(
                    "A competence gate FAILED: the comparisons below are not meaningful.",
                    style="bold red",
                )
            )
        elif unmeasured_gates(gates):
            console.print(
                Text("Some gates could not be measured: read the comparisons with care.", "yellow")
            )
    rows = results.get("rows") or aggregate_rows(results.get("runs") or [])
    rows_b = [r for r in rows if r["protocol"] == "B"]
    if rows_b:
        table = Table(
            title="Protocol B: accuracy and paired Δ in points [95% interval], "
            "* = interval excludes 0",
            title_justify="left",
        )
        for col in ("row", "kept", "noisy", "acc %", "Δ vs Random-k", "Δ vs Full-SFT"):
            table.add_column(col, justify="left" if col == "row" else "right")
        for r in rows_b:
            cells = []
            for kind in ("random", "full"):
                c = find_comparison(comparisons, r["row"], "B", kind)
                if c is None:
                    cells.append(Text("–"))
                elif c["excludes_zero"]:
                    cells.append(Text(f"{fmt_diff(c)} *", style="bold"))
                else:
                    cells.append(Text(f"{fmt_diff(c)}  "))
            table.add_row(
                r["row"],
                str(r["n_train"]),
                f"{100 * r['noisy_share']:.0f}%",
                _fmt_acc(r["accuracy_mean"], r["accuracy_std"], len(r["seeds"])),
                *cells,
            )
        console.print(table)
    if sentences:
        console.print(Text("What the numbers say", style="bold"))
        for s in sentences:
            console.print(Text(f"• {s}"))
