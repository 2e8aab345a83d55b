"""The frozen prefix: what `Proxy.prepare` computes once per batch and every loss then reuses.

Scoring evaluates the same anchors under many parameter perturbations, so everything that cannot
change (vision tower + projector, 3-D rotary position ids, layers below the lowest trainable one)
runs once, without grad, and is captured by forward hooks into a `Prepared`. `layout` decides
where the trainable part starts; a family adapter only supplies `image_token_id` and
`layer_residuals` (proxy.families) and never touches this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import nn

from ostselect.data.sample import Sample
from ostselect.precision import master_dtype
from ostselect.proxy.collate import IGNORE_INDEX, Batch
from ostselect.proxy.params import default_lora_targets, family_of, find_text_model

if TYPE_CHECKING:
    from ostselect.proxy.model import Proxy


class _StopForward(Exception):
    """Raised by a hook to end a forward pass once the frozen prefix has been captured."""


@dataclass
class Prepared:
    """Frozen-prefix outputs for one batch; reused for every candidate step."""

    batch: Batch
    hidden: torch.Tensor | None  # [B, L, H] entering layer `start_layer` (None: vision trains)
    layer_kwargs: dict[str, Any]  # position_embeddings (cos, sin), position_ids for the layers
    attention_mask: torch.Tensor  # [B, L] padding mask; the 4-D mask is rebuilt per call
    input_ids: torch.Tensor
    image_mask: torch.Tensor  # [B, L] positions holding image features
    sup_batch: torch.Tensor  # [N] sample index of each supervised prediction
    sup_pos: torch.Tensor  # [N] position whose hidden state predicts a supervised token
    targets: torch.Tensor  # [N] the supervised token ids
    weights: torch.Tensor  # [B, N]: 1/count_b where sup_batch == b, so per-sample mean = W @ ce
    counts: torch.Tensor  # [B]
    start_layer: int
    embed_trainable: bool
    # [n, B, L, H] added to the hidden states after layer i < n (a family's `layer_residuals`,
    # e.g. Qwen3-VL's deepstack visual features); None for most families
    residuals: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.batch)


class Layout(NamedTuple):
    """Where the trainable part of the language model starts."""

    text: nn.Module  # the text model (embed_tokens, layers, norm)
    start: int  # lowest layer with a trainable parameter (len(layers): only norm / head train)
    embed: bool  # token embeddings train (then start is 0)
    other: list[str]  # trainable names outside the language model: nothing can be cached


def layout(proxy: Proxy) -> Layout:
    """(text model, lowest trainable layer, embeddings train?, names trainable elsewhere)."""
    hf = proxy.hf_model
    text = find_text_model(hf)
    layer_of = {}
    for i, layer in enumerate(text.layers):
        for p in layer.parameters():
            layer_of[id(p)] = i
    embed_ids = {id(p) for p in text.embed_tokens.parameters()}
    after_ids = {id(p) for p in text.norm.parameters()}
    head = hf.get_output_embeddings()
    after_ids |= {id(p) for p in head.parameters()}
    start, embed, other = len(text.layers), False, []
    for name, p in proxy.model.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) in layer_of:
            start = min(start, layer_of[id(p)])
        elif id(p) in embed_ids:
            embed, start = True, 0
        elif id(p) not in after_ids:
            other.append(name)
    return Layout(text, start, embed, other)


def describe_frozen(proxy: Proxy) -> str:
    """What is frozen (and hence cached by `prepare`), in words."""
    text, start, embed, other = layout(proxy)
    n_layers = len(text.layers)
    total = sum(p.numel() for p in proxy.model.parameters())
    trainable = sum(p.numel() for p in proxy.trainable_parameters().values())
    described = proxy.params_spec.describe(default_lora_targets(proxy.hf_model))
    lines = [f"params: {described} ({trainable:,} of {total:,} trainable)"]
    if other:
        lines.append(
            f"trainable outside the language model ({len(other)} tensors, e.g. {other[0]}): "
            "nothing is cached; every loss runs the full forward"
        )
        return "\n".join(lines)
    lines.append("frozen: vision tower + projector -> image embeddings cached once per batch")
    lines.append("cached: attention padding mask and (3-D) rotary position embeddings")
    if embed:
        lines.append("trainable: token embeddings -> text embeddings recomputed per call")
    elif start > 0:
        lines.append(
            f"frozen: embeddings and layers 0..{start - 1} of {n_layers} -> hidden states "
            f"entering layer {start} cached"
        )
    else:
        lines.append("frozen: token embeddings -> inputs embeddings cached")
    lines.append(f"computed per call: layers {start}..{n_layers - 1}, final norm, LM head")
    lines.append("LM head evaluated at supervised (assistant) positions only")
    return "\n".join(lines)


def image_token_id(hf_model: nn.Module) -> int | None:
    """The id of the tokens image features replace (the family's rule, else the config's)."""
    cfg = hf_model.config
    family = family_of(hf_model)
    if family is not None and family.image_token_id is not None:
        return family.image_token_id(cfg)
    for key in ("image_token_id", "image_token_index"):
        value = getattr(cfg, key, None)
        if value is not None:
            return int(value)
    return None


def supervision(
    labels: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Positions t whose logits predict labels[t+1] (the causal shift), and per-sample averaging:
    (sup_batch, sup_pos, targets, weights, counts) as in `Prepared`."""
    shifted = labels[:, 1:]
    sup_batch, sup_pos = (shifted != IGNORE_INDEX).nonzero(as_tuple=True)
    targets = shifted[sup_batch, sup_pos]
    counts = (shifted != IGNORE_INDEX).sum(dim=1)
    dtype = master_dtype(dtype)  # 1/count exactly enough (float32 for bf16/fp16 models)
    if (counts == 0).any():
        raise ValueError("a sample has no supervised tokens left after masking")
    weights = torch.zeros(labels.shape[0], sup_batch.numel(), dtype=dtype, device=labels.device)
    weights[sup_batch, torch.arange(sup_batch.numel(), device=labels.device)] = 1.0
    weights = weights / counts[:, None].to(dtype)
    return sup_batch, sup_pos, targets, weights, counts


