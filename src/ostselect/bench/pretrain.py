"""Pretraining stand-in: give the random benchmark VLMs the skills a pretrained VLM brings.

Real VLMs combine a separately pretrained vision encoder (CLIP, SigLIP) with a language model that
already knows arithmetic, and align the two on captions with the encoder frozen. We mirror that:

1. `pretrain_reader`: the vision tower + merger learn, through a temporary linear head, to name
   what each merged image token sees: (its cell, the digit or "blank"), a 33-way label. Every
   DigitMath image puts one digit per 28-px cell, and each merged token is exactly one cell.
   Naming the cell too matters: a position-blind 11-way reader left the language model unable to
   tell "3 5" from "5 3" (22% of captions read in a prototype).
2. The reader is then **frozen** for good (`params="all"` trains the language model only), so
   caption alignment cannot undo it and overfit (it did when the tower trained along).
3. Language-model pretraining on captions ("The digits are 2, 0 and 1.") plus every text-only
   arithmetic fact the tasks use (`tasks.arithmetic_facts`), until held-out caption reading and
   text arithmetic pass their gates (`bench.gates`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ostselect.bench.digits import N_CELLS
from ostselect.bench.tasks import FACT, arithmetic_facts
from ostselect.data.sample import Sample, Turn

BLANK = 10  # reader class of an empty cell; classes per cell: digits 0-9 and blank


def _merged_image_features(hf_model: Any, pixel_values, grid) -> torch.Tensor:
    """[n_images * tokens_per_image, hidden]: what replaces the image tokens in the LM input."""
    out = hf_model.model.get_image_features(pixel_values=pixel_values, image_grid_thw=grid)
    feats = getattr(out, "pooler_output", out)
    return torch.cat(list(feats)) if isinstance(feats, list | tuple) else feats


def cell_labels(sample: Sample) -> list[int]:
    """The reader's label per cell: cell * 11 + (digit, or `BLANK` for an empty cell)."""
    digits = [int(c) for c in str(sample.extra["answer"])]
    cells = [int(c) for c in sample.extra["cells"]]
    content = [BLANK] * N_CELLS
    for cell, d in zip(cells, digits, strict=True):
        content[cell] = d
    return [cell * (BLANK + 1) + c for cell, c in enumerate(content)]


def _reader_batches(proxy: Any, samples: Sequence[Sample], batch_size: int):
    processor = proxy.processor.image_processor
    for begin in range(0, len(samples), batch_size):
        chunk = samples[begin : begin + batch_size]
        enc = processor(images=[s.images[0].open() for s in chunk], return_tensors="pt")
        labels = torch.tensor([y for s in chunk for y in cell_labels(s)])
        yield enc, labels


def _features(hf: Any, enc: Any, n_labels: int) -> torch.Tensor:
    feats = _merged_image_features(hf, enc["pixel_values"], enc["image_grid_thw"])
    if feats.shape[0] != n_labels:
        raise ValueError(
            f"expected one image token per 28-px cell, got {feats.shape[0]} tokens for "
            f"{n_labels} cells: the processor must keep the 84x28 canvas"
        )
    return feats


@torch.no_grad()
def reader_accuracy(proxy: Any, head: nn.Module, samples: Sequence[Sample]) -> float:
    """Share of cells (digit or blank, position included) the reader names right."""
    hf = proxy.hf_model
    correct = seen = 0
    for enc, labels in _reader_batches(proxy, samples, 64):
        logits = head(_features(hf, enc, labels.numel()))
        correct += int((logits.argmax(-1) == labels).sum())
        seen += labels.numel()
    return correct / max(1, seen)


