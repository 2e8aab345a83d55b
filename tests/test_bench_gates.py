"""Competence gates on hand-made results: each gate's value, threshold and verdict."""

from __future__ import annotations

import pytest

from bench_results_kit import BASE_ROWS, GOOD_PRETRAIN, N_ITEMS, make_results
from ostselect.bench import gates as G
from ostselect.bench.gates import competence_gates, failed_gates, gates_passed, unmeasured_gates


def _by_name(gates):
    return {g["name"]: g for g in gates}


def test_every_gate_holds_on_a_competent_run():
    gates = competence_gates(make_results(BASE_ROWS))
    assert gates_passed(gates) and not failed_gates(gates) and not unmeasured_gates(gates)
    by = _by_name(gates)
    assert set(by) == {
        "digit reader (target)",
        "digit reader (proxy)",
        "caption reading (target)",
        "caption reading (proxy)",
        "text arithmetic (target)",
        "clean-only (Protocol B)",
        "negative transfer (Protocol B)",
        "seed std Full-SFT (Protocol B)",
        "seed std Random 20% (Protocol B)",
    }
    assert by["digit reader (target)"]["threshold"] == G.READER_MIN == 0.95
    assert by["caption reading (target)"]["threshold"] == G.CAPTION_MIN == 0.90
    assert by["text arithmetic (target)"]["threshold"] == G.ARITHMETIC_MIN == 0.95
    assert by["clean-only (Protocol B)"]["value"] == pytest.approx(0.75)
    nt = by["negative transfer (Protocol B)"]
    assert nt["value"] == pytest.approx(30 / N_ITEMS) and nt["lo"] > 0
    assert by["seed std Full-SFT (Protocol B)"]["value"] == pytest.approx(0.005)
    assert by["seed std Full-SFT (Protocol B)"]["op"] == "<="
    assert by["caption reading (proxy)"]["required"] is False
    for g in gates:
        assert g["description"] and isinstance(g["passed"], bool)


def test_a_failed_pretraining_gate_fails_the_run_but_the_proxy_caption_only_informs():
    pretrain = {
        "target": {**GOOD_PRETRAIN["target"], "caption_accuracy": 0.54},
        "proxy": {**GOOD_PRETRAIN["proxy"], "caption_accuracy": 0.47},
    }
    gates = competence_gates(make_results(BASE_ROWS, pretrain=pretrain))
    assert not gates_passed(gates)
    assert [g["name"] for g in failed_gates(gates)] == ["caption reading (target)"]
    assert _by_name(gates)["caption reading (proxy)"]["passed"] is False  # shown, not gating

    proxy_only = {**GOOD_PRETRAIN, "proxy": {**GOOD_PRETRAIN["proxy"], "caption_accuracy": 0.5}}
    assert gates_passed(competence_gates(make_results(BASE_ROWS, pretrain=proxy_only)))


def test_clean_only_below_sixty_percent_fails():
    rows = {
        **BASE_ROWS,
        "Full-SFT": ("full", 1.0, [60, 61, 59]),
        "Clean-only (oracle)": ("clean", 0.65, [110, 111, 109]),
    }
    by = _by_name(competence_gates(make_results(rows)))
    assert by["clean-only (Protocol B)"]["passed"] is False
    assert by["negative transfer (Protocol B)"]["passed"] is True  # 25 points, still a gap


def test_negative_transfer_needs_five_points_and_an_interval_excluding_zero():
    small = {**BASE_ROWS, "Full-SFT": ("full", 1.0, [145, 146, 144])}  # 2.5 points below clean
    nt = _by_name(competence_gates(make_results(small)))["negative transfer (Protocol B)"]
    assert nt["value"] == pytest.approx(0.025) and nt["passed"] is False

    # 20 points on average, but clean-only and Full-SFT get different items right: the paired
    # interval straddles 0, so the gap is not established
    results = make_results(BASE_ROWS)
    for r in results["runs"]:
        right = {"Clean-only (oracle)": range(12), "Full-SFT": range(12, 20)}.get(r["row"], ())
        r["correct"] = [int(i in right) for i in range(20)]
        r["accuracy"] = sum(r["correct"]) / 20
    results["test"]["n"] = 20
    nt = _by_name(competence_gates(results))["negative transfer (Protocol B)"]
    assert nt["value"] == pytest.approx(4 / 20)
    assert nt["lo"] < 0 < nt["hi"] and nt["passed"] is False


def test_without_per_item_results_the_interval_is_unmeasured():
    gates = competence_gates(make_results(BASE_ROWS, with_correct=False))
    nt = _by_name(gates)["negative transfer (Protocol B)"]
    assert nt["value"] == pytest.approx(0.15) and nt["passed"] is None and "lo" not in nt
    assert [g["name"] for g in unmeasured_gates(gates)] == ["negative transfer (Protocol B)"]
    assert not gates_passed(gates)

    small = {**BASE_ROWS, "Full-SFT": ("full", 1.0, [145, 146, 144])}
    gates = competence_gates(make_results(small, with_correct=False))
    assert _by_name(gates)["negative transfer (Protocol B)"]["passed"] is False  # too small anyway


def test_seed_std_gate_and_unmeasurable_gates():
    noisy = {**BASE_ROWS, "Random 20%": ("random", 0.2, [110, 130, 150])}  # std 10 points
    by = _by_name(competence_gates(make_results(noisy)))
    assert by["seed std Random 20% (Protocol B)"]["value"] == pytest.approx(0.1)
    assert by["seed std Random 20% (Protocol B)"]["passed"] is False

    one_seed = {name: (m, f, rights[:1]) for name, (m, f, rights) in BASE_ROWS.items()}
    gates = competence_gates(make_results(one_seed, pretrain={}))
    by = _by_name(gates)
    assert by["seed std Full-SFT (Protocol B)"]["passed"] is None  # one seed has no spread
    assert by["digit reader (target)"]["value"] is None
    assert by["digit reader (target)"]["passed"] is None
    assert not gates_passed(gates) and not failed_gates(gates)

    empty = competence_gates({})
    assert all(g["passed"] is None for g in empty) and not gates_passed(empty)
