"""The demo's plain-language interpretation on hand-made results."""

from __future__ import annotations

from bench_results_kit import BASE_ROWS, GOOD_PRETRAIN, make_results
from ostselect.bench.interpret import interpretation, verdict


def _sentence(sentences: list[str], start: str) -> str:
    found = [s for s in sentences if s.startswith(start)]
    assert len(found) == 1, (start, sentences)
    return found[0]


def test_a_significant_win_is_called_a_win():
    rows = {
        **BASE_ROWS,
        "OST-exact 20%": ("ost-exact", 0.2, [150, 151, 149]),  # +10 vs Random, +15 vs Full
        "loss 20%": ("loss", 0.2, [131, 131, 130]),
    }
    out = interpretation(make_results(rows))
    assert out[0].startswith("All competence gates hold")
    noise = _sentence(out, "Training on the clean part")
    assert "75.0% against 60.0% for Full-SFT" in noise
    assert "cost Full-SFT 15.0 points (95% interval [" in noise
    assert "negative transfer" in noise
    best = _sentence(out, "At 20% of the pool the best selection row is OST-exact 20% at 75.0%")
    assert "beats Random 20% (65.0%) by +10.0 points (95% interval [+" in best
    assert "beats Full-SFT (60.0%) by +15.0 points" in best
    assert _sentence(out, "1 of 2 selection rows at 20% beat Random 20% significantly")
    assert not any("best OST" in s for s in out)  # the best row is OST already


def test_a_non_significant_lead_is_not_a_win():
    rows = {
        **BASE_ROWS,
        "OST-exact 20%": ("ost-exact", 0.2, [131, 131, 129]),  # one item on two seeds
        "judge 20%": ("judge", 0.2, [132, 132, 130]),
    }
    out = interpretation(make_results(rows))
    best = _sentence(out, "At 20% of the pool the best selection row is judge 20%")
    assert "shows no significant difference from Random 20% (65.0%) (+0.7 points" in best
    assert "beats Random" not in best
    assert "beats Full-SFT (60.0%)" in best  # ~5 points on every seed: significant
    ost = _sentence(out, "At 20% of the pool the best OST selection row is OST-exact 20%")
    assert "no significant difference from Random 20%" in ost
    assert _sentence(out, "0 of 2 selection rows at 20% beat Random 20% significantly")
    assert not any("beats Random" in s for s in out)


def test_a_significant_loss_is_reported_as_such():
    rows = {**BASE_ROWS, "el2n 20%": ("el2n", 0.2, [100, 101, 99])}
    best = _sentence(interpretation(make_results(rows)), "At 20% of the pool the best")
    assert "falls 15.0 points behind Random 20%" in best
    assert "falls 10.0 points behind Full-SFT" in best


def test_a_failed_gate_comes_first_and_says_comparisons_are_not_meaningful():
    pretrain = {**GOOD_PRETRAIN, "target": {**GOOD_PRETRAIN["target"], "caption_accuracy": 0.54}}
    rows = {**BASE_ROWS, "OST-exact 20%": ("ost-exact", 0.2, [150, 151, 149])}
    out = interpretation(make_results(rows, pretrain=pretrain))
    assert out[0].startswith("The comparisons below are not meaningful")
    assert "caption reading (target) 54.0% (needs ≥ 90%)" in out[0]
    assert "a competence gate failed" in out[0]
    assert any(s.startswith("At 20% of the pool") for s in out[1:])  # numbers still described


def test_no_negative_transfer_is_explained():
    rows = {**BASE_ROWS, "Full-SFT": ("full", 1.0, [150, 151, 149])}
    out = interpretation(make_results(rows))
    assert "negative transfer" in out[0]  # the gate that failed
    noise = _sentence(out, "Training on the clean part")
    assert "no significant difference" in noise and "little to win" in noise


def test_policy_rows_are_compared_with_plain_top_k_of_the_same_scorer():
    rows = {
        **BASE_ROWS,
        "OST-exact 20%": ("ost-exact", 0.2, [140, 141, 139]),
        "OST-exact 20% (coverage)": ("ost-exact", 0.2, [150, 151, 149]),
        "OST-exact 20% (balanced)": ("ost-exact", 0.2, [141, 141, 139]),
    }
    extra = {
        "OST-exact 20%": {"policy": "topk", "kept_per_category": {"add": 150, "read": 50}},
        "OST-exact 20% (coverage)": {
            "policy": "coverage",
            "kept_per_category": {"add": 100, "read": 100},
        },
        "OST-exact 20% (balanced)": {"policy": "balanced"},
    }
    out = interpretation(make_results(rows, extra=extra))
    cov = _sentence(out, "The coverage policy moved ost-exact at 20%")
    assert "from 70.0% (plain top-k, OST-exact 20%) to 75.0%" in cov
    assert "+5.0 points, significant (95% interval [" in cov
    assert "kept per category add 150 → 100, read 50 → 100" in cov
    assert "largest per-category change is" in cov
    bal = _sentence(out, "The balanced policy moved ost-exact at 20%")
    assert "no significant difference" in bal and "kept" not in bal


def test_results_without_per_item_answers_make_no_significance_claims():
    rows = {**BASE_ROWS, "OST-exact 20%": ("ost-exact", 0.2, [150, 151, 149])}
    out = interpretation(make_results(rows, with_correct=False))
    assert out[0].startswith("Not every competence gate could be checked")
    assert any("no per-item test results" in s for s in out)
    best = _sentence(out, "At 20% of the pool the best selection row")
    assert "is 10.0 points above Random 20% (65.0%)" in best
    assert "beats Random" not in " ".join(out) and "beats Full" not in " ".join(out)


def test_stored_gates_and_comparisons_are_used_and_empty_results_are_handled():
    results = make_results(BASE_ROWS)
    results["gates"] = []
    results["comparisons"] = []
    out = interpretation(results)
    assert out[0].startswith("No competence gates were recorded")
    noise = _sentence(out, "Training on the clean part")
    assert "a difference of +15.0 points" in noise  # no stored comparison: no interval
    assert interpretation({})[-1] == "There are no Protocol B rows to compare."


def test_verdict_wording():
    win = {"diff": 0.031, "lo": 0.012, "hi": 0.05, "level": 0.95, "excludes_zero": True}
    assert verdict(win, "X") == "beats X by +3.1 points (95% interval [+1.2, +5.0])"
    tie = {"diff": 0.01, "lo": -0.01, "hi": 0.03, "level": 0.95, "excludes_zero": False}
    assert verdict(tie, "X") == (
        "shows no significant difference from X (+1.0 points, 95% interval [-1.0, +3.0])"
    )
    assert verdict(None, "X", -0.02) == "is 2.0 points below X"
    assert verdict(None, "X") == "cannot be compared with X"
