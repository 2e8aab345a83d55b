"""Train a benchmark model on samples, generate answers greedily, and grade them by exact match.

Training reuses the warm-up trainer (`ostselect.proxy.warmup.train_steps`: AdamW + cosine,
per-sample mean loss over the assistant tokens), so pretraining, proxy warm-up and target
fine-tuning are one training loop with one loss-masking rule.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ostselect.bench.metrics import Accuracy, exact_match
from ostselect.data.sample import Sample


@dataclass
class TrainRun:
    """What one training run did (for the results table: steps and wall time per row)."""

    steps: int
    samples: int
    epochs: int
    wall_s: float
    first_loss: float | None = None
    last_loss: float | None = None
    schedule_steps: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


def train_model(
    proxy: Any,
    samples: Sequence[Sample],
    *,
    lr: float,
    batch_size: int,
    epochs: int | None = None,
    total_steps: int | None = None,
    seed: int = 0,
    warmup_ratio: float = 0.05,
    weight_decay: float = 0.0,
) -> TrainRun:
    """Train `proxy`'s trainable parameters in place: `epochs` passes, or exactly `total_steps`.

    With `total_steps` (Protocol B), the data are repeated as often as needed and the cosine
    schedule spans exactly `total_steps`; with `epochs` (Protocol A) it spans the epochs.
    """
    from ostselect.proxy.warmup import WarmupConfig, train_steps

    if (epochs is None) == (total_steps is None):
        raise ValueError("give exactly one of epochs or total_steps")
    samples = list(samples)
    if not samples:
        raise ValueError("no samples to train on")
    per_epoch = math.ceil(len(samples) / batch_size)
    if total_steps is not None:
        n_epochs = max(1, math.ceil(total_steps / per_epoch))
        schedule = total_steps
    else:
        n_epochs = int(epochs)  # type: ignore[arg-type]
        schedule = per_epoch * n_epochs
    config = WarmupConfig(
        fraction=1.0,
        lr=lr,
        batch_size=batch_size,
        epochs=n_epochs,
        seed=seed,
        weight_decay=weight_decay,
        warmup_ratio=warmup_ratio,
        schedule_steps=schedule,
    )
    torch.manual_seed(seed)
    start = time.perf_counter()
    result = train_steps(proxy, samples, config, max_steps=total_steps)
    wall = time.perf_counter() - start
    proxy.model.eval()
    return TrainRun(
        steps=result.steps,
        samples=len(samples),
        epochs=n_epochs,
        wall_s=wall,
        first_loss=result.losses[0] if result.losses else None,
        last_loss=result.losses[-1] if result.losses else None,
        skipped=result.skipped,
        schedule_steps=result.schedule_steps,
    )


def _prompt_messages(sample: Sample) -> list[dict[str, Any]]:
    """The conversation up to (not including) the first assistant turn, as HF chat messages."""
    from ostselect.proxy.collate import sample_messages

    messages = sample_messages(sample)
    first = next(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return messages[:first]


@torch.no_grad()
def generate_answers(
    proxy: Any, samples: Sequence[Sample], *, max_new_tokens: int = 48, batch_size: int = 32
) -> list[str]:
    """Greedy completions of each sample's prompt (left-padded batches, stop at end of turn)."""
    processor = proxy.processor
    tokenizer = processor.tokenizer
    model = proxy.hf_model
    model.eval()
    eos = model.config.text_config.eos_token_id if hasattr(model.config, "text_config") else None
    eos = eos if eos is not None else tokenizer.eos_token_id
    outputs: list[str] = []
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for begin in range(0, len(samples), batch_size):
            chunk = samples[begin : begin + batch_size]
            texts = [
                processor.apply_chat_template(
                    _prompt_messages(s), tokenize=False, add_generation_prompt=True
                )
                for s in chunk
            ]
            images = [[im.open() for im in s.images] for s in chunk]
            enc = processor(
                text=texts,
                images=images if any(images) else None,
                return_tensors="pt",
                padding=True,
                add_special_tokens=False,
            )
            enc = {
                k: v.to(proxy.device) if isinstance(v, torch.Tensor) else v for k, v in enc.items()
            }
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=eos,
                pad_token_id=tokenizer.pad_token_id,
            )
            new = out[:, enc["input_ids"].shape[1] :]
            outputs.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = old_side
    return outputs


def evaluate(
    proxy: Any,
    samples: Sequence[Sample],
    *,
    max_new_tokens: int = 48,
    batch_size: int = 32,
) -> tuple[Accuracy, list[str]]:
    """Exact match of the extracted final answer on clean samples that carry `extra['answer']`."""
    outputs = generate_answers(proxy, samples, max_new_tokens=max_new_tokens, batch_size=batch_size)
    answers = [str(s.extra["answer"]) for s in samples]
    categories = [str(s.extra.get("category", "")) for s in samples]
    return exact_match(outputs, answers, categories), outputs


def caption_accuracy(proxy: Any, captions: Sequence[Sample], *, batch_size: int = 50) -> float:
    """Share of caption samples whose generated digits sentence names exactly the right digits
    (how well pretraining taught the model to read)."""
    from ostselect.bench.tasks import extract_digits

    outputs = generate_answers(proxy, captions, max_new_tokens=16, batch_size=batch_size)
    truth = [tuple(int(c) for c in str(s.extra["answer"])) for s in captions]
    hits = [extract_digits(o) == t for o, t in zip(outputs, truth, strict=True)]
    return sum(hits) / max(1, len(hits))
