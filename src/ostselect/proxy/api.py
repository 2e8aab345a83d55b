"""The seam between "a model family" and "the scoring math".

Like TRAK's model-output adapter and dattri's Task: the scorer, the warm-up trainer and the
baselines only talk to a `ScoringModel`. Everything architecture-specific (chat templates, image
processors, vision towers, mrope position ids, which layers are frozen) stays behind it.
Loss convention (written once, in the implementation, and tested):

    per-sample loss = mean token cross-entropy over that sample's supervised tokens, which are the
    assistant turns only (system, user, image and padding tokens are masked);
    anchor loss L_V = unweighted mean of the per-sample losses over the anchor set.

Optimizer state saved by warm-up (`OptimizerState`) is keyed by the same parameter names as
`trainable_parameters()`, so the scorer can take exactly the next `torch.optim.AdamW` step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

    from ostselect.data.sample import Sample


@dataclass
class OptimizerState:
    """AdamW state after warm-up: per-parameter moments plus hyper-parameters and step count.

    `step` is the number of optimizer steps already taken; the scorer's simulated step uses
    `step + 1` for bias correction, exactly as `torch.optim.AdamW` would.
    """

    step: int
    lr: float
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.01
    exp_avg: dict[str, torch.Tensor] = field(default_factory=dict)
    exp_avg_sq: dict[str, torch.Tensor] = field(default_factory=dict)


@runtime_checkable
class ScoringModel(Protocol):
    """What scoring needs from a proxy. Implemented by `ostselect.proxy.Proxy` for HF VLMs."""

    name: str  # path or hub name it was loaded from

    def trainable_parameters(self) -> dict[str, torch.Tensor]:
        """Name -> the live trainable tensors theta (requires_grad=True), in a fixed order."""
        ...

    def prepare(self, samples: Sequence[Sample]) -> Any:
        """Collate samples and run, once and without grad, everything that does not depend on the
        trainable parameters (frozen vision tower, frozen lower layers). The result is opaque to
        callers except for `len()`; it is reused for every candidate step."""
        ...

    def per_sample_loss(
        self, prepared: Any, params: Mapping[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """[B] per-sample losses. With `params` given, a pure function of them
        (`torch.func.functional_call`), so it can be differentiated and vmapped."""
        ...

    def supervised_token_counts(self, prepared: Any) -> torch.Tensor:
        """[B] number of supervised (assistant) tokens per sample."""
        ...

    def optimizer_state(self) -> OptimizerState | None:
        """The warm-up's AdamW state if the proxy folder has one."""
        ...

    def fingerprint(self) -> str:
        """The proxy's identity for provenance: its folder's content hash while the weights are
        as loaded (what the engine's fingerprint uses), else a hash of the weights in memory."""
        ...

    def save(
        self,
        out_dir: str | Path,
        optimizer_state: OptimizerState | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Path:
        """Save a proxy folder that `load_proxy` reloads (weights, processor, parameter selection,
        optional optimizer state and free-form metadata such as warm-up sample ids)."""
        ...
