"""`less`: LESS-style gradient matching (Xia et al. 2024), first order and Adam-aware.

For each candidate, the feature is the direction the optimizer would move on it. With the proxy's
warm-up AdamW state it is LESS's Adam direction: the sample's gradient g is folded into the moments
(m' = b1 m + (1 - b1) g, v' = b2 v + (1 - b2) g^2), bias-corrected with the next step count exactly
as `torch.optim.AdamW` does, and the feature is m_hat / (sqrt(v_hat) + eps). (LESS's own code omits
the bias correction and puts eps inside the square root; both differ only by eps-sized terms.)
Without state the feature is the plain gradient. The anchor feature is the plain gradient of the
anchor loss L_V (the mean per-sample loss), as LESS uses SGD gradients for its validation set. Both
are projected to `dim` with a seeded Rademacher matrix (identity when `dim` is None) and the
utility is their cosine.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field, field_validator

from ostselect.baselines.base import Baseline, proxy_description
from ostselect.baselines.projection import RademacherProjector
from ostselect.baselines.proxy_ops import mean_loss_gradient, per_sample_gradients, trainable_items
from ostselect.baselines.registry import (
    BaselineOptions,
    batch_field,
    check_batch_size,
    register_baseline,
)
from ostselect.data.sample import Sample
from ostselect.proxy.api import OptimizerState, ScoringModel
from ostselect.scores import Status

if TYPE_CHECKING:
    import torch

# Candidate features are projected together, up to this many bytes at a time: a projection matrix
# too large to cache is regenerated once per group, so larger groups amortise it.
PENDING_BYTES = 1 << 28


def flat_moments(state: OptimizerState, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The state's first and second moments flattened in the trainable-parameter order."""
    import torch

    missing = [n for n in names if n not in state.exp_avg or n not in state.exp_avg_sq]
    if missing:
        raise ValueError(
            f"the proxy's optimizer state has no moments for {missing[:3]}: it was saved for other "
            "trainable parameters (load the proxy with the same --params as its warm-up)"
        )
    m = torch.cat([state.exp_avg[n].reshape(-1).double() for n in names])
    v = torch.cat([state.exp_avg_sq[n].reshape(-1).double() for n in names])
    return m, v


