"""Samples -> model inputs + labels, with the one loss-masking rule of ostselect.

Supervised tokens are the assistant turns only. We find them from the chat template itself: for
each assistant turn, the text rendered for the conversation up to that turn *with the generation
prompt* is where the answer starts, and the text rendered through that turn is where it ends
(trailing whitespace excluded). Those character spans are mapped to tokens of the unexpanded text
(offset mapping) and then onto the processor's output, whose image placeholders were expanded, by
aligning the two id sequences.
This works for any template that renders conversations prefix-stably, ours and the stock ones.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ostselect.data.sample import IMAGE_PLACEHOLDER, Sample

IGNORE_INDEX = -100


class CollateError(ValueError):
    """A sample the proxy cannot turn into a supervised sequence (the message names it)."""


def sample_messages(sample: Sample) -> list[dict[str, Any]]:
    """HF chat messages with `{"type": "image"}` items where the sample has `<image>`."""
    messages = []
    for turn in sample.turns:
        parts: list[dict[str, Any]] = []
        for i, piece in enumerate(turn.content.split(IMAGE_PLACEHOLDER)):
            if i > 0:
                parts.append({"type": "image"})
            if piece:
                parts.append({"type": "text", "text": piece})
        messages.append({"role": turn.role, "content": parts})
    return messages


def _where(sample: Sample) -> str:
    return f"sample {sample.id!r}" + (f" ({sample.source})" if sample.source else "")


def assistant_char_spans(processor: Any, sample: Sample) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the [start, end) character spans of its assistant answers."""
    messages = sample_messages(sample)
    render = processor.apply_chat_template
    full = render(messages, tokenize=False)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        if any(c["type"] == "image" for c in m["content"]):
            raise CollateError(
                f"{_where(sample)}: images inside an assistant turn are not supported"
            )
        prompt = render(messages[:i], tokenize=False, add_generation_prompt=True)
        through = render(messages[: i + 1], tokenize=False)
        if not (
            full.startswith(prompt) and full.startswith(through) and through.startswith(prompt)
        ):
            raise CollateError(
                f"{_where(sample)}: the chat template does not render turn {i} as a prefix of the "
                "whole conversation, so the assistant span cannot be located"
            )
        end = len(through.rstrip())
        if end > len(prompt):
            spans.append((len(prompt), end))
    if not spans:
        raise CollateError(f"{_where(sample)}: no assistant text to supervise")
    return full, spans


def _supervised_token_flags(tokenizer: Any, text: str, spans: list[tuple[int, int]]):
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    flags = [any(s <= start < e for s, e in spans) for start, _ in enc["offset_mapping"]]
    return enc["input_ids"], flags


def _map_flags(plain: list[int], flags: list[bool], expanded: list[int], where: str) -> list[bool]:
    """Carry per-token flags from the unexpanded ids onto the processor's (image-expanded) ids."""
    if plain == expanded:
        return list(flags)
    out = [False] * len(expanded)
    matched = 0
    matcher = difflib.SequenceMatcher(None, plain, expanded, autojunk=False)
    for a, b, n in matcher.get_matching_blocks():
        for k in range(n):
            if flags[a + k]:
                out[b + k] = True
                matched += 1
    if matched != sum(flags):
        raise CollateError(
            f"{where}: could not align the assistant tokens with the processor output"
        )
    return out


@dataclass
class Batch:
    """Processor outputs (`inputs`, right-padded) plus `labels` with non-supervised ids = -100."""

    inputs: dict[str, Any]
    labels: Any  # LongTensor [B, L]
    ids: list[str]

    def __len__(self) -> int:
        return len(self.ids)


def collate(processor: Any, samples: Sequence[Sample], dtype: Any = None, device: Any = "cpu"):
    """Render, tokenize, expand images and mask a batch (right padding)."""
    import torch

    if not samples:
        raise CollateError("empty batch")
    tokenizer = processor.tokenizer
    tokenizer.padding_side = "right"
    texts, span_sets, images = [], [], []
    for s in samples:
        text, spans = assistant_char_spans(processor, s)
        n_slots = sum(t.content.count(IMAGE_PLACEHOLDER) for t in s.turns)
        if n_slots != len(s.images):
            raise CollateError(
                f"{_where(s)}: {n_slots} {IMAGE_PLACEHOLDER} placeholders "
                f"but {len(s.images)} images"
            )
        texts.append(text)
        span_sets.append(spans)
        images.append([im.open() for im in s.images])
    # padding_side too: some processors (InternVL) default to left padding over the tokenizer's
    kwargs: dict[str, Any] = {
        "text": texts,
        "return_tensors": "pt",
        "padding": True,
        "padding_side": "right",
    }
    if any(images):
        if not all(images):
            kwargs["images"] = [im for ims in images for im in ims]
        else:
            kwargs["images"] = images
    enc = processor(**kwargs, add_special_tokens=False)
    input_ids, attention = enc["input_ids"], enc["attention_mask"]
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    for b, s in enumerate(samples):
        plain, flags = _supervised_token_flags(tokenizer, texts[b], span_sets[b])
        n = int(attention[b].sum())
        expanded = input_ids[b, :n].tolist()
        mapped = _map_flags(plain, flags, expanded, _where(s))
        sup = torch.tensor(mapped, dtype=torch.bool)
        labels[b, :n] = torch.where(sup, input_ids[b, :n], IGNORE_INDEX)
    inputs = {}
    for k, v in enc.items():
        if isinstance(v, torch.Tensor):
            if v.is_floating_point() and dtype is not None:
                v = v.to(dtype)
            v = v.to(device)
        inputs[k] = v
    return Batch(inputs=inputs, labels=labels.to(device), ids=[s.id for s in samples])
