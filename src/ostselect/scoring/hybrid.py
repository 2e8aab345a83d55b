"""Hybrid scoring: first-order for every candidate, exact where the first-order error matters.

`hybrid_refine` decides which candidates to re-score, on numbers only; `refine_hybrid` applies it
to a pass's columns, given a way to re-score ids exactly (in process or through the engine).
Hybrid pays for a first-order pass, a calibration sample and the rounds near the cutoff; where
that cannot be cheaper than exact it says so and scores exactly instead (`run_passes` when the
calibration sample would cover the pool; here when a round's band covers most of what is left).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ostselect.scores import Status
from ostselect.scoring.config import ScoreConfig
from ostselect.scoring.modes import Outcome
from ostselect.scoring.table import (
    group_names,
    outcomes_from_columns,
    outcomes_to_columns,
    reject_info,
)

OK = Status.OK
# A round that would re-score more than this share of the still-first-order candidates re-scores
# all of them instead: the band is then too wide for hybrid to save anything over exact.
MAX_BAND_SHARE = 0.5


def cutoff_value(values: np.ndarray, fraction: float) -> float:
    """The utility of the last kept sample when keeping the top `fraction` (NaN ignored)."""
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        return math.nan
    k = max(1, math.ceil(fraction * finite.size))
    return float(np.sort(finite)[::-1][k - 1])


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    from scipy.stats import spearmanr

    if len(a) < 2:
        return math.nan
    return float(spearmanr(a, b).statistic)


@dataclass
class HybridReport:
    calibration_size: int
    calibration_spearman: float
    calibration_max_abs_error: float
    band_relative: float  # a in w_i = safety * (a * |u_fo_i| + b * ||step_i||^2)
    band_curvature: float  # b
    rescored: int
    rounds: int
    # set when hybrid stopped being cheaper than exact and scored every candidate exactly
    exact_instead: str | None = None

    def as_dict(self) -> dict[str, float | int | str | None]:
        out = dict(self.__dict__)
        if out["exact_instead"] is None:
            del out["exact_instead"]
        return out

    @classmethod
    def exact_run(cls, size: int, reason: str) -> HybridReport:
        """The report of a hybrid run that scored every candidate exactly from the start."""
        return cls(size, 1.0, 0.0, 0.0, 0.0, size, 0, exact_instead=reason)


def fit_error_bound(
    magnitude: np.ndarray, step_sq: np.ndarray, seen: np.ndarray, errors: np.ndarray
) -> tuple[float, float]:
    """Smallest bound a*|u_fo| + b*||step||^2 (a, b >= 0) covering every error seen so far.

    The first-order error is the Taylor remainder: part of it tracks the utility itself and part
    the curvature along the step (~ ||step||^2); neither alone fits every sample, so both terms are
    fitted by a 2-variable linear program that minimises the total band over the pool.
    """
    from scipy.optimize import linprog

    if errors.size == 0 or not np.any(errors > 0):
        return 0.0, 0.0
    scale = np.array([max(magnitude.mean(), 1e-300), max(step_sq.mean(), 1e-300)])
    features = np.stack([magnitude[seen], step_sq[seen]], 1) / scale
    cost = np.stack([magnitude, step_sq], 1).sum(0) / scale
    res = linprog(cost, A_ub=-features, b_ub=-errors, bounds=[(0, None), (0, None)], method="highs")
    if not res.success:  # cannot happen with two non-negative features, but never guess
        return float(np.max(errors / np.maximum(magnitude[seen], 1e-300))), 0.0
    coef = res.x / scale
    return float(coef[0]), float(coef[1])


def hybrid_refine(
    outcomes: list[Outcome],
    *,
    cutoff: float,
    calibration_size: int,
    safety: float,
    seed: int,
    rescore: Callable[[list[int]], list[Outcome]],
    max_band_share: float = MAX_BAND_SHARE,
) -> HybridReport:
    """Replace first-order utilities by exact ones where the first-order error could matter.

    A seeded calibration sample is scored both ways; from the errors seen, a per-candidate band
    w_i = safety * (a * |u_fo_i| + b * ||step_i||^2) is fitted (`fit_error_bound`). Every candidate
    within its band of the selection cutoff or of zero is re-scored exactly; its error joins the
    fit (the band widens if it was exceeded), the cutoff is recomputed, and the step repeats until
    no new candidate falls in its band. At the end the cutoff is an exact value and every other
    candidate lies farther than its band from both thresholds, so (while the fitted bound holds)
    the kept set and the toxic flags equal those of `exact`.

    When a round would re-score more than `max_band_share` of the candidates still first-order,
    iterating cannot pay off: every remaining one is re-scored exactly in that round instead, and
    the report says so (`exact_instead`).
    """
    ok = [i for i, o in enumerate(outcomes) if o.status == OK]
    rng = np.random.default_rng(seed)
    size = min(calibration_size, len(ok))
    calibration = sorted(rng.choice(ok, size=size, replace=False).tolist()) if size else []
    first_order = np.array([o.utility for o in outcomes], dtype=np.float64)
    magnitude = np.nan_to_num(np.abs(first_order), nan=0.0)
    step_sq = np.nan_to_num(np.array([o.step_sq for o in outcomes], dtype=np.float64), nan=0.0)
    seen: list[int] = []
    errors: list[float] = []
    coef = (0.0, 0.0)
    exact_instead: str | None = None

    def apply(indices: list[int]) -> None:
        nonlocal coef
        for i, new in zip(indices, rescore(indices), strict=True):
            if new.status == OK:
                seen.append(i)
                errors.append(abs(new.utility - first_order[i]))
            outcomes[i] = new
        coef = fit_error_bound(magnitude, step_sq, np.array(seen, dtype=np.int64), np.array(errors))

    apply(calibration)
    cal_ok = [i for i in calibration if outcomes[i].status == OK]
    rho = spearman(first_order[cal_ok], [outcomes[i].utility for i in cal_ok])
    cal_error = max(errors, default=0.0)
    rounds = 0
    while True:
        values = np.array([o.utility for o in outcomes], dtype=np.float64)
        c = cutoff_value(values, cutoff)
        band = safety * (coef[0] * magnitude + coef[1] * step_sq)
        near = [
            i
            for i in ok
            if not outcomes[i].exact
            and outcomes[i].status == OK
            and min(abs(values[i] - c), abs(values[i])) <= band[i]
        ]
        if not near:
            break
        rounds += 1
        pending = [i for i in ok if not outcomes[i].exact and outcomes[i].status == OK]
        if len(near) > max_band_share * len(pending):
            apply(pending)
            exact_instead = (
                f"round {rounds} would re-score {len(near)} of the {len(pending)} candidates "
                f"still first-order (> {max_band_share:.0%}): all were scored exactly"
            )
            break
        apply(near)
    rescored = sum(1 for o in outcomes if o.exact)
    return HybridReport(
        len(calibration), rho, cal_error, coef[0], coef[1], rescored, rounds, exact_instead
    )


def refine_hybrid(
    columns: Mapping[str, Sequence[Any]],
    config: ScoreConfig,
    rescore_ids: Callable[[list[str]], Mapping[str, Sequence[Any]]],
) -> tuple[dict[str, list[Any]], HybridReport]:
    """Pass 1's first-order columns, with exact values where `hybrid_refine` asks for them.

    `rescore_ids(ids)` returns exact-phase columns holding at least those ids; it is called once
    for the calibration sample and once per refinement round, in a deterministic order.
    """
    outcomes = outcomes_from_columns(columns)
    rejects = dict(zip(columns["id"], reject_info(columns), strict=True))

    def rescore(indices: list[int]) -> list[Outcome]:
        ids = [outcomes[i].id for i in indices]
        if not ids:
            return []
        cols = rescore_ids(ids)
        wanted = set(ids)
        got: dict[str, Outcome] = {}
        for o, info in zip(outcomes_from_columns(cols), reject_info(cols), strict=True):
            if o.id in wanted:
                got[o.id] = o
                rejects[o.id] = info
        missing = Outcome(
            "", math.nan, math.nan, 0, Status.ERROR, reason="missing from the re-score"
        )
        return [got.get(i) or replace(missing, id=i) for i in ids]

    report = hybrid_refine(
        outcomes,
        cutoff=config.cutoff,
        calibration_size=config.calibration_size,
        safety=config.band_safety,
        seed=config.seed,
        rescore=rescore,
    )
    groups = group_names(columns)
    return outcomes_to_columns(outcomes, groups, rejects), report
