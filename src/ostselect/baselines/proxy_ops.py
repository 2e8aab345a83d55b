"""Proxy computations the baselines share, written only against the `ScoringModel` protocol.

Per-sample gradients are taken one sample at a time (prepare one, backward one): the protocol's
`prepare` output is opaque, so it cannot be sliced or vmapped here, and a per-sample backward
through a batched graph would cost a whole batch each time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from ostselect.data.sample import IMAGE_PLACEHOLDER, Sample, Turn

if TYPE_CHECKING:
    import torch

    from ostselect.baselines.base import CostMeter
    from ostselect.proxy.api import ScoringModel


def batches(items: Sequence, size: int) -> Iterator[Sequence]:
    size = max(1, int(size))
    for start in range(0, len(items), size):
        yield items[start : start + size]


def per_sample_losses(
    proxy: ScoringModel, samples: Sequence[Sample], meter: CostMeter, batch_size: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """(losses, supervised token counts) at the proxy's current parameters, without grad."""
    import torch

    losses: list[np.ndarray] = []
    tokens: list[np.ndarray] = []
    with torch.no_grad():
        for chunk in batches(samples, batch_size):
            prepared = proxy.prepare(chunk)
            losses.append(proxy.per_sample_loss(prepared).detach().double().cpu().numpy())
            tokens.append(proxy.supervised_token_counts(prepared).detach().cpu().numpy())
            meter.forward_passes += len(chunk)
    if not losses:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    return np.concatenate(losses), np.concatenate(tokens).astype(np.int64)


def trainable_items(proxy: ScoringModel) -> list[tuple[str, torch.Tensor]]:
    params = list(proxy.trainable_parameters().items())
    if not params:
        raise ValueError("the proxy has no trainable parameters: nothing to take a gradient of")
    return params


def flat_gradient(
    loss: torch.Tensor, params: list[tuple[str, torch.Tensor]], *, retain_graph: bool = False
) -> torch.Tensor:
    """d loss / d params, flattened in `trainable_parameters()` order (unused params give zeros)."""
    import torch

    grads = torch.autograd.grad(
        loss, [p for _, p in params], allow_unused=True, retain_graph=retain_graph
    )
    return torch.cat(
        [
            (g if g is not None else torch.zeros_like(p)).reshape(-1)
            for g, (_, p) in zip(grads, params, strict=True)
        ]
    )


def per_sample_gradients(
    proxy: ScoringModel, samples: Sequence[Sample], meter: CostMeter
) -> Iterator[tuple[torch.Tensor, float]]:
    """Yield (flat gradient of the sample's own loss, that loss) for each sample, in order."""
    params = trainable_items(proxy)
    for sample in samples:
        prepared = proxy.prepare([sample])
        loss = proxy.per_sample_loss(prepared)[0]
        meter.forward_passes += 1
        grad = flat_gradient(loss, params)
        meter.backward_passes += 1
        yield grad.detach(), float(loss.detach())


def mean_loss_gradient(
    proxy: ScoringModel, samples: Sequence[Sample], meter: CostMeter, batch_size: int = 8
) -> torch.Tensor:
    """Gradient of the unweighted mean per-sample loss over `samples` (the anchor loss L_V)."""
    params = trainable_items(proxy)
    total = None
    n = len(samples)
    if n == 0:
        raise ValueError("the anchor set is empty")
    for chunk in batches(samples, batch_size):
        prepared = proxy.prepare(chunk)
        loss_sum = proxy.per_sample_loss(prepared).sum() / n
        meter.forward_passes += len(chunk)
        grad = flat_gradient(loss_sum, params)
        meter.backward_passes += len(chunk)
        total = grad if total is None else total + grad
    assert total is not None
    return total.detach()


def without_question(sample: Sample) -> Sample:
    """The same sample with each user turn reduced to its image placeholders (IFD's "no question").

    System turns are dropped too: IFD compares the answer's loss with and without *any* instruction.
    Images stay, so a visual answer is still conditioned on what it describes.
    """
    turns = []
    for turn in sample.turns:
        if turn.role == "system":
            continue
        if turn.role == "user":
            n_images = turn.content.count(IMAGE_PLACEHOLDER)
            turns.append(Turn("user", "\n".join([IMAGE_PLACEHOLDER] * n_images)))
        else:
            turns.append(turn)
    return replace(sample, turns=turns)
