"""The proxy's plain LoRA linears, for the two fast paths that need to see them.

Evaluation folds each LoRA pair into its base weight (W + s * B @ A, exact; no side branch per
call) and per-sample LoRA gradients are rebuilt from captured activations (proxy.gradients). Both
need the same list of mergeable layers; `LoraAdapters` finds it once per proxy. Any LoRA layer
that is not a plain single-adapter linear (DoRA, fan-in-fan-out, already merged) turns both
fast paths off rather than approximating them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import torch
from torch import nn

from ostselect.precision import master_dtype

LoraLayer = tuple[str, nn.Module, str]  # (module name, LoRA layer, active adapter)


def pair_keys(name: str, adapter: str) -> tuple[str, str]:
    """The parameter names of a LoRA layer's A and B matrices."""
    return f"{name}.lora_A.{adapter}.weight", f"{name}.lora_B.{adapter}.weight"


class LoraAdapters:
    """The mergeable LoRA linears of one model, found on first use."""

    def __init__(self, model: nn.Module):
        self._model = model
        self._layers: list[LoraLayer] | None = None

    def layers(self) -> list[LoraLayer]:
        """(module name, LoRA layer, adapter) for every mergeable LoRA linear; [] if any is not."""
        if self._layers is not None:
            return self._layers
        out: list[LoraLayer] = []
        try:
            from peft.tuners.lora import LoraLayer as PeftLoraLayer
        except ImportError:  # pragma: no cover - peft is a dependency
            PeftLoraLayer = ()
        for name, mod in self._model.named_modules():
            if not isinstance(mod, PeftLoraLayer):
                continue
            active = list(getattr(mod, "active_adapters", []))
            mergeable = (
                len(active) == 1
                and isinstance(mod.base_layer, nn.Linear)
                and not getattr(mod, "fan_in_fan_out", False)
                and not mod.merged
                and active[0] in mod.lora_A
                and active[0] not in getattr(mod, "lora_variant", {})  # DoRA etc.
            )
            if not mergeable:
                out = []
                break
            out.append((name, mod, active[0]))
        self._layers = out
        return out

    def only(self, params: Mapping[str, torch.Tensor]) -> bool:
        """True when `params` are exactly the LoRA pairs (plain linear LoRA)."""
        layers = self.layers()
        names = {key for n, _, a in layers for key in pair_keys(n, a)}
        return bool(layers) and set(params) == names

    def merged(self, params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
        """`params` with each LoRA pair folded into its base weight, or None when not possible."""
        layers = self.layers()
        if not layers:
            return None
        merged = dict(params)
        for name, mod, adapter in layers:
            a_key, b_key = pair_keys(name, adapter)
            if a_key not in params or b_key not in params:
                return None
            # in master precision, rounded once: a bf16 product-then-sum rounds three times
            base = mod.base_layer.weight
            work = master_dtype(base.dtype)
            delta = (params[b_key].to(work) @ params[a_key].to(work)) * mod.scaling[adapter]
            merged[f"{name}.base_layer.weight"] = (base.to(work) + delta).to(base.dtype)
        return merged

    @contextlib.contextmanager
    def branches_off(self) -> Iterator[None]:
        """Temporarily disable the LoRA side branches (their weights are then merged in)."""
        layers = self.layers()
        flags = [mod._disable_adapters for _, mod, _ in layers]
        try:
            for _, mod, _ in layers:
                mod._disable_adapters = True
            yield
        finally:
            for (_, mod, _), flag in zip(layers, flags, strict=True):
                mod._disable_adapters = flag
