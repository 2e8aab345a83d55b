"""Pretraining stand-in: give the random benchmark VLMs the skills a pretrained VLM brings.

Real VLMs combine a separately pretrained vision encoder (CLIP, SigLIP) with a language model and
then align them on captions. We mirror both steps on DigitMath's clean caption split:

1. `pretrain_vision`: the vision tower + merger learn to name the digit under each image token,
   through a temporary linear head (three-digit images only: their three 28-px cells are exactly
   the three merged image tokens). This is the "pretrained encoder".
2. Caption training (`target.train_model` with every parameter trainable): the whole model learns
   to write "The digits are 2, 0 and 1." from the image.

Without step 1, tiny models trained on captions alone stayed at chance on the digits for ~1,300
steps (they learn the caption's wording and the digit marginals, not the image) -- more steps than
a CPU benchmark can afford.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ostselect.data.sample import Sample


def _merged_image_features(hf_model: Any, pixel_values, grid) -> torch.Tensor:
    """[n_images * tokens_per_image, hidden]: what replaces the image tokens in the LM input."""
    out = hf_model.model.get_image_features(pixel_values=pixel_values, image_grid_thw=grid)
    feats = getattr(out, "pooler_output", out)
    return torch.cat(list(feats)) if isinstance(feats, list | tuple) else feats


def cell_aligned(samples: Sequence[Sample]) -> list[tuple[Sample, list[int]]]:
    """Caption samples with three digits (one per image token) and those digits."""
    out = []
    for s in samples:
        answer = str(s.extra.get("answer", ""))
        if len(answer) == 3 and answer.isdigit() and len(s.images) == 1:
            out.append((s, [int(c) for c in answer]))
    return out


def pretrain_vision(
    proxy: Any,
    captions: Sequence[Sample],
    *,
    epochs: int = 3,
    lr: float = 3e-3,
    batch_size: int = 32,
    seed: int = 0,
) -> dict[str, float]:
    """Train the vision tower + merger of a Qwen2-VL-style `proxy` to classify each cell's digit.

    Returns steps, wall time and the training accuracy of the last epoch.
    """
    items = cell_aligned(captions)
    if not items:
        raise ValueError("no three-digit caption samples to pretrain the vision tower on")
    hf = proxy.hf_model
    processor = proxy.processor.image_processor
    visual = hf.model.visual
    hidden = hf.config.text_config.hidden_size
    torch.manual_seed(seed)
    head = nn.Linear(hidden, 10)
    params = list(visual.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    rng = random.Random(seed)
    visual.train()
    start = time.perf_counter()
    steps, correct, seen = 0, 0, 0
    for _ in range(epochs):
        order = items[:]
        rng.shuffle(order)
        correct = seen = 0
        for begin in range(0, len(order), batch_size):
            chunk = order[begin : begin + batch_size]
            enc = processor(images=[s.images[0].open() for s, _ in chunk], return_tensors="pt")
            labels = torch.tensor([d for _, digits in chunk for d in digits])
            feats = _merged_image_features(hf, enc["pixel_values"], enc["image_grid_thw"])
            if feats.shape[0] != labels.shape[0]:
                raise ValueError(
                    f"expected one image token per digit cell, got {feats.shape[0]} tokens for "
                    f"{labels.shape[0]} digits: the processor must keep the 84x28 canvas"
                )
            logits = head(feats)
            loss = nn.functional.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
            correct += int((logits.argmax(-1) == labels).sum())
            seen += labels.numel()
    visual.eval()
    optimizer.zero_grad(set_to_none=True)
    return {
        "steps": steps,
        "wall_s": round(time.perf_counter() - start, 2),
        "train_cell_accuracy": correct / max(1, seen),
    }
