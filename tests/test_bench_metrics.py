"""Benchmark metrics against hand-computed values."""

from __future__ import annotations

import math

import pytest

from ostselect.bench.metrics import (
    aggregate_seeds,
    exact_match,
    mean_std,
    noise_auroc,
    noise_auroc_by_type,
    precision_at_k,
)


def test_exact_match_overall_and_per_category():
    outputs = [
        "The digits are 3 and 5. 3 + 5 = 8. Answer: 8",  # right
        "Answer: 9",  # wrong
        "The digits are 2 and 6. 6 > 2. Answer: 6",  # right
        "The digits are 2 and 6. 6 >",  # no answer -> wrong
        "Answer: -05",  # right after normalisation
    ]
    answers = ["8", "8", "6", "6", "-5"]
    cats = ["add", "add", "compare", "compare", "multi"]
    acc = exact_match(outputs, answers, cats)
    assert acc.overall == pytest.approx(3 / 5)
    assert acc.n == 5 and acc.n_unanswered == 1
    assert acc.per_category == {"add": 0.5, "compare": 0.5, "multi": 1.0}
    assert acc.n_per_category == {"add": 2, "compare": 2, "multi": 1}


def test_exact_match_rejects_misaligned_inputs():
    with pytest.raises(ValueError, match="outputs"):
        exact_match(["Answer: 1"], ["1", "2"])


NOISE = {"a": "clean", "b": "misread", "c": "clean", "d": "truncated", "e": "misread"}


def test_auroc_matches_pair_counting():
    scores = {"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.1, "e": 0.7}
    # clean {a, c} vs noisy {b, d, e}: a beats all 3; c loses to b, beats d, ties e (0.5)
    assert noise_auroc(scores, NOISE) == pytest.approx((3 + 1 + 0.5) / 6)


def test_auroc_direction_higher_utility_means_clean():
    perfect = {"a": 5.0, "c": 4.0, "b": 1.0, "d": 0.0, "e": -3.0}
    assert noise_auroc(perfect, NOISE) == 1.0
    assert noise_auroc({k: -v for k, v in perfect.items()}, NOISE) == 0.0


def test_auroc_nan_scores_rank_last_and_single_class_is_nan():
    scores = {"a": float("nan"), "b": 0.8, "c": 0.9, "d": 0.1, "e": 0.2}
    # a (NaN -> lowest) beats nobody; c beats all 3
    assert noise_auroc(scores, NOISE) == pytest.approx(3 / 6)
    assert math.isnan(noise_auroc({"a": 1.0, "c": 2.0}, NOISE))


def test_auroc_by_type():
    scores = {"a": 0.9, "b": 0.95, "c": 0.7, "d": 0.1, "e": 0.5}
    by_type = noise_auroc_by_type(scores, NOISE)
    assert by_type == {"misread": pytest.approx(2 / 4), "truncated": 1.0}


def test_missing_noise_tag_is_an_error():
    with pytest.raises(KeyError, match="no noise tag"):
        noise_auroc({"zzz": 1.0}, NOISE)


def test_precision_at_k():
    scores = {"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.1, "e": 0.7}
    assert precision_at_k(scores, NOISE, 1) == 1.0
    assert precision_at_k(scores, NOISE, 2) == 0.5
    assert precision_at_k(scores, NOISE, 3) == pytest.approx(2 / 3)  # tie c/e: c first (order)
    assert precision_at_k(scores, NOISE, 0.4) == 0.5  # ceil(0.4 * 5) = 2
    assert precision_at_k(scores, NOISE, 5) == pytest.approx(2 / 5)
    with pytest.raises(ValueError, match="k="):
        precision_at_k(scores, NOISE, 6)


def test_mean_std_over_seeds():
    assert mean_std([0.5]) == (0.5, 0.0)
    m, s = mean_std([1.0, 2.0, 3.0])
    assert m == 2.0 and s == pytest.approx(1.0)  # sample std (ddof=1)
    agg = aggregate_seeds([{"acc": 0.5, "auroc": 0.7}, {"acc": 0.7, "auroc": 0.9}])
    assert agg["acc"] == (pytest.approx(0.6), pytest.approx(math.sqrt(0.02)))
    with pytest.raises(ValueError, match="different metrics"):
        aggregate_seeds([{"acc": 1.0}, {"auroc": 1.0}])
