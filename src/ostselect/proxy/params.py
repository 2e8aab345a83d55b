"""Which parameters move: "all" (the language model), "lora" (peft), or a regex over names.

Everything not selected gets requires_grad=False; the vision tower moves only when a regex names it.
The frozen parts are what `Proxy.prepare` caches.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from ostselect.proxy.families import DEFAULT_LORA_TARGETS, Family, family_for_model_type


@dataclass
class ParamsSpec:
    """The trainable-parameter selection, stored in ostselect.json so it travels with the folder."""

    params: str = "all"  # "all" | "lora" | a regex over parameter names
    lora_targets: list[str] | None = None
    lora_rank: int = 8
    lora_layers: str = "all"  # "all" | "top-half"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        if self.params != "lora":
            for k in ("lora_targets", "lora_rank", "lora_layers"):
                d.pop(k)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> ParamsSpec:
        d = dict(d or {})
        known = {k: d.pop(k) for k in list(d) if k in cls.__dataclass_fields__}
        return cls(**known)

    def describe(self, default_targets: tuple[str, ...] = DEFAULT_LORA_TARGETS) -> str:
        """One line; `default_targets` are the family's, used when no targets were given."""
        if self.params == "lora":
            targets = ",".join(self.lora_targets or default_targets)
            return f"lora(r={self.lora_rank}, layers={self.lora_layers}, targets={targets})"
        return self.params


def family_of(model) -> Family | None:
    """The registered family of a transformers model (None: generic discovery)."""
    config = getattr(model, "config", None)
    return family_for_model_type(getattr(config, "model_type", "")) if config else None


def default_lora_targets(model) -> tuple[str, ...]:
    family = family_of(model)
    return family.lora_targets if family is not None else DEFAULT_LORA_TARGETS


def find_text_model(model):
    """The decoder stack (has `.layers`, `.norm`, `.embed_tokens`) inside a VLM: the family's
    own lookup when it has one, else the usual attribute names."""
    family = family_of(model)
    if family is not None and family.find_text_model is not None:
        return family.find_text_model(model)
    inner = getattr(model, "model", model)
    for name in ("language_model", "text_model"):
        sub = getattr(inner, name, None)
        if sub is not None and hasattr(sub, "layers"):
            return sub
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if decoder is not None and hasattr(decoder, "layers"):
        return decoder
    raise ValueError(f"cannot find the language model's decoder layers in {type(model).__name__}")


def module_prefix(root, target) -> str:
    for name, mod in root.named_modules():
        if mod is target:
            return name
    raise ValueError("module not found in model")


def select_all(model) -> None:
    """Language model (embeddings, layers, norm, head) trainable; vision + projector frozen."""
    text = find_text_model(model)
    lm_ids = {id(p) for p in text.parameters()}
    head = model.get_output_embeddings()
    if head is not None:
        lm_ids |= {id(p) for p in head.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in lm_ids)


def select_regex(model, pattern: str) -> None:
    rx = re.compile(pattern)
    hits = 0
    for name, p in model.named_parameters():
        on = rx.search(name) is not None
        p.requires_grad_(on)
        hits += on
    if hits == 0:
        raise ValueError(f"--params regex {pattern!r} matches no parameter name")


LORA_INIT_SEED = 0


def apply_lora(model, spec: ParamsSpec):
    """Wrap `model` in a fresh peft LoRA on the LM's decoder layers (dropout 0: exact scores).

    The fresh A matrices are drawn from a fixed seed (without touching the global RNG), so every
    load of the same folder (each Ray worker, each resumed run) scores with the same parameters.
    """
    import torch
    from peft import LoraConfig, get_peft_model

    text = find_text_model(model)
    prefix = re.escape(module_prefix(model, text))
    n_layers = len(text.layers)
    layers = range(n_layers // 2, n_layers) if spec.lora_layers == "top-half" else range(n_layers)
    if spec.lora_layers not in ("all", "top-half"):
        raise ValueError(f"lora_layers must be 'all' or 'top-half', not {spec.lora_layers!r}")
    targets = spec.lora_targets or list(default_lora_targets(model))
    layer_alt = "|".join(map(str, layers))
    target_alt = "|".join(map(re.escape, targets))
    regex = rf"{prefix}\.layers\.({layer_alt})\..*\b({target_alt})"
    for p in model.parameters():
        p.requires_grad_(False)
    config = LoraConfig(
        r=spec.lora_rank,
        lora_alpha=2 * spec.lora_rank,
        lora_dropout=0.0,
        target_modules=regex,
        bias="none",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(LORA_INIT_SEED)
        return get_peft_model(model, config)
