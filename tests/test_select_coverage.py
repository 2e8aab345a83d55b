"""Coverage-aware and consensus selection on synthetic tables whose right answer is known."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ostselect.cli import app
from ostselect.data import pool_fingerprint, write_samples
from ostselect.data.sample import Sample, Turn
from ostselect.scores import Scores, build_scores_table, write_scores
from ostselect.select import SelectionPolicy, parse_group_weights, select
from ostselect.select.coverage import (
    LazyGreedy,
    consensus_votes,
    default_tau,
    greedy_cover,
    objective,
    plain_greedy,
    stratum_rank,
)


def make_pool(n: int, **extra_of) -> list[Sample]:
    return [
        Sample(
            id=f"s{i}",
            turns=[Turn("user", f"question {i}"), Turn("assistant", f"answer {i}")],
            extra={key: values[i] for key, values in extra_of.items()},
        )
        for i in range(n)
    ]


def make_scores(
    groups: dict[str, list[float]],
    utility: list[float] | None = None,
    tokens: list[int] | None = None,
    anchors: dict[str, int] | None = None,
) -> Scores:
    """A scores table whose total utility is the anchor-share-weighted group mean (as OST's)."""
    names = list(groups)
    counts = anchors or dict.fromkeys(names, 1)
    share = np.array([counts[g] for g in names], dtype=float) / sum(counts.values())
    matrix = np.array([groups[g] for g in names], dtype=float).T
    u = list(utility) if utility is not None else (matrix @ share).tolist()
    extra: dict[str, list] = {f"utility[{g}]": list(v) for g, v in groups.items()}
    if tokens is not None:
        extra["tokens"] = tokens
    ids = [f"s{i}" for i in range(len(u))]
    table = build_scores_table(ids, u, "exact", extra_columns=extra)
    return Scores(table, {"anchor_groups": counts})


# --- the lazy greedy is plain greedy ------------------------------------------------------------

tables = st.integers(1, 25).flatmap(
    lambda n: st.integers(1, 4).flatmap(
        lambda g: st.tuples(
            st.lists(
                st.lists(
                    st.sampled_from([0.0, 0.0, 0.1, 0.2, 0.5, 1.0, 3.0]), min_size=g, max_size=g
                )
                | st.lists(st.floats(0, 2, allow_nan=False), min_size=g, max_size=g),
                min_size=n,
                max_size=n,
            ),
            st.lists(st.floats(0.05, 1.0), min_size=g, max_size=g),
            st.lists(st.integers(1, 9), min_size=n, max_size=n),
            st.integers(0, n),
            st.sampled_from([2, 3, 8, 2048]),
            st.sampled_from([1, 2, 64]),
        )
    )
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables, st.booleans(), st.integers(3, 30))
def test_lazy_greedy_equals_plain_greedy(case, fill, budget):
    rows, weights, costs, k, band_max, batch = case
    gains = np.array(rows, dtype=float)
    w = np.array(weights) / sum(weights)
    tau = default_tau(gains, max(k, 1))
    c = np.array(costs, dtype=float)
    old = LazyGreedy.band_max, LazyGreedy.batch
    LazyGreedy.band_max, LazyGreedy.batch = band_max, batch  # exercise eviction and pulls
    try:
        lazy, plain = greedy_cover(gains, w, tau, k=k), plain_greedy(gains, w, tau, k=k)
        assert lazy.rows == plain.rows and lazy.value == plain.value
        lazy = greedy_cover(gains, w, tau, costs=c, budget=budget, fill=fill)
        plain = plain_greedy(gains, w, tau, costs=c, budget=budget, fill=fill)
        assert lazy.rows == plain.rows
        assert c[lazy.rows].sum() <= budget
    finally:
        LazyGreedy.band_max, LazyGreedy.batch = old


def test_lazy_greedy_reevaluates_far_fewer_gains_than_plain():
    rng = np.random.default_rng(0)
    gains = np.maximum(rng.normal(0.01, 0.02, (3000, 6)), 0)
    w, tau = np.full(6, 1 / 6), default_tau(gains, 300)
    lazy, plain = greedy_cover(gains, w, tau, k=300), plain_greedy(gains, w, tau, k=300)
    assert lazy.rows == plain.rows
    assert lazy.evaluations < plain.evaluations / 20


def test_greedy_value_is_within_the_guarantee_of_the_best_subset():
    """Brute force on a tiny table: greedy reaches at least (1 - 1/e) of the optimum."""
    from itertools import combinations

    rng = np.random.default_rng(3)
    gains = np.maximum(rng.normal(0.2, 0.5, (10, 3)), 0)
    w, tau = np.array([0.5, 0.3, 0.2]), default_tau(gains, 4)
    best = max(objective(gains, w, tau, list(s)) for s in combinations(range(10), 4))
    assert greedy_cover(gains, w, tau, k=4).value >= (1 - 1 / np.e) * best


# --- select(policy="coverage") ------------------------------------------------------------------


def test_coverage_picks_the_sole_helper_of_an_empty_group_over_a_bigger_duplicate():
    # s0 and s1 help "add" equally (duplicates); s2 alone helps "read", with less total utility.
    scores = make_scores({"add": [1.0, 1.0, 0.0, 0.1], "read": [0.0, 0.0, 0.4, 0.0]})
    pool = make_pool(4)
    top = select(scores, pool, SelectionPolicy(top=2))
    assert top.kept_ids == ["s0", "s1"]
    cover = select(scores, pool, SelectionPolicy(top=2, policy="coverage"))
    assert set(cover.kept_ids) == {"s0", "s2"}
    assert cover.coverage is not None and top.coverage is not None
    assert cover.coverage.objective > top.coverage.objective
    read = cover.coverage.groups["read"]
    assert (read.mass_kept, read.mass_pool, read.main_kept, read.main_pool) == (0.4, 0.4, 1, 1)
    assert top.coverage.groups["read"].mass_kept == 0.0
    assert cover.dropped["s1"].startswith("below top-k cutoff")


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from([-0.2, 0.0, 0.1, 0.3, 0.3, 0.7]) | st.floats(-1, 1), min_size=1,
             max_size=30),
    st.integers(0, 30),
)  # fmt: skip
def test_coverage_with_one_group_is_topk(utility, k):
    scores = make_scores({"all": utility})
    pool = make_pool(len(utility))
    topk = select(scores, pool, SelectionPolicy(top=k))
    cover = select(scores, pool, SelectionPolicy(top=k, policy="coverage"))
    assert cover.kept_ids == topk.kept_ids


