"""Per-sample losses of a prepared batch: the trainable tail of the forward pass and its CE.

`per_sample_loss` runs only what `prepare` could not cache (the trainable layers, the final norm
and the LM head at supervised positions). With parameters given it is a pure function of them
(`torch.func.functional_call` over `LossTail`), so it can be differentiated and vmapped; without
grad it takes the cheapest exact route (LoRA merged, fused attention). `reference_loss` is the
plain HF forward that tests and the naive scorer compare against.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from ostselect.data.sample import Sample
from ostselect.precision import LOW_PRECISION
from ostselect.proxy.collate import IGNORE_INDEX
from ostselect.proxy.params import find_text_model
from ostselect.proxy.prefix import Prepared

if TYPE_CHECKING:
    from ostselect.proxy.model import Proxy


class LossTail(nn.Module):
    """Holds the model as a submodule so `functional_call` can swap its parameters."""

    def __init__(self, proxy: Proxy):
        super().__init__()
        self.model = proxy.model
        self._proxy = [proxy]  # a list hides the proxy from nn.Module registration

    def forward(self, prepared: Prepared) -> torch.Tensor:
        return tail_loss(self._proxy[0], prepared)


def causal_padding_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive [B, 1, L, L] mask (0 = attend, dtype min = blocked), as HF's eager path has it."""
    length = attention_mask.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=attention_mask.device).tril()
    allowed = causal[None, None] & attention_mask[:, None, None, :].bool()
    zeros = torch.zeros(allowed.shape, dtype=dtype, device=attention_mask.device)
    return zeros.masked_fill(~allowed, torch.finfo(dtype).min)


@contextlib.contextmanager
def attention_kernel(hf_model: nn.Module, implementation: str) -> Iterator[None]:
    """Temporarily switch the language model's attention kernel (config-driven in HF)."""
    text = find_text_model(hf_model)
    configs = {id(c): c for m in text.layers.modules() if (c := getattr(m, "config", None))}
    saved = {k: c._attn_implementation for k, c in configs.items()}
    try:
        for c in configs.values():
            c._attn_implementation = implementation
        yield
    finally:
        for k, c in configs.items():
            c._attn_implementation = saved[k]


def per_sample_loss(
    proxy: Proxy, prepared: Prepared, params: Mapping[str, torch.Tensor] | None = None
) -> torch.Tensor:
    """[B] mean cross-entropy over each sample's assistant tokens (the frozen prefix reused)."""
    if params is None:
        return tail_loss(proxy, prepared)
    if not torch.is_grad_enabled():  # evaluation only (the exact scorer's anchor passes)
        return evaluate(proxy, prepared, params)
    swapped = {f"model.{k}": v for k, v in params.items()}
    return torch.func.functional_call(proxy.loss_tail, swapped, (prepared,), strict=False)


def evaluate(proxy: Proxy, prepared: Prepared, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The same function as the differentiable path, computed the cheapest exact way:
    LoRA folded into the base weights (W + s*B@A, no side branch per call), and fused SDPA
    attention. A float64 model keeps the kernel it was loaded with (SDPA by default, so
    float64 throughout; an explicitly eager one then matches its eager naive reference)."""
    merged = proxy.lora_adapters.merged(params)
    swapped = {f"model.{k}": v for k, v in (merged or params).items()}
    with contextlib.ExitStack() as stack:
        if merged is not None:
            stack.enter_context(proxy.lora_adapters.branches_off())
        if proxy.dtype != torch.float64 and prepared.hidden is not None:
            stack.enter_context(attention_kernel(proxy.hf_model, "sdpa"))
        return torch.func.functional_call(proxy.loss_tail, swapped, (prepared,), strict=False)


def tail_loss(proxy: Proxy, prepared: Prepared) -> torch.Tensor:
    """[B] losses with the live parameters, from the layers `prepare` could not cache."""
    if prepared.hidden is None:  # something outside the LM trains: full forward
        logits = proxy.model(**prepared.batch.inputs, use_cache=False).logits
        picked = logits[prepared.sup_batch, prepared.sup_pos]
        return weighted_ce(picked, prepared)
    text = find_text_model(proxy.hf_model)
    hidden = prepared.hidden
    if prepared.embed_trainable:
        embeds = text.embed_tokens(prepared.input_ids)
        hidden = torch.where(prepared.image_mask[..., None], hidden, embeds)
    mask = causal_padding_mask(prepared.attention_mask, hidden.dtype)
    residuals = prepared.residuals
    for i in range(prepared.start_layer, len(text.layers)):
        layer = text.layers[i]
        hidden = layer(hidden, attention_mask=mask, use_cache=False, **prepared.layer_kwargs)
        if isinstance(hidden, tuple):
            hidden = hidden[0]
        if residuals is not None and i < residuals.shape[0]:
            hidden = hidden + residuals[i]
    hidden = text.norm(hidden)
    picked = hidden[prepared.sup_batch, prepared.sup_pos]
    return weighted_ce(proxy.hf_model.get_output_embeddings()(picked), prepared)


def weighted_ce(logits: torch.Tensor, prepared: Prepared) -> torch.Tensor:
    """Token CE at supervised positions, averaged per sample (bf16/fp16 logits upcast).

    A masked sum, not `weights @ ce`: 0 * NaN is NaN, and one sample's non-finite loss must
    not reach its batch neighbours (candidates are differentiated as a batch)."""
    if logits.dtype in LOW_PRECISION:
        logits = logits.float()
    ce = nn.functional.cross_entropy(logits, prepared.targets, reduction="none")
    weights = prepared.weights.to(ce.dtype)
    return torch.where(weights != 0, weights * ce, 0.0).sum(dim=1)


def reference_loss(proxy: Proxy, samples: Sequence[Sample]) -> torch.Tensor:
    """The independent reference: plain `model(**inputs)` on a fresh batch, same masking."""
    batch = proxy.collate(samples)
    logits = proxy.model(**batch.inputs, use_cache=False).logits
    return masked_per_sample_loss(logits, batch.labels)


def masked_per_sample_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample mean CE over positions whose label is not -100 (causal shift applied here)."""
    shift_logits = logits[:, :-1]
    if shift_logits.dtype in LOW_PRECISION:
        shift_logits = shift_logits.float()
    shift_labels = labels[:, 1:]
    ce = nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(shift_labels.shape)
    counts = (shift_labels != IGNORE_INDEX).sum(dim=1)
    return ce.sum(dim=1) / counts.to(ce.dtype)
