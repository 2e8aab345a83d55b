"""Benchmark metrics: answer accuracy, how well a score finds the hidden noise, and seed statistics.

Sign convention (as in `ostselect.scores`): a higher score means "keep", so a good scorer ranks
clean samples high. Noise-detection AUROC is therefore the probability that a random clean sample
outscores a random noisy one (0.5 = chance, 1.0 = perfect, < 0.5 = the score prefers noise).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ostselect.bench.noise import CLEAN, NOISE_TYPES
from ostselect.bench.tasks import extract_answer
from ostselect.scores import rank_descending


@dataclass(frozen=True)
class Accuracy:
    """Exact-match accuracy overall and per category (`n` counts the graded predictions)."""

    overall: float
    n: int
    per_category: dict[str, float] = field(default_factory=dict)
    n_per_category: dict[str, int] = field(default_factory=dict)
    n_unanswered: int = 0  # outputs with no extractable 'Answer: n'
    correct: tuple[int, ...] = ()  # 1/0 per graded output, in order (paired statistics)


def _normalize(answer: str) -> str:
    a = answer.strip()
    try:
        return str(int(a))
    except ValueError:
        return a


def exact_match(
    outputs: Sequence[str],
    answers: Sequence[str],
    categories: Sequence[str] | None = None,
) -> Accuracy:
    """Share of model outputs whose extracted final answer equals the ground truth.

    An output without 'Answer: n' counts as wrong (and in `n_unanswered`).
    """
    if len(outputs) != len(answers):
        raise ValueError(f"{len(outputs)} outputs but {len(answers)} answers")
    if categories is not None and len(categories) != len(outputs):
        raise ValueError(f"{len(outputs)} outputs but {len(categories)} categories")
    if not outputs:
        raise ValueError("no outputs to grade")
    extracted = [extract_answer(o) for o in outputs]
    correct = [
        e is not None and e == _normalize(a) for e, a in zip(extracted, answers, strict=True)
    ]
    per: dict[str, list[bool]] = defaultdict(list)
    for c, ok in zip(categories or [], correct, strict=False):
        per[c].append(ok)
    return Accuracy(
        overall=float(np.mean(correct)),
        n=len(correct),
        per_category={c: float(np.mean(v)) for c, v in sorted(per.items())},
        n_per_category={c: len(v) for c, v in sorted(per.items())},
        n_unanswered=sum(e is None for e in extracted),
        correct=tuple(int(c) for c in correct),
    )


def _aligned(
    scores: Mapping[str, float], noise: Mapping[str, str]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Ids (in `scores` order), their scores, and is-clean flags; every scored id needs a tag."""
    missing = [i for i in scores if i not in noise]
    if missing:
        raise KeyError(f"{len(missing)} scored ids have no noise tag, e.g. {missing[:3]}")
    ids = list(scores)
    values = np.array([scores[i] for i in ids], dtype=np.float64)
    clean = np.array([noise[i] == CLEAN for i in ids], dtype=bool)
    return ids, values, clean


def noise_auroc(scores: Mapping[str, float], noise: Mapping[str, str]) -> float:
    """AUROC of `scores` for telling clean (positive) from noisy samples; NaN if a class is absent.

    NaN scores (e.g. failed samples) are treated as the lowest score, as selection does.
    """
    from sklearn.metrics import roc_auc_score

    _, values, clean = _aligned(scores, noise)
    if clean.all() or not clean.any():
        return math.nan
    values = np.where(np.isnan(values), -np.inf, values)
    finite_min = values[np.isfinite(values)].min() if np.isfinite(values).any() else 0.0
    values = np.where(np.isneginf(values), finite_min - 1.0, values)
    return float(roc_auc_score(clean, values))


def noise_auroc_by_type(scores: Mapping[str, float], noise: Mapping[str, str]) -> dict[str, float]:
    """AUROC of clean vs each noise type alone (which failures a scorer can and cannot see)."""
    out = {}
    for kind in NOISE_TYPES:
        subset = {i: s for i, s in scores.items() if noise.get(i) in (CLEAN, kind)}
        if any(noise[i] == kind for i in subset):
            out[kind] = noise_auroc(subset, noise)
    return out


def precision_at_k(scores: Mapping[str, float], noise: Mapping[str, str], k: int | float) -> float:
    """Share of clean samples among the top-k by score; `k` is a count or, if 0 < k < 1, a fraction.

    Ties keep the order of `scores` and NaN ranks last, as `ostselect.scores.rank_descending` does.
    """
    ids, values, clean = _aligned(scores, noise)
    n = len(ids)
    count = math.ceil(k * n) if isinstance(k, float) and 0.0 < k < 1.0 else int(k)
    if not 1 <= count <= n:
        raise ValueError(f"k={k} selects {count} of {n} samples; need 1..{n}")
    top = rank_descending(values) <= count
    return float(clean[top].mean())


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0.0 for a single value) over seeds."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("mean_std of no values")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def aggregate_seeds(runs: Sequence[Mapping[str, float]]) -> dict[str, tuple[float, float]]:
    """Per metric name, (mean, std) over the runs of several seeds (all runs need the same keys)."""
    if not runs:
        raise ValueError("no runs to aggregate")
    keys = list(runs[0])
    for r in runs[1:]:
        if set(r) != set(keys):
            raise ValueError(f"runs report different metrics: {sorted(keys)} vs {sorted(r)}")
    return {k: mean_std([r[k] for r in runs]) for k in keys}