def adam_direction(
    grad: torch.Tensor, m: torch.Tensor, v: torch.Tensor, state: OptimizerState
) -> torch.Tensor:
    """AdamW's next update direction (before lr and weight decay) with `grad` folded in."""
    b1, b2 = state.betas
    t = state.step + 1
    g = grad.double()
    m_new = b1 * m + (1 - b1) * g
    v_new = b2 * v + (1 - b2) * g * g
    m_hat = m_new / (1 - b1**t)
    v_hat = v_new / (1 - b2**t)
    return m_hat / (v_hat.sqrt() + state.eps)


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine of [B, k] against [k]; NaN where a row is zero."""
    num = a @ b
    den = a.norm(dim=-1) * b.norm()
    return num / den


class LESSOptions(BaselineOptions):
    dim: int = Field(8192, description="Random projection size; 0 = no projection.")
    seed: int = Field(0, description="Projection seed.")
    no_optimizer_state: bool = Field(
        False, description="Plain gradients even if the proxy has AdamW state."
    )
    batch_size: int = batch_field(16, "Anchors per forward pass.")

    _check_batch = field_validator("batch_size")(check_batch_size)

    @field_validator("dim")
    @classmethod
    def _usable_dim(cls, value: int) -> int:
        if value < 0:
            raise ValueError(
                f"--dim {value} is not usable: pass a positive projection size, or 0 for none"
            )
        return value

    def scorer_kwargs(self, out: Path | None = None) -> dict[str, Any]:
        return {
            "dim": self.dim or None,
            "seed": self.seed,
            "use_optimizer_state": not self.no_optimizer_state,
            "batch_size": self.batch_size,
        }


@register_baseline(
    "less",
    options=LESSOptions,
    proxy="required",
    anchors=True,
    summary="LESS: cosine between each sample's (Adam-aware) gradient and the anchor gradient.",
    example="ost baseline less --pool pool.jsonl --proxy warm/ --params lora --anchors "
    "anchors.jsonl --out scores.less.parquet --dim 8192",
    utility="cosine(Adam-aware gradient, anchor gradient)",
    direction="high kept",
    cost=("forward_passes", "backward_passes"),
    chunk=1024,  # bigger groups amortise regenerating a large projection matrix
    order=50,
)
class LESSBaseline(Baseline):
    def __init__(
        self,
        proxy: ScoringModel,
        anchors: Sequence[Sample],
        dim: int | None = 8192,
        seed: int = 0,
        use_optimizer_state: bool = True,
        batch_size: int = 16,
    ) -> None:
        super().__init__()
        if not anchors:
            raise ValueError("baseline 'less' needs an anchor set (--anchors FILE)")
        self.proxy = proxy
        self.anchors = list(anchors)
        self.dim = dim
        self.seed = seed
        self.batch_size = batch_size
        self.state = proxy.optimizer_state() if use_optimizer_state else None
        self.names = [n for n, _ in trainable_items(proxy)]
        self._anchor_gradient: torch.Tensor | None = None
        self._anchor_feature: torch.Tensor | None = None
        self._projector: RademacherProjector | None = None
        self._moments: tuple[torch.Tensor, torch.Tensor] | None = None

    def _project(self, vectors: torch.Tensor) -> torch.Tensor:
        if self.dim is None:
            return vectors.double()
        if self._projector is None:
            self._projector = RademacherProjector(vectors.shape[-1], self.dim, self.seed)
        return self._projector.project(vectors)

    def anchor_gradient(self) -> torch.Tensor:
        if self._anchor_gradient is None:
            self._anchor_gradient = mean_loss_gradient(
                self.proxy, self.anchors, self.cost, self.batch_size
            )
        return self._anchor_gradient

    def _project_with_anchor(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Project candidate features; the first time, the anchor gradient rides along, so a
        projection matrix too large to cache is generated once less."""
        import torch

        if self._anchor_feature is not None:
            return self._project(torch.stack(features))
        projected = self._project(torch.stack([self.anchor_gradient().double(), *features]))
        self._anchor_feature = projected[0]
        return projected[1:]

    def candidate_feature(self, grad: torch.Tensor) -> torch.Tensor:
        if self.state is None:
            return grad.double()
        if self._moments is None:
            m, v = flat_moments(self.state, self.names)
            self._moments = (m.to(grad.device), v.to(grad.device))
        return adam_direction(grad, *self._moments, self.state)

    def _score(self, samples: list[Sample]) -> dict[str, list[Any]]:

        self.anchor_gradient()
        scores: list[float] = []
        losses: list[float] = []
        pending: list[torch.Tensor] = []

        def flush() -> None:
            if pending:
                feats = self._project_with_anchor(pending)
                assert self._anchor_feature is not None
                scores.extend(cosine(feats, self._anchor_feature).tolist())
                pending.clear()

        for grad, loss in per_sample_gradients(self.proxy, samples, self.cost):
            pending.append(self.candidate_feature(grad))
            losses.append(loss)
            if len(pending) * grad.numel() * 8 >= PENDING_BYTES:
                flush()
        flush()
        u = np.asarray(scores, dtype=np.float64)
        ok = np.isfinite(u)
        return {
            "id": [s.id for s in samples],
            "utility": np.where(ok, u, np.nan).tolist(),
            "status": [Status.OK if g else Status.ZERO_GRADIENT for g in ok],
            "loss": losses,
        }

    def _settings(self) -> dict[str, Any]:
        return {
            **proxy_description(self.proxy),
            "anchors": len(self.anchors),
            "direction": "adam" if self.state is not None else "sgd",
            "optimizer_step": self.state.step if self.state is not None else None,
            "projection": "identity" if self.dim is None else RademacherProjector.kind,
            "dim": self.dim,
            "seed": self.seed,
        }