@torch.no_grad()
def prepare(proxy: Proxy, samples: Sequence[Sample]) -> Prepared:
    """Collate `samples` and capture the frozen prefix: the hidden states entering the lowest
    trainable layer (or the final norm) and the layers' cached arguments."""
    batch = proxy.collate(samples)
    text, start, embed, other = layout(proxy)
    sup_batch, sup_pos, targets, weights, counts = supervision(batch.labels, proxy.dtype)
    input_ids = batch.inputs["input_ids"]
    image_id = image_token_id(proxy.hf_model)
    image_mask = input_ids == image_id if image_id is not None else torch.zeros_like(input_ids)
    common = dict(
        batch=batch,
        attention_mask=batch.inputs["attention_mask"],
        input_ids=input_ids,
        image_mask=image_mask.bool(),
        sup_batch=sup_batch,
        sup_pos=sup_pos,
        targets=targets,
        weights=weights,
        counts=counts,
        start_layer=start,
        embed_trainable=embed,
    )
    if other:
        return Prepared(hidden=None, layer_kwargs={}, **common)
    captured: dict[str, Any] = {}

    def at_text_model(_mod, _args, kwargs):
        captured["inputs_embeds"] = kwargs.get("inputs_embeds")
        captured["text_kwargs"] = kwargs

    def at_layer(_mod, args, kwargs):
        captured["hidden"] = args[0] if args else kwargs["hidden_states"]
        captured["kwargs"] = kwargs
        raise _StopForward

    def at_layer0(_mod, _args, kwargs):
        captured["kwargs"] = kwargs

    def at_norm(_mod, args):
        captured["hidden"] = args[0]
        raise _StopForward

    handles = [text.register_forward_pre_hook(at_text_model, with_kwargs=True)]
    if start < len(text.layers):
        handles.append(text.layers[start].register_forward_pre_hook(at_layer, with_kwargs=True))
    else:  # only norm / head train: capture the final hidden states
        handles.append(text.norm.register_forward_pre_hook(at_norm))
        handles.append(text.layers[0].register_forward_pre_hook(at_layer0, with_kwargs=True))
    try:
        proxy.hf_model.model(**batch.inputs, use_cache=False)
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    kw = captured["kwargs"]
    layer_kwargs = {
        "position_embeddings": kw.get("position_embeddings"),
        "position_ids": kw.get("position_ids"),
    }
    hidden = captured["hidden"]
    family = family_of(proxy.hf_model)
    residuals = None
    if family is not None and family.layer_residuals is not None:
        residuals = family.layer_residuals(captured["text_kwargs"], hidden)
    if embed:
        hidden = captured["inputs_embeds"]
        if not torch.equal(hidden, captured.get("hidden", hidden)):
            raise NotImplementedError(
                "this text model transforms its input embeddings before layer 0; "
                "train the embeddings with a regex that excludes them instead"
            )
        text_embeds = text.embed_tokens(input_ids)
        m = ~common["image_mask"]
        if not torch.equal(hidden[m], text_embeds[m]):
            raise NotImplementedError("cannot separate image features from token embeddings")
    return Prepared(hidden=hidden, layer_kwargs=layer_kwargs, residuals=residuals, **common)