def test_coverage_respects_token_budget_and_drop_toxic():
    rng = np.random.default_rng(1)
    n = 60
    groups = {g: rng.normal(0.05, 0.2, n).round(3).tolist() for g in ("a", "b", "c")}
    tokens = rng.integers(5, 50, n).tolist()
    scores = make_scores(groups, tokens=tokens)
    pool = make_pool(n)
    utility = dict(zip(scores.ids, scores.utility, strict=True))
    for fill in (False, True):
        policy = SelectionPolicy(
            budget_tokens=300, budget_fill=fill, drop_toxic=True, policy="coverage"
        )
        sel = select(scores, pool, policy)
        assert sel.kept_ids and sel.tokens_kept <= 300
        assert sum(tokens[int(i[1:])] for i in sel.kept_ids) == sel.tokens_kept
        assert all(utility[i] >= 0 for i in sel.kept_ids)
        assert all(sel.dropped[i].startswith("toxic") for i in utility if utility[i] < 0)
    # Filling keeps going past the first sample that does not fit, so it keeps at least as much.
    stop = select(scores, pool, SelectionPolicy(budget_tokens=300, policy="coverage"))
    go = select(
        scores, pool, SelectionPolicy(budget_tokens=300, budget_fill=True, policy="coverage")
    )
    assert go.tokens_kept >= stop.tokens_kept
    assert stop.kept_ids == go.kept_ids[: len(stop.kept_ids)]


def test_coverage_is_deterministic_and_breaks_ties_by_pool_order():
    scores = make_scores({"a": [0.2] * 6, "b": [0.2] * 6})
    pool = make_pool(6)
    runs = [select(scores, pool, SelectionPolicy(top=3, policy="coverage")).kept_ids for _ in "ab"]
    assert runs[0] == runs[1] == ["s0", "s1", "s2"]
    # Equal gains with unequal totals: the larger total utility first, then pool order.
    scores = make_scores({"a": [0.2, 0.2, 0.2], "b": [0.0, 0.0, 0.0]}, utility=[0.1, 0.3, 0.3])
    kept = select(scores, make_pool(3), SelectionPolicy(top=2, policy="coverage")).kept_ids
    assert kept == ["s1", "s2"]


