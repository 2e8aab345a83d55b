"""results.json / results.md / the demo's terminal summary: gates first, then the interpretation,
then the tables with paired differences; older results without per-item answers still render."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from bench_results_kit import BASE_ROWS, GOOD_PRETRAIN, N_ITEMS, make_results
from ostselect.bench.results import (
    aggregate_rows,
    analyse,
    markdown_table,
    render_console,
    results_markdown,
    write_results,
)

ROWS = {
    **BASE_ROWS,
    "OST-exact 20%": ("ost-exact", 0.2, [150, 151, 149]),  # +10 vs Random: significant
    "loss 20%": ("loss", 0.2, [131, 131, 130]),  # +0.3: not significant
}
KEPT = {"OST-exact 20%": {"kept_per_category": {"add": 120, "read": 80}, "policy": "topk"}}


def _results(**kw):
    results = make_results(ROWS, protocols=("A", "B"), extra=KEPT, **kw)
    results["rows"] = aggregate_rows(results["runs"])
    results["config"] = {"epochs_a": 3}
    results["protocol_b_steps"] = 189
    return results


def _line(text: str, start: str) -> str:
    return next(x for x in text.splitlines() if x.startswith(start))


def test_aggregate_rows_carries_policy_and_kept_per_category():
    runs = make_results(ROWS, extra=KEPT)["runs"]
    runs += make_results(
        {"Random 50%": ("random", 0.5, [140, 140])},
        extra={"Random 50%": {"kept_per_category": {"add": 250, "read": 250}}},
    )["runs"]
    runs[-1]["kept_per_category"] = {"add": 260, "read": 240}  # Random's subset differs by seed
    rows = {r["row"]: r for r in aggregate_rows(runs)}
    assert rows["OST-exact 20%"]["policy"] == "topk"
    assert rows["OST-exact 20%"]["kept_per_category"] == {"add": 120, "read": 80}
    assert rows["Random 50%"]["kept_per_category"] == {"add": 255.0, "read": 245.0}
    assert "kept_per_category" not in rows["Full-SFT"] and "policy" not in rows["Full-SFT"]


def test_markdown_starts_with_gates_then_interpretation_then_tables():
    results = analyse(_results())
    text = results_markdown(results)
    gates_at = text.index("## Competence gates")
    interp_at = text.index("## Interpretation")
    table_at = text.index("## Accuracy on the clean test split")
    assert gates_at < interp_at < table_at
    assert "Every gate passed" in text and "FAILED" not in text
    assert "| digit reader (target) | 99.0% | ≥ 95% | passed |" in text
    assert "- All competence gates hold" in text
    assert "**Protocol A** (fixed epochs): each row trains 3 epochs" in text
    assert "**Protocol B** (fixed compute, the headline): every row trains the same 189" in text

    header = _line(text, "| method |")
    assert "| Δ vs Random-k B | Δ vs Full-SFT B |" in header
    assert "| B add | B read |" in header and "kept per category" in header
    ost = _line(text, "| OST-exact 20% |")
    cells = [c.strip() for c in ost.split("|")]
    assert cells[6].startswith("**+10.0 [+") and cells[6].endswith("]**")  # significant: bold
    assert cells[7].startswith("**+15.0 [")
    assert "add 120, read 80" in ost
    loss = _line(text, "| loss 20% |")
    delta = [c.strip() for c in loss.split("|")][6]
    assert delta.startswith("+0.3 [") and "**" not in delta  # not significant: plain
    full = [c.strip() for c in _line(text, "| Full-SFT |").split("|")]
    assert full[6] == full[7] == "–"  # no Random at 100%, not against itself
    assert len(ost.split("|")) == len(header.split("|"))


def test_a_failed_gate_is_marked_and_says_the_comparisons_are_not_meaningful():
    pretrain = {**GOOD_PRETRAIN, "target": {**GOOD_PRETRAIN["target"], "caption_accuracy": 0.54}}
    text = results_markdown(analyse(_results(pretrain=pretrain)))
    assert "| caption reading (target) | 54.0% | ≥ 90% | **FAILED** |" in text
    assert "**A competence gate FAILED: the comparisons below are not meaningful**" in text
    assert "- The comparisons below are not meaningful: a competence gate failed" in text
    assert text.index("FAILED") < text.index("## Interpretation")


def test_old_results_without_per_item_answers_render_without_intervals():
    results = _results(with_correct=False)
    text = results_markdown(results)  # not analysed: computed on the fly, not stored
    assert "gates" not in results and "comparisons" not in results
    cells = [c.strip() for c in _line(text, "| OST-exact 20% |").split("|")]
    assert cells[6] == cells[7] == "–"
    assert "not measured" in text and "Some gates could not be measured" in text
    assert "no per-item test results" in text
    # the table alone, as older callers use it, still works with nothing but rows
    assert "| OST-exact 20% |" in markdown_table({"rows": results["rows"]})


def test_variants_table_shows_paired_differences():
    rows = {**ROWS, "OST-exact 20% (balanced)": ("ost-exact-balanced-category", 0.2, [151] * 3)}
    extra = {**KEPT, "OST-exact 20% (balanced)": {"variant": "balanced"}}
    results = make_results(rows, extra=extra)
    results["rows"] = aggregate_rows(results["runs"])
    results["variants"] = [
        {
            "name": "balanced",
            "row": "OST-exact 20% (balanced)",
            "scorer": "ost-exact",
            "eta": 0.05,
            "proxy": "proxy",
            "scoring_s": 1.0,
            "auroc": 0.7,
            "precision": 0.8,
            "noisy_share": 0.2,
            "kept_per_category": {"add": 100, "read": 100},
            "accuracy_mean": 0.755,
            "accuracy_std": 0.0,
            "seeds": [0, 1, 2],
            "fraction": 0.2,
        }
    ]
    text = results_markdown(analyse(results))
    assert "| Δ vs Random-k | Δ vs Full-SFT | Δ vs plain top-k |" in text
    line = _line(text, "| balanced |")
    cells = [c.strip() for c in line.split("|")]
    assert cells[-4].startswith("**+10.5 [") and cells[-2].startswith("+0.5 [")
    assert "| OST-exact 20% (balanced) |" not in text  # variants stay out of the main table


def test_write_results_stores_the_analysis_and_keeps_item_vectors_on_one_line(tmp_path):
    results = _results()
    results["command"] = "ost bench run --preset mini"
    results["timings"] = {"total_s": 90.0}
    paths = write_results(results, tmp_path)
    saved = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert saved["gates"] == results["gates"] and saved["gates"][0]["passed"] is True
    kinds = {(c["row"], c["protocol"], c["kind"]) for c in saved["comparisons"]}
    assert ("OST-exact 20%", "B", "random") in kinds and ("OST-exact 20%", "A", "full") in kinds
    assert saved["interpretation"] == results["interpretation"]
    assert saved["runs"][0]["correct"] == results["runs"][0]["correct"]
    assert len(saved["runs"][0]["correct"]) == N_ITEMS
    raw = paths["json"].read_text(encoding="utf-8")
    assert '"correct": [1,1,1,' in raw  # one line per vector, not one per item
    assert raw.count("\n") < 2000
    md = paths["markdown"].read_text(encoding="utf-8")
    assert md.startswith("# DigitMath benchmark results\n\nProduced by `ost bench run --preset")
    assert "Total wall time: 1.5 min." in md
    assert paths["accuracy_vs_fraction"].exists() and paths["pareto"].exists()


@pytest.mark.parametrize("failed", [False, True])
def test_render_console_prints_gates_table_and_interpretation(failed):
    target = {**GOOD_PRETRAIN["target"], "reader_cell_accuracy": 0.5 if failed else 0.99}
    pretrain = {**GOOD_PRETRAIN, "target": target}
    results = analyse(_results(pretrain=pretrain))
    console = Console(record=True, width=140, color_system=None)
    render_console(results, console)
    out = console.export_text()
    assert "Competence gates" in out and "digit reader (target)" in out
    assert "Δ vs Random-k" in out and "Δ vs Full-SFT" in out
    ost = next(x for x in out.splitlines() if "OST-exact 20%" in x and "[" in x)
    assert "+10.0 [+" in ost and "+15.0 [+" in ost
    assert "What the numbers say" in out
    assert ("FAILED" in out) is failed
    assert ("the comparisons below are not meaningful" in out) is failed


def test_json_turns_numpy_values_into_plain_numbers(tmp_path):
    import numpy as np

    results = _results()
    results["runs"][0]["correct"] = np.array(results["runs"][0]["correct"], dtype=np.int8)
    results["runs"][0]["accuracy"] = np.float64(results["runs"][0]["accuracy"])
    paths = write_results(results, tmp_path)
    saved = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert saved["runs"][0]["correct"][:3] == [1, 1, 1]
    assert isinstance(saved["runs"][0]["accuracy"], float)
