"""The four scoring modes. All share the anchor set, the candidate gradients and the update rule.

utility_i = L_V(theta) - L_V(theta'_i), theta'_i = one optimizer step on z_i alone
(> 0: the step helped).

- `naive`:       the published reference loop, literally: real optimizer step, anchor evaluation,
                 restore parameters and optimizer state.
- `exact`:       the same numbers with functional parameters (nothing to restore), anchors
                 prepared once; `candidate_batch` K > 1 evaluates K candidates' stepped
                 parameters against the anchors in one batched pass (for accelerators).
- `first-order`: utility ~ <grad L_V(theta), theta - theta'_i>, one anchor gradient for the
                 whole pool.
- `hybrid`:      first-order for all, exact where the first-order error could change the selection
                 or the toxic flag (see `hybrid_refine`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

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
    scorer in the engine's sense: `ost_scorer.OSTScorer` wraps it as a `SampleScorer`.
    """

    proxy: ScoringModel
    rule: UpdateRule
    anchors: PreparedAnchors
    batch_size: int
    counter: WorkCounter
    candidate_batch: int = 1  # exact: candidates evaluated against the anchors per pass
    theta: dict[str, torch.Tensor] = field(init=False)
    _base: tuple[float, dict[str, float]] | None = field(default=None, init=False)
    _anchor_grad: tuple[dict, dict] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.candidate_batch < 1:
            raise ValueError(f"candidate_batch must be >= 1, not {self.candidate_batch}")
        self.theta = {k: v.detach() for k, v in self.proxy.trainable_parameters().items()}

    # -- exact ------------------------------------------------------------------------------
    def base_value(self) -> tuple[float, dict[str, float]]:
        if self._base is None:
            self._base = self.anchors.value(self.theta)
        return self._base

    def exact_one(self, c: CandidateGradient) -> Outcome:
        if c.status != OK:
            return _failed(c)
        return self._exact_outcome(c, self.anchors.value(self.rule.apply(self.theta, c.grads)))

    def _exact_outcome(
        self, c: CandidateGradient, after: tuple[float, dict[str, float]]
    ) -> Outcome:
        """The outcome of an OK candidate whose stepped anchor value is `after`."""
        l0, g0 = self.base_value()
        l1, g1 = after
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

    def exact_many(self, candidates: Sequence[CandidateGradient]) -> list[Outcome]:
        """`exact_one` of each candidate, in order, with up to `candidate_batch` OK candidates
        stepped together (gradients stacked, one `rule.apply`) and evaluated in one batched
        anchor pass (`PreparedAnchors.values_many`). Failed candidates keep their status; a
        non-finite utility is checked per candidate; a lone candidate takes `exact_one`'s path.
        Equal to one at a time up to round-off (bit for bit on CPU float64 so far). A proxy whose
        `per_sample_loss` does not run under `vmap` falls back to one candidate at a time with a
        one-line warning (`PreparedAnchors.losses_many`)."""
        out: list[Outcome | None] = [None if c.status == OK else _failed(c) for c in candidates]
        ok = [i for i, c in enumerate(candidates) if c.status == OK]
        for start in range(0, len(ok), self.candidate_batch):
            group = ok[start : start + self.candidate_batch]
            if len(group) == 1:
                out[group[0]] = self.exact_one(candidates[group[0]])
                continue
            grads = {
                k: torch.stack([candidates[i].grads[k] for i in group])  # type: ignore[index]
                for k in self.theta
            }
            after = self.anchors.values_many(self.rule.apply(self.theta, grads))
            for i, value in zip(group, after, strict=True):
                out[i] = self._exact_outcome(candidates[i], value)
        return out  # type: ignore[return-value]

    def exact(self, samples: Iterable[Sample]) -> Iterator[Outcome]:
        for batch in batches(samples, self.batch_size):
            candidates = candidate_gradients(self.proxy, batch, self.theta, self.counter)
            if self.candidate_batch == 1:
                for c in candidates:
                    yield self.exact_one(c)
            else:
                yield from self.exact_many(list(candidates))

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