def test_coverage_with_balance_quotas_and_group_weights():
    # Group "b" counts nine times "a": coverage should spend most picks on "b" helpers, but the
    # per-category quota (proportional, 2 + 2) still holds.
    groups = {"a": [0.5, 0.5, 0.5, 0.0, 0.0, 0.0], "b": [0.0, 0.0, 0.0, 0.5, 0.5, 0.5]}
    pool = make_pool(6, cat=["x", "y", "x", "y", "x", "y"])
    scores = make_scores(groups)
    sel = select(
        scores,
        pool,
        SelectionPolicy(top=4, policy="coverage", balance_by="cat", group_weights="a=1,b=9"),
    )
    assert {s: c.kept for s, c in sel.strata.items()} == {"x": 2, "y": 2}
    assert sel.coverage is not None and sel.coverage.weights_source == "group_weights"
    assert sel.coverage.groups["b"].weight == pytest.approx(0.9)
    heavy = select(scores, pool, SelectionPolicy(top=3, policy="coverage", group_weights="a=1,b=9"))
    assert set(heavy.kept_ids) == {"s3", "s4", "s5"}
    with pytest.raises(ValueError, match=r"missing: \['b'\]"):
        select(scores, pool, SelectionPolicy(top=2, policy="coverage", group_weights="a=1"))


def test_equal_weights_without_anchor_groups_are_warned():
    scores = make_scores({"a": [0.1, 0.2], "b": [0.3, 0.0]})
    scores = Scores(scores.table, {})
    sel = select(scores, make_pool(2), SelectionPolicy(top=1, policy="coverage"))
    assert any("equal" in w for w in sel.warnings)
    assert sel.coverage is not None and sel.coverage.groups["a"].weight == 0.5


# --- consensus, normalisation, errors -----------------------------------------------------------


def test_consensus_keeps_the_samples_in_most_groups_tops():
    # k = 2. Tops: a -> s0, s1; b -> s2, s1; c -> s3, s1 (s4 helps no group but has top utility).
    groups = {
        "a": [0.9, 0.5, 0.0, 0.0, -0.1],
        "b": [0.0, 0.5, 0.9, 0.0, -0.1],
        "c": [0.0, 0.5, 0.0, 0.9, -0.1],
    }
    utility = [0.3, 0.2, 0.25, 0.35, 0.9]
    scores = make_scores(groups, utility=utility)
    votes = consensus_votes(np.array([groups[g] for g in groups]).T, 2)
    assert votes.tolist() == [1, 3, 1, 1, 0]
    sel = select(scores, make_pool(5), SelectionPolicy(top=2, policy="consensus"))
    assert sel.kept_ids == ["s1", "s3"]  # 3 votes; then 1 vote each, s3 has the largest utility
    assert sel.dropped["s4"].startswith("below top-k cutoff")


@pytest.mark.parametrize("policy", ["topk", "coverage", "consensus"])
def test_coverage_block_agrees_with_the_kept_ids(policy):
    rng = np.random.default_rng(2)
    groups = {g: rng.normal(0.05, 0.2, 40).round(3).tolist() for g in ("a", "b", "c")}
    sel = select(make_scores(groups), make_pool(40), SelectionPolicy(top="25%", policy=policy))
    assert sel.coverage is not None and len(sel.kept_ids) == 10
    kept = [int(i[1:]) for i in sel.kept_ids]
    value = 0.0
    for g, c in sel.coverage.groups.items():
        mass = sum(max(groups[g][i], 0.0) for i in kept)
        assert c.mass_kept == pytest.approx(mass)
        assert c.mass_pool == pytest.approx(sum(max(u, 0.0) for u in groups[g]))
        value += c.weight * np.log1p(mass / c.tau)
    assert sel.coverage.objective == pytest.approx(value)
    block = json.loads(json.dumps(sel.summary()["coverage"]))
    assert set(block["groups"]) == {"a", "b", "c"} and block["normalize"] == "none"


def test_group_z_stops_a_large_scale_group_from_dominating():
    # Group "big" has 100x the utility scale; without normalisation top-k keeps only its helpers.
    groups = {"big": [10.0, 9.0, 8.0, 0.0, 0.0, 0.0], "small": [0.0, 0.0, 0.0, 0.3, 0.2, 0.1]}
    scores = make_scores(groups)
    pool = make_pool(6)
    assert select(scores, pool, SelectionPolicy(top=2)).kept_ids == ["s0", "s1"]
    z = select(scores, pool, SelectionPolicy(top=2, normalize="group-z"))
    assert z.kept_ids == ["s3", "s0"]  # one helper of each group


