"""`Proxy`: a Hugging Face VLM behind the `ScoringModel` seam; a thin front over the modules below.

Scoring evaluates the same anchors under many parameter perturbations, so `prepare` runs the
frozen prefix once (proxy.prefix) and `per_sample_loss` only the trainable tail (proxy.losses).
Fast paths, each the same function computed another way (tests/test_proxy_batched.py): evaluation
without grad folds LoRA into the base weights (proxy.lora) and uses fused attention;
`per_sample_gradients` differentiates a whole prepared batch at once (proxy.gradients). Saving and
loading live in proxy.persist. Names other code imports from here are re-exported.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ostselect.data.sample import Sample
from ostselect.precision import DTYPES
from ostselect.proxy import gradients, losses, prefix
from ostselect.proxy.api import OptimizerState
from ostselect.proxy.collate import Batch, collate
from ostselect.proxy.folder import ADAPTER_DIR, OPTIMIZER_FILE, read_meta, write_meta
from ostselect.proxy.gradients import RowSpec
from ostselect.proxy.lora import LoraAdapters
from ostselect.proxy.losses import LossTail, causal_padding_mask, masked_per_sample_loss
from ostselect.proxy.params import ParamsSpec
from ostselect.proxy.prefix import Prepared


class Proxy:
    """A VLM + processor with a trainable-parameter selection, implementing `ScoringModel`."""

    def __init__(
        self,
        model: nn.Module,
        processor: Any,
        *,
        name: str,
        arch: str,
        params_spec: ParamsSpec,
        optimizer_state: OptimizerState | None = None,
        metadata: Mapping[str, Any] | None = None,
        source: str | Path | None = None,
    ):
        self.model = model
        self.processor = processor
        self.name = name
        self.arch = arch
        self.params_spec = params_spec
        self.metadata = dict(metadata or {})
        self._optimizer_state = optimizer_state
        self.model.eval()  # scoring never uses dropout
        self.loss_tail = LossTail(self)  # what `functional_call` swaps parameters into
        self.lora_adapters = LoraAdapters(model)
        self.source = Path(source) if source is not None else None  # the folder it was loaded from
        self._loaded_versions = self._weight_versions()
        self._identity: str | None = None

    # ---- structure -------------------------------------------------------------------------
    @property
    def hf_model(self) -> nn.Module:
        """The underlying transformers model (unwrapped from peft)."""
        m = self.model
        return m.get_base_model() if hasattr(m, "get_base_model") else m

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def trainable_parameters(self) -> dict[str, torch.Tensor]:
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    def frozen_description(self) -> str:
        """What is frozen (and hence cached by `prepare`), in words."""
        return prefix.describe_frozen(self)

    # ---- data ------------------------------------------------------------------------------
    def collate(self, samples: Sequence[Sample]) -> Batch:
        return collate(self.processor, samples, dtype=self.dtype, device=self.device)

    def prepare(self, samples: Sequence[Sample]) -> Prepared:
        return prefix.prepare(self, samples)

    def supervised_token_counts(self, prepared: Prepared) -> torch.Tensor:
        return prepared.counts

    # ---- losses and gradients ----------------------------------------------------------------
    def per_sample_loss(
        self, prepared: Prepared, params: Mapping[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """[B] mean cross-entropy over each sample's assistant tokens (the frozen prefix reused)."""
        return losses.per_sample_loss(self, prepared, params)

    def per_sample_loss_reference(self, samples: Sequence[Sample]) -> torch.Tensor:
        """The independent reference: plain `model(**inputs)` on a fresh batch, same masking."""
        return losses.reference_loss(self, samples)

    def per_sample_gradients(
        self, prepared: Prepared, params: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """([B] losses, {name: [B, ...]}) for a prepared batch in one pass (proxy.gradients)."""
        return gradients.per_sample_gradients(self, prepared, params)

    def per_sample_rows(self, prepared: Prepared) -> tuple[tuple[torch.Tensor, ...], RowSpec]:
        """The prepared batch as flat tensors with the sample on dim 0 (what `vmap` or a
        `TensorDataset` slices); `row_loss(params, row, spec)` is one sample's loss."""
        return gradients.per_sample_rows(prepared)

    def row_loss(
        self, params: Mapping[str, torch.Tensor], row: Sequence[torch.Tensor], spec: RowSpec
    ) -> torch.Tensor:
        """One sample's loss from a row of `per_sample_rows` (sample dimension removed)."""
        return gradients.row_loss(self, params, row, spec)

    # ---- state -----------------------------------------------------------------------------
    def optimizer_state(self) -> OptimizerState | None:
        return self._optimizer_state

    def fingerprint(self) -> str:
        """The proxy's identity. Loaded from a folder and not changed in memory since: the folder's
        content hash (`proxy.folder.proxy_identity`, what the engine's resume fingerprint and the
        benchmark's cache use; the trainable selection is recorded beside it as `params`).
        Changed in place since (a warm-up in this process) or built in memory: a hash of the
        weights and the selection. "Changed" is read from torch's in-place version counters."""
        if self.source is not None and self._weight_versions() == self._loaded_versions:
            if self._identity is None:
                from ostselect.proxy.folder import proxy_identity

                self._identity = proxy_identity(self.source)
            return self._identity
        return self.weights_hash()

    def _weight_versions(self) -> tuple[int, ...]:
        return tuple(t._version for t in self.model.state_dict(keep_vars=True).values())

    def weights_hash(self) -> str:
        """Hash of the weights and the trainable selection, as they are in memory now."""
        h = hashlib.sha256()
        h.update(json.dumps(self.params_spec.to_json(), sort_keys=True).encode())
        for name, t in sorted(self.model.state_dict().items()):
            h.update(name.encode())
            h.update(str(t.dtype).encode())
            h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()[:16]

    def save(
        self,
        out_dir: str | Path,
        optimizer_state: OptimizerState | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Path:
        from ostselect.proxy.persist import save_proxy

        return save_proxy(self, out_dir, optimizer_state, metadata)


__all__ = [
    "ADAPTER_DIR",
    "DTYPES",
    "OPTIMIZER_FILE",
    "Prepared",
    "Proxy",
    "RowSpec",
    "causal_padding_mask",
    "masked_per_sample_loss",
    "read_meta",
    "write_meta",
]
