"""The four scoring modes. All share the anchor set, the candidate gradients and the update rule.

utility_i = L_V(theta) - L_V(theta'_i), theta'_i = one optimizer step on z_i alone
(> 0: the step helped).

- `naive`:       the published reference loop, literally: real optimizer step, anchor evaluation,
                 restore parameters and optimizer state.
- `exact`:       the same numbers with functional parameters (nothing to restore), anchors
                 prepared once.
- `first-order`: utility ~ <grad L_V(theta), theta - theta'_i>, one anchor gradient for the
                 whole pool.
- `hybrid`:      first-order for all, exact where the first-order error could change the selection
                 or the toxic flag (see `hybrid_refine`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ostselect.data.sample import Sample
from ostselect.proxy.api import ScoringModel
from ostselect.scoring.anchors import PreparedAnchors
from ostselect.scoring.candidates import (
    ERROR,
    NONFINITE,
    OK,
    CandidateGradient,
    candidate_gradients,
)
from ostselect.scoring.updates import UpdateRule
from ostselect.scoring.work import WorkCounter


@dataclass
class Outcome:
    """One scored candidate (utility NaN unless status is "ok")."""

    id: str
    utility: float
    loss: float
    tokens: int
    status: str = OK
    groups: dict[str, float] = field(default_factory=dict)
    exact: bool = False
    reason: str | None = None
    step_sq: float = math.nan  # ||theta - theta'||^2 (first-order): scales its error
    sample: Sample | None = None


def batches(samples: Iterable[Sample], size: int) -> Iterator[list[Sample]]:
    batch: list[Sample] = []
    for s in samples:
        batch.append(s)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _failed(c: CandidateGradient, status: str | None = None, reason: str | None = None) -> Outcome:
    """A candidate without a usable utility: its own failure, or a non-finite result after it."""
    return Outcome(
        c.sample.id,
        math.nan,
        c.loss,
        c.tokens,
        status or c.status,
        reason=reason or c.reason,
        sample=c.sample,
    )


@dataclass
class OneStepUtility:
    """The OST math of one run, per mode: naive, exact and first-order utilities of candidates.

    Holds the shared state: proxy, theta (detached views, never written), rule, anchors. Not a
    scorer in the engine's sense: `engine_scorer.OSTScorer` wraps it as a `SampleScorer`.
    """

    proxy: ScoringModel
    rule: UpdateRule
    anchors: PreparedAnchors
    batch_size: int
    counter: WorkCounter
    theta: dict[str, torch.Tensor] = field(init=False)
    _base: tuple[float, dict[str, float]] | None = field(default=None, init=False)
    _anchor_grad: tuple[dict, dict] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.theta = {k: v.detach() for k, v in self.proxy.trainable_parameters().items()}

    # -- exact ------------------------------------------------------------------------------
    def base_value(self) -> tuple[float, dict[str, float]]:
        if self._base is None:
            self._base = self.anchors.value(self.theta)
        return self._base

    def exact_one(self, c: CandidateGradient) -> Outcome:
        if c.status != OK:
            return _failed(c)
        l0, g0 = self.base_value()
        l1, g1 = self.anchors.value(self.rule.apply(self.theta, c.grads))
        u = l0 - l1
        if not math.isfinite(u):
            return _failed(c, NONFINITE, "non-finite anchor loss after the step")
        return Outcome(
            c.sample.id,
            u,
            c.loss,
            c.tokens,
            OK,
            {g: g0[g] - g1[g] for g in g0},
            exact=True,
            sample=c.sample,
        )

    def exact(self, samples: Iterable[Sample]) -> Iterator[Outcome]:
        for batch in batches(samples, self.batch_size):
            for c in candidate_gradients(self.proxy, batch, self.theta, self.counter):
                yield self.exact_one(c)

    # -- first order ---------------------------------------------------------------------------
    def anchor_gradient(self) -> tuple[dict, dict]:
        if self._anchor_grad is None:
            self._anchor_grad = self.anchors.gradients(self.theta)
        return self._anchor_grad

    def first_order_one(self, c: CandidateGradient) -> Outcome:
        if c.status != OK:
            return _failed(c)
        total, per_group = self.anchor_gradient()
        step = self.rule.displacement(self.theta, c.grads)

        def dot(grad: Mapping[str, torch.Tensor]) -> float:
            return float(sum((grad[k] * step[k]).sum() for k in step))

        u = dot(total)
        if not math.isfinite(u):
            return _failed(c, NONFINITE, "non-finite first-order utility")
        step_sq = float(sum((d * d).sum() for d in step.values()))
        groups = {g: dot(gr) for g, gr in per_group.items()}
        return Outcome(
            c.sample.id, u, c.loss, c.tokens, OK, groups, sample=c.sample, step_sq=step_sq
        )

    def first_order(self, samples: Iterable[Sample]) -> Iterator[Outcome]:
        for batch in batches(samples, self.batch_size):
            for c in candidate_gradients(self.proxy, batch, self.theta, self.counter):
                yield self.first_order_one(c)

    # -- naive reference -------------------------------------------------------------------
    def naive(self, samples: Iterable[Sample]) -> Iterator[Outcome]:
        """Step a real torch optimizer on the live parameters, evaluate, restore; one at a time."""
        live = self.proxy.trainable_parameters()
        saved = {k: p.detach().clone() for k, p in live.items()}
        optimizer = self.rule.torch_optimizer(live)
        saved_state = copy.deepcopy(optimizer.state_dict())
        l0, g0 = self.anchors.value(None, reference=True)
        try:
            for sample in samples:
                yield self._naive_one(sample, live, optimizer, l0, g0)
                with torch.no_grad():
                    for k, p in live.items():
                        p.copy_(saved[k])
                optimizer.load_state_dict(copy.deepcopy(saved_state))
        finally:
            with torch.no_grad():
                for k, p in live.items():
                    p.copy_(saved[k])
                    p.grad = None

    def _naive_one(self, sample, live, optimizer, l0, g0) -> Outcome:
        try:
            prepared = self.proxy.prepare([sample])
        except Exception as err:
            return Outcome(
                sample.id,
                math.nan,
                math.nan,
                0,
                ERROR,
                reason=f"{type(err).__name__}: {err}",
                sample=sample,
            )
        tokens = int(self.proxy.supervised_token_counts(prepared)[0])
        reference = getattr(self.proxy, "per_sample_loss_reference", None)
        optimizer.zero_grad(set_to_none=True)
        with torch.enable_grad():
            if reference is not None:  # the plain full forward, as the published loop does
                loss = reference([sample])[0]
            else:
                loss = self.proxy.per_sample_loss(prepared)[0]
            loss.backward()
        self.counter.forward += 1
        self.counter.backward += 1
        value = float(loss.detach())
        grads_ok = all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in live.values())
        if not (math.isfinite(value) and grads_ok):
            return Outcome(
                sample.id,
                math.nan,
                value,
                tokens,
                NONFINITE,
                reason="non-finite loss or gradient",
                sample=sample,
            )
        optimizer.step()
        l1, g1 = self.anchors.value(None, reference=True)
        u = l0 - l1
        status = OK if math.isfinite(u) else NONFINITE
        return Outcome(
            sample.id,
            u if status == OK else math.nan,
            value,
            tokens,
            status,
            {g: g0[g] - g1[g] for g in g0},
            exact=True,
            sample=sample,
        )


# -- hybrid ------------------------------------------------------------------------------------
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

    def as_dict(self) -> dict[str, float | int]:
        return dict(self.__dict__)


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
) -> HybridReport:
    """Replace first-order utilities by exact ones where the first-order error could matter.

    A seeded calibration sample is scored both ways; from the errors seen, a per-candidate band
    w_i = safety * (a * |u_fo_i| + b * ||step_i||^2) is fitted (`fit_error_bound`). Every candidate
    within its band of the selection cutoff or of zero is re-scored exactly; its error joins the
    fit (the band widens if it was exceeded), the cutoff is recomputed, and the step repeats until
    no new candidate falls in its band. At the end the cutoff is an exact value and every other
    candidate lies farther than its band from both thresholds, so (while the fitted bound holds)
    the kept set and the toxic flags equal those of `exact`.
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
        apply(near)
    rescored = sum(1 for o in outcomes if o.exact)
    return HybridReport(len(calibration), rho, cal_error, coef[0], coef[1], rescored, rounds)


def __getattr__(name: str) -> Any:
    """`Scorer`, `OneStepUtility`'s old name, still imports (with a warning): "scorer" now means
    only the engine's `SampleScorer` (OST's `OSTScorer`, every baseline)."""
    if name == "Scorer":
        import warnings

        warnings.warn(
            "ostselect.scoring.modes.Scorer is now OneStepUtility", DeprecationWarning, stacklevel=2
        )
        return OneStepUtility
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
