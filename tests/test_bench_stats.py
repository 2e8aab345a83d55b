"""The paired bootstrap against hand computations, and the row comparisons of a results dict."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench_results_kit import BASE_ROWS, N_ITEMS, make_results
from ostselect.bench.stats import (
    PairedDiff,
    compare_rows,
    find_comparison,
    fmt_diff,
    fmt_points,
    paired_bootstrap,
    row_comparisons,
)


def _percentile(values: list[float], q: float) -> float:
    """Linear interpolation between the closest ranks, as numpy does by default."""
    v = sorted(values)
    pos = q / 100 * (len(v) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def test_interval_matches_a_slow_loop_over_the_same_draws():
    rng = np.random.default_rng(42)
    a = (rng.random((3, 7)) < 0.6).astype(int)
    b = (rng.random((3, 7)) < 0.4).astype(int)
    n_boot, seed = 300, 5
    got = paired_bootstrap(a, b, n_boot=n_boot, seed=seed, level=0.9)

    replay = np.random.default_rng(seed)  # the documented draw order
    seed_draws = replay.integers(0, 3, size=(n_boot, 3))
    item_draws = replay.integers(0, 7, size=(n_boot, 7))
    stats = []
    for r in range(n_boot):
        total, count = 0, 0
        for s in seed_draws[r]:  # the same resampled seeds and items for a and b: paired
            for i in item_draws[r]:
                total += int(a[s, i]) - int(b[s, i])
                count += 1
        stats.append(total / count)
    assert got.diff == pytest.approx((a.sum() - b.sum()) / a.size)
    assert got.lo == pytest.approx(_percentile(stats, 5.0))
    assert got.hi == pytest.approx(_percentile(stats, 95.0))
    assert (got.n_seeds, got.n_items, got.level) == (3, 7, 0.9)


def test_item_resampling_matches_the_enumerated_distribution():
    # one seed, three items, only the first differs: the replicate is (times item 0 drawn) / 3,
    # Binomial(3, 1/3): P(0) = 8/27, P(1) = 12/27, P(2) = 6/27, P(3) = 1/27
    a, b = [[1, 0, 0]], [[0, 0, 0]]
    got = paired_bootstrap(a, b, n_boot=20000, seed=1, level=0.6)
    # 20th percentile: P(0) = 0.30 > 0.2 -> 0; 80th: P(<= 1/3) = 0.74, P(<= 2/3) = 0.96 -> 2/3
    assert (got.lo, got.hi) == (0.0, pytest.approx(2 / 3))
    assert got.diff == pytest.approx(1 / 3)


def test_seeds_are_resampled_too():
    # one item, two seeds, only seed 0 differs: the replicate is (times seed 0 drawn) / 2
    got = paired_bootstrap([[1], [0]], [[0], [0]], n_boot=4000, seed=0, level=0.95)
    assert (got.lo, got.hi) == (0.0, 1.0)
    narrow = paired_bootstrap([[1], [0]], [[0], [0]], n_boot=4000, seed=0, level=0.2)
    assert (narrow.lo, narrow.hi) == (0.5, 0.5)  # P(1/2) = 1/2 covers the middle 20%


def test_degenerate_differences_give_exact_intervals():
    rng = np.random.default_rng(0)
    a = (rng.random((3, 50)) < 0.5).astype(int)
    same = paired_bootstrap(a, a)
    assert (same.diff, same.lo, same.hi) == (0.0, 0.0, 0.0)
    assert not same.excludes_zero
    ones, zeros = np.ones((3, 50), dtype=int), np.zeros((3, 50), dtype=int)
    win = paired_bootstrap(ones, zeros)
    assert (win.diff, win.lo, win.hi) == (1.0, 1.0, 1.0) and win.excludes_zero
    loss = paired_bootstrap(zeros, ones)
    assert (loss.diff, loss.lo, loss.hi) == (-1.0, -1.0, -1.0) and loss.excludes_zero


def test_deterministic_under_seed_and_one_dimensional_input_is_one_seed():
    rng = np.random.default_rng(3)
    a = (rng.random((2, 40)) < 0.6).astype(int)
    b = (rng.random((2, 40)) < 0.5).astype(int)
    assert paired_bootstrap(a, b, seed=7) == paired_bootstrap(a, b, seed=7)
    assert paired_bootstrap(a, b, seed=7) != paired_bootstrap(a, b, seed=8)
    one = paired_bootstrap(a[0], b[0], n_boot=100)
    assert one.n_seeds == 1 and one == paired_bootstrap(a[:1], b[:1], n_boot=100)


def test_paired_beats_unpaired_when_items_share_difficulty():
    # a = b plus 10 more right answers on every seed: paired, the difference never changes sign
    a = np.zeros((3, 400), dtype=int)
    b = np.zeros((3, 400), dtype=int)
    a[:, :210] = 1
    b[:, :200] = 1
    got = paired_bootstrap(a, b)
    assert got.lo > 0 and got.excludes_zero
    assert got.diff == pytest.approx(10 / 400)


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="same"):
        paired_bootstrap(np.ones((2, 3)), np.ones((3, 3)))
    with pytest.raises(ValueError, match="at least one"):
        paired_bootstrap(np.ones((1, 0)), np.ones((1, 0)))
    with pytest.raises(ValueError, match="level"):
        paired_bootstrap([[1]], [[0]], level=95)


def test_paired_diff_dict_and_formatting():
    d = PairedDiff(diff=0.031, lo=0.012, hi=0.05, n_seeds=3, n_items=2000)
    assert d.as_dict()["excludes_zero"] is True
    assert fmt_diff(d.as_dict()) == "+3.1 [+1.2, +5.0]"
    assert fmt_points(-0.0001) == "+0.0" and fmt_points(-0.02) == "-2.0"


def _results():
    rows = {
        **BASE_ROWS,
        "OST-exact 20%": ("ost-exact", 0.2, [150, 151, 149]),
        "OST-exact 20% (coverage)": ("ost-exact", 0.2, [160, 161, 159]),
        "Random 50%": ("random", 0.5, [140, 140, 140]),
        "loss 50%": ("loss", 0.5, [141, 140, 140]),
    }
    return make_results(
        rows,
        protocols=("A", "B"),
        extra={"OST-exact 20% (coverage)": {"policy": "coverage"}},
    )


def test_row_comparisons_pair_every_row_with_its_references():
    results = _results()
    comps = row_comparisons(results, n_boot=500)
    kinds = {(c["row"], c["protocol"], c["kind"]): c["baseline"] for c in comps}
    for p in ("A", "B"):
        assert kinds[("OST-exact 20%", p, "random")] == "Random 20%"
        assert kinds[("OST-exact 20%", p, "full")] == "Full-SFT"
        assert kinds[("loss 50%", p, "random")] == "Random 50%"
        assert kinds[("OST-exact 20% (coverage)", p, "topk")] == "OST-exact 20%"
        assert kinds[("Clean-only (oracle)", p, "full")] == "Full-SFT"
        assert kinds[("Random 20%", p, "full")] == "Full-SFT"
        assert ("Random 20%", p, "random") not in kinds  # not against itself
        assert ("Clean-only (oracle)", p, "random") not in kinds  # no Random at 65%
        assert not any(k[0] == "Full-SFT" for k in kinds)
        assert ("OST-exact 20%", p, "topk") not in kinds  # plain top-k is the reference
    ost = find_comparison(comps, "OST-exact 20%", "B", "random")
    assert ost is not None
    assert ost["diff"] == pytest.approx(20 / N_ITEMS)
    assert ost["excludes_zero"] and ost["seeds"] == [0, 1, 2]
    loss = find_comparison(comps, "loss 50%", "B", "random")
    assert loss is not None and not loss["excludes_zero"]  # one item on one seed
    cov = find_comparison(comps, "OST-exact 20% (coverage)", "B", "topk")
    assert cov is not None and cov["diff"] == pytest.approx(10 / N_ITEMS)


def test_comparisons_use_common_seeds_and_skip_rows_without_items():
    results = _results()
    runs = results["runs"]
    # Random 20% under B lacks seed 2; OST's seed-2 run must then be left out of the pair
    runs[:] = [r for r in runs if not (r["row"] == "Random 20%" and r["seed"] == 2)]
    got = compare_rows(results, "OST-exact 20%", "Random 20%", "B", n_boot=200)
    assert got is not None
    diff, seeds = got
    assert seeds == [0, 1] and diff.n_seeds == 2
    assert diff.diff == pytest.approx(40 / (2 * N_ITEMS))
    for r in runs:
        if r["row"] == "loss 50%":
            del r["correct"]
    assert compare_rows(results, "loss 50%", "Random 50%", "B") is None
    assert compare_rows(results, "no such row", "Random 50%", "B") is None
    # a `correct` of the wrong length (not the test split's size) is not compared either
    results["test"]["n"] = N_ITEMS + 1
    assert compare_rows(results, "OST-exact 20%", "Random 20%", "B") is None


def test_forty_comparisons_of_the_full_size_are_fast():
    import time

    rng = np.random.default_rng(0)
    a = (rng.random((3, 2000)) < 0.6).astype(np.int8)
    b = (rng.random((3, 2000)) < 0.55).astype(np.int8)
    start = time.perf_counter()
    for _ in range(40):
        paired_bootstrap(a, b)
    assert time.perf_counter() - start < 20  # about 1 s on one core; generous for a busy machine
