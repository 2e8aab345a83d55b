"""Per-candidate losses and gradients at theta, batched when the proxy offers it.

A proxy may implement the optional hook `per_sample_gradients(prepared, params) -> (losses[B],
{name: grads[B, ...]})`; `Proxy` does (one batched backward + per-sample einsums for LoRA,
`torch.func.vmap(grad(...))` otherwise), so a batch of candidates is prepared and differentiated
in one pass. Without the hook, or when the batch holds a record that cannot be prepared, each
candidate is prepared and differentiated alone, which also names the bad record. Either way a
sample that cannot be prepared becomes status "error" and a non-finite loss or gradient
"nonfinite"; the run goes on. A batched row equals the one-at-a-time row up to round-off (padding
to the batch's longest sample changes the order of float sums, nothing else).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch

from ostselect.data.sample import Sample
from ostselect.proxy.api import ScoringModel
from ostselect.scores import Status
from ostselect.scoring.work import WorkCounter

OK, NONFINITE, ERROR = Status.OK, Status.NONFINITE, Status.ERROR  # the one vocabulary


@dataclass
class CandidateGradient:
    sample: Sample
    loss: float
    tokens: int
    grads: dict[str, torch.Tensor] | None  # None unless status == "ok"
    status: str = OK
    reason: str | None = None


def _all_finite(loss: float, grads: Mapping[str, torch.Tensor]) -> bool:
    return math.isfinite(loss) and all(bool(torch.isfinite(g).all()) for g in grads.values())


def _one(
    proxy: ScoringModel, sample: Sample, leaves: dict[str, torch.Tensor], counter: WorkCounter
) -> CandidateGradient:
    try:
        prepared = proxy.prepare([sample])
    except Exception as err:  # a bad record must not stop the run
        return CandidateGradient(sample, math.nan, 0, None, ERROR, f"{type(err).__name__}: {err}")
    tokens = int(proxy.supervised_token_counts(prepared)[0])
    with torch.enable_grad():
        loss = proxy.per_sample_loss(prepared, leaves)[0]
        grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    counter.forward += 1
    counter.backward += 1
    grad_map = {
        k: torch.zeros_like(v) if g is None else g
        for (k, v), g in zip(leaves.items(), grads, strict=True)
    }
    value = float(loss.detach())
    if not _all_finite(value, grad_map):
        return CandidateGradient(
            sample, value, tokens, None, NONFINITE, "non-finite loss or gradient"
        )
    return CandidateGradient(sample, value, tokens, grad_map)


def _batched(
    proxy: ScoringModel,
    batch: Sequence[Sample],
    leaves: dict[str, torch.Tensor],
    counter: WorkCounter,
) -> list[CandidateGradient] | None:
    """One pass through the proxy's hook; None without a hook or when the batch has a bad record."""
    hook = getattr(proxy, "per_sample_gradients", None)
    if hook is None:
        return None
    try:
        prepared = proxy.prepare(batch)
        losses, grads = hook(prepared, {k: v.detach() for k, v in leaves.items()})
    except NotImplementedError:
        return None
    except Exception:
        return None  # fall back to one at a time, which names the bad record
    tokens = proxy.supervised_token_counts(prepared)
    counter.forward += len(batch)
    counter.backward += len(batch)
    out = []
    for i, sample in enumerate(batch):
        g = {k: grads[k][i] for k in leaves}
        value = float(losses[i])
        if _all_finite(value, g):
            out.append(CandidateGradient(sample, value, int(tokens[i]), g))
        else:
            out.append(
                CandidateGradient(
                    sample, value, int(tokens[i]), None, NONFINITE, "non-finite loss or gradient"
                )
            )
    return out


def candidate_gradients(
    proxy: ScoringModel,
    batch: Sequence[Sample],
    theta: Mapping[str, torch.Tensor],
    counter: WorkCounter,
) -> Iterator[CandidateGradient]:
    """Loss, supervised tokens and gradient at theta for each candidate of a batch, in order."""
    leaves = {k: v.detach().requires_grad_(True) for k, v in theta.items()}
    batched = _batched(proxy, batch, leaves, counter)
    if batched is not None:
        yield from batched
        return
    for sample in batch:
        yield _one(proxy, sample, leaves, counter)