def pretrain_reader(
    proxy: Any,
    captions: Sequence[Sample],
    heldout: Sequence[Sample],
    *,
    epochs: int = 8,
    lr: float = 3e-3,
    batch_size: int = 32,
    seed: int = 0,
) -> dict[str, float]:
    """Train the vision tower + merger of a Qwen2-VL-style `proxy` as a per-cell digit reader,
    then freeze it. Returns steps, wall time, the last epoch's training accuracy and the
    held-out per-cell accuracy (the reader gate)."""
    if not captions:
        raise ValueError("no caption samples to pretrain the digit reader on")
    hf = proxy.hf_model
    visual = hf.model.visual
    hidden = hf.config.text_config.hidden_size
    torch.manual_seed(seed)
    head = nn.Linear(hidden, N_CELLS * (BLANK + 1))
    params = list(visual.parameters()) + list(head.parameters())
    for p in visual.parameters():
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    rng = random.Random(seed)
    visual.train()
    start = time.perf_counter()
    steps, correct, seen = 0, 0, 0
    try:
        for _ in range(epochs):
            order = list(captions)
            rng.shuffle(order)
            correct = seen = 0
            for enc, labels in _reader_batches(proxy, order, batch_size):
                logits = head(_features(hf, enc, labels.numel()))
                loss = nn.functional.cross_entropy(logits, labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                steps += 1
                correct += int((logits.argmax(-1) == labels).sum())
                seen += labels.numel()
    finally:
        visual.eval()
        optimizer.zero_grad(set_to_none=True)
        for p in visual.parameters():  # frozen from here on: alignment must not undo it
            p.requires_grad_(False)
    return {
        "steps": steps,
        "wall_s": round(time.perf_counter() - start, 2),
        "train_cell_accuracy": correct / max(1, seen),
        "heldout_cell_accuracy": reader_accuracy(proxy, head, heldout) if heldout else float("nan"),
    }


# How often each category's facts come up per round of `fact_samples`: reading a number is a
# copy and is learned from one pass; the few add/compare/sub facts (100/90/55) and multi's two
# steps and negative results need many (measured with `tasks.arithmetic_facts` per category).
FACT_REPEATS = {"read": 1, "add": 4, "sub": 6, "compare": 3, "multi": 3}


def fact_samples(n: int, seed: int) -> list[Sample]:
    """`n` text-only fact samples, round after round, each round every fact `FACT_REPEATS`
    times in a seeded order.

    Every other sample drops the digits from the question ("What is their sum?"), so the
    digits appear only in the solution's own digits sentence, as in an image problem, where
    the prompt holds image tokens instead: the arithmetic must then be done from the
    solution's digits, the context it is used in after the fine-tune. Without these the
    fine-tune had to re-learn each step in the image context, and whether it did tipped from
    seed to seed (docs/benchmark.md, "Seed spread"). The gate still asks every fact with its
    digits (`all_fact_samples`).
    """
    facts = arithmetic_facts()
    rounds = [j for j, f in enumerate(facts) for _ in range(FACT_REPEATS[fact_category(f[0])])]
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xFAC7]))
    out: list[Sample] = []
    while len(out) < n:
        for j in rng.permutation(rounds):
            if len(out) == n:
                break
            q, text, answer = facts[int(j)]
            if len(out) % 2:
                q = q.split(". ", 1)[1]  # the question without its digits sentence
            out.append(
                Sample(
                    id=f"fact-{len(out):05d}",
                    turns=[Turn("user", q), Turn("assistant", text)],
                    images=[],
                    extra={"category": FACT, "answer": answer},
                )
            )
    return out


def fact_category(question: str) -> str:
    """The task category of a fact's question (`tasks.TEXT_QUESTIONS` tells them apart)."""
    from ostselect.bench.tasks import TEXT_QUESTIONS

    return next(c for c, q in TEXT_QUESTIONS.items() if question.endswith(q))


def all_fact_samples() -> list[Sample]:
    """Every arithmetic fact once (the text-arithmetic gate grades all of them)."""
    return [
        Sample(
            id=f"fact-all-{i:03d}",
            turns=[Turn("user", q), Turn("assistant", text)],
            images=[],
            extra={"category": FACT, "answer": answer},
        )
        for i, (q, text, answer) in enumerate(arithmetic_facts())
    ]


def tokenizer_extras() -> list[str]:
    """Every question phrasing and solution wording of the tasks, for the tokenizer's corpus.

    The tokenizer is trained on captions, facts and these, never on the pool: pretrained models
    then depend on the pretraining data alone, so every pool size and noise setting (`ost demo`
    and `ost bench run` alike) shares one cached pair of models.
    """
    from ostselect.bench.tasks import CATEGORIES, QUESTIONS, solution_text

    examples = {
        "read": (4, 2, 7),
        "add": (3, 5),
        "sub": (9, 4),
        "compare": (2, 6),
        "multi": (1, 8, 3),
    }
    out = [q for qs in QUESTIONS.values() for q in qs]
    out += [solution_text(c, examples[c]) for c in CATEGORIES]
    return out