def test_stratum_rank_ranks_within_the_balance_field():
    values = np.array([[3.0], [1.0], [2.0], [0.01], [0.03], [0.02]])
    ranks = stratum_rank(values, ["x", "x", "x", "y", "y", "y"])
    assert ranks[:, 0].tolist() == pytest.approx([1 / 3, -1 / 3, 0.0, -1 / 3, 1 / 3, 0.0])
    pool = make_pool(6, src=["x", "x", "x", "y", "y", "y"])
    scores = make_scores({"g": values[:, 0].tolist()})
    sel = select(scores, pool, SelectionPolicy(top=2, normalize="stratum-rank", balance_by="src"))
    assert set(sel.kept_ids) == {"s0", "s4"}  # the best of each stratum, not the two largest
    with pytest.raises(ValueError, match="balance_by"):
        SelectionPolicy(normalize="stratum-rank")


@pytest.mark.parametrize(
    "policy",
    [SelectionPolicy(policy="coverage"), SelectionPolicy(policy="consensus"),
     SelectionPolicy(normalize="group-z")],
)  # fmt: skip
def test_group_policies_need_group_columns(policy):
    table = build_scores_table(["s0", "s1"], [0.1, 0.2], "exact")
    with pytest.raises(ValueError, match=r"ost score --group-field FIELD"):
        select(Scores(table, {}), make_pool(2), policy)


def test_topk_without_group_columns_has_no_coverage_block():
    table = build_scores_table(["s0", "s1"], [0.1, 0.2], "exact")
    sel = select(Scores(table, {}), make_pool(2), SelectionPolicy(top=1))
    assert sel.coverage is None and sel.summary()["coverage"] is None


def test_group_weights_syntax():
    assert parse_group_weights("read=2, add=1") == {"read": 2.0, "add": 1.0}
    for bad in ("read", "read=x", "=2", "read=1,read=2", ""):
        with pytest.raises(ValueError):
            parse_group_weights(bad)
    with pytest.raises(ValueError, match="not all 0"):
        SelectionPolicy(group_weights={"a": 0.0})


# --- CLI and report -----------------------------------------------------------------------------


def write_inputs(tmp_path, groups: dict[str, list[float]] | None):
    pool = make_pool(4)
    pool_path = tmp_path / "pool.jsonl"
    write_samples(pool, pool_path)
    if groups is None:
        table = build_scores_table([s.id for s in pool], [0.5, 0.4, 0.3, 0.2], "exact")
        anchors = {}
    else:
        table = make_scores(groups).table
        anchors = {"anchor_groups": dict.fromkeys(groups, 1)}
    prov = {"pool_fingerprint": pool_fingerprint(pool_path), "scorer": "test"}
    prov["cost"] = {"wall_s": 0.0}
    scores = write_scores(table, tmp_path / "scores.parquet", prov | anchors)
    return pool_path, scores


def test_cli_coverage_round_trip(tmp_path):
    pool, scores = write_inputs(tmp_path, {"add": [1.0, 1.0, 0.0, 0.1], "read": [0, 0, 0.4, 0]})
    out = tmp_path / "out"
    args = ["select", "--pool", str(pool), "--scores", str(scores), "--out", str(out), "--top", "2"]
    res = CliRunner().invoke(
        app, [*args, "--policy", "coverage", "--group-weights", "add=1,read=1"]
    )
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "selection.json").read_text())
    assert set(summary["kept_ids"]) == {"s0", "s2"}
    assert summary["policy"]["policy"] == "coverage"
    assert summary["coverage"]["groups"]["read"]["main_kept"] == 1
    assert "coverage by anchor group" in res.output and "read" in res.output
    assert [s.strip() for s in (out / "pool.jsonl").read_text().splitlines()]
    # The report marks the coverage subset and shows its coverage.
    report = tmp_path / "r.html"
    res = CliRunner().invoke(
        app,
        ["report", "--pool", str(pool), "--scores", str(scores), "--out", str(report),
         "--selection", str(out / "selection.json")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    html = report.read_text()
    assert 'id="fig-coverage"' in html and "kept by selection (coverage)" in html
    bad = CliRunner().invoke(app, [*args, "--policy", "coverage", "--group-weights", "add"])
    assert bad.exit_code == 2 and "read=2,add=1" in " ".join(bad.output.split())
    bad = CliRunner().invoke(app, [*args, "--policy", "widest"])
    assert bad.exit_code == 2 and "policy" in bad.output


def test_cli_names_group_field_when_scores_have_no_groups(tmp_path):
    pool, scores = write_inputs(tmp_path, None)
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app,
        ["select", "--pool", str(pool), "--scores", str(scores), "--out", str(out),
         "--policy", "consensus"],
    )  # fmt: skip
    assert res.exit_code == 2
    assert "ost score --group-field FIELD" in " ".join(res.output.split())
