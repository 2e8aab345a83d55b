"""Warm-up: briefly train the proxy on a seeded random fraction of the pool; keep the AdamW state.

The paper's best proxy is the checkpoint after ~5% of training. We model that literally: the cosine
schedule spans a full run over the pool (`epochs` passes over every sample, unless `schedule_steps`
says otherwise) and the warm-up stops after its first `fraction` of samples. The saved
`OptimizerState` (moments, step count, and the scheduler's lr for the *next* step) lets the scorer
take exactly the AdamW step the uninterrupted run would take next. Per-batch loss = unweighted mean
of per-sample losses, the same convention as the anchor loss.

Low precision (`compute_dtype` bfloat16/float16) is mixed-precision training: the proxy stays in
float32 (its weights are the master copy, the AdamW moments float32 too) and the forward passes
run under `torch.autocast` to the low dtype, on CPU or CUDA alike; the saved folder holds float32
weights, which `ost score --dtype bfloat16` then loads and casts. No loss scaling: a proxy whose
float16 gradients underflow should warm up in bfloat16 (float32's exponent range).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ostselect.data.sample import Sample
from ostselect.precision import autocast_to, resolve_dtype
from ostselect.proxy.api import OptimizerState, ScoringModel


@dataclass
class WarmupConfig:
    fraction: float = 0.05
    lr: float = 1e-4
    batch_size: int = 8
    epochs: int = 1
    seed: int = 0
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_ratio: float = 0.03  # linear lr warm-up, as a fraction of the schedule
    schedule_steps: int | None = None  # default: a full run over the pool
    compute_dtype: str | None = None  # bfloat16/float16: autocast over float32 master weights

    def __post_init__(self) -> None:
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError("batch_size and epochs must be >= 1")
        if self.compute_dtype is not None:
            resolve_dtype(self.compute_dtype)  # refuse an unknown name before any work


@dataclass
class WarmupResult:
    state: OptimizerState
    trained_ids: list[str]
    steps: int
    losses: list[float] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (sample id, reason)
    schedule_steps: int = 0
    ramp_steps: int = 0  # linear lr ramp at the start of the schedule
    # mean loss of (up to MEASURE_SAMPLES of) the warm-up samples before and after `warmup`
    loss_before: float | None = None
    loss_after: float | None = None
    # the live run, so a caller can continue it exactly (tests compare step N+1 with the scorer's)
    optimizer: torch.optim.Optimizer | None = field(default=None, repr=False)
    scheduler: Any = field(default=None, repr=False)


def select_fraction(samples: Sequence[Sample], fraction: float, seed: int) -> list[Sample]:
    """A seeded random `fraction` of the pool (at least one sample), kept in pool order."""
    n = max(1, round(fraction * len(samples)))
    chosen = sorted(random.Random(seed).sample(range(len(samples)), n))
    return [samples[i] for i in chosen]


def cosine_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int):
    """transformers' `get_cosine_schedule_with_warmup` (same formula), without importing it."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _batches(samples: list[Sample], size: int, epochs: int, seed: int) -> Iterable[list[Sample]]:
    rng = random.Random(seed + 1)
    for _ in range(epochs):
        order = samples[:]
        rng.shuffle(order)
        for i in range(0, len(order), size):
            yield order[i : i + size]


def _prepare_usable(proxy: ScoringModel, batch: list[Sample], skipped: list[tuple[str, str]]):
    """Prepare a batch; a record that fails is skipped (and reported), the others still train."""
    try:
        return proxy.prepare(batch)
    except Exception:
        good = []
        for s in batch:
            try:
                proxy.prepare([s])
                good.append(s)
            except Exception as err:
                skipped.append((s.id, f"{type(err).__name__}: {err}"))
        return proxy.prepare(good) if good else None


def train_steps(
    proxy: ScoringModel,
    samples: Sequence[Sample],
    config: WarmupConfig,
    *,
    total_samples: int | None = None,
    progress: Callable[[int, float], None] | None = None,
    max_steps: int | None = None,
) -> WarmupResult:
    """Train the proxy's trainable parameters in place on `samples`; return the optimizer state.

    `total_samples` (the pool size) sets the schedule length; `max_steps` stops early (tests use it
    to compare N and N+1 steps of one run).
    """
    params = proxy.trainable_parameters()
    if not params:
        raise ValueError("the proxy has no trainable parameters: load it with a --params selection")
    first = next(iter(params.values()))
    if first.dtype == torch.float16:
        # torch's AdamW on float16 tensors flushes g * g to 0 and divides by eps
        raise ValueError(
            "cannot warm up float16 weights directly: load the proxy in float32 and set "
            "compute_dtype='float16' (mixed precision, float32 master weights)"
        )
    compute = resolve_dtype(config.compute_dtype) if config.compute_dtype else None
    samples = list(samples)
    steps_per_epoch = math.ceil(len(samples) / config.batch_size)
    if config.schedule_steps:  # an explicit schedule is exact (Protocol B: every row the same)
        total = config.schedule_steps
    else:
        total = math.ceil((total_samples or len(samples)) * config.epochs / config.batch_size)
        total = max(total, steps_per_epoch * config.epochs)
    optimizer = torch.optim.AdamW(
        list(params.values()),
        lr=config.lr,
        betas=config.betas,
        eps=config.eps,
        weight_decay=config.weight_decay,
    )
    ramp = round(config.warmup_ratio * total)
    scheduler = cosine_schedule(optimizer, ramp, total)
    result = WarmupResult(
        state=None,
        trained_ids=[s.id for s in samples],
        steps=0,  # type: ignore[arg-type]
        schedule_steps=total,
        ramp_steps=ramp,
    )
    module = getattr(proxy, "model", None)
    was_training = module.training if isinstance(module, torch.nn.Module) else None
    if isinstance(module, torch.nn.Module):
        module.train()
    try:
        for batch in _batches(samples, config.batch_size, config.epochs, config.seed):
            if max_steps is not None and result.steps >= max_steps:
                break
            with autocast_to(first.device, compute):
                prepared = _prepare_usable(proxy, batch, result.skipped)
                if prepared is None:
                    continue
                optimizer.zero_grad(set_to_none=True)
                loss = proxy.per_sample_loss(prepared).mean()
            if not torch.isfinite(loss):
                result.skipped.extend((s.id, "non-finite training loss") for s in batch)
                continue
            loss.backward()
            optimizer.step()
            scheduler.step()
            result.steps += 1
            result.losses.append(float(loss.detach()))
            if progress is not None:
                progress(len(batch), float(loss.detach()))
    finally:
        if isinstance(module, torch.nn.Module) and was_training is not None:
            module.train(was_training)
        optimizer.zero_grad(set_to_none=True)
    result.state = export_state(optimizer, params, next_lr=scheduler.get_last_lr()[0])
    result.optimizer, result.scheduler = optimizer, scheduler
    return result


def export_state(
    optimizer: torch.optim.AdamW, params: dict[str, torch.Tensor], next_lr: float
) -> OptimizerState:
    """A torch AdamW's state keyed by parameter name, with the lr its *next* step would use."""
    group = optimizer.param_groups[0]
    states = [optimizer.state.get(p, {}) for p in params.values()]
    step = int(states[0]["step"]) if states and "step" in states[0] else 0
    return OptimizerState(
        step=step,
        lr=float(next_lr),
        betas=tuple(group["betas"]),  # type: ignore[arg-type]
        eps=group["eps"],
        weight_decay=group["weight_decay"],
        exp_avg={
            k: st["exp_avg"].detach().clone()
            for k, st in zip(params, states, strict=True)
            if "exp_avg" in st
        },
        exp_avg_sq={
            k: st["exp_avg_sq"].detach().clone()
            for k, st in zip(params, states, strict=True)
            if "exp_avg_sq" in st
        },
    )


def loss_trend(losses: Sequence[float]) -> dict[str, float | None]:
    """Mean batch loss over the first and the last few steps (up to 5, a third of the run each):
    one batch is too noisy to say whether the warm-up taught the proxy anything."""
    if not losses:
        return {"loss_head": None, "loss_tail": None}
    n = max(1, min(5, len(losses) // 3))
    return {
        "loss_head": float(sum(losses[:n]) / n),
        "loss_tail": float(sum(losses[-n:]) / n),
    }


MEASURE_SAMPLES = 256  # warm-up samples whose loss is measured before and after (fixed, cheap)
# A warm-up "did not lower the loss" when its samples' loss after it is above this share of their
# loss before it: the proxy learned nothing from the pool, and its scores would be noise.
WARMUP_FALL = 0.98


def loss_not_lowered(before: float | None, after: float | None) -> bool:
    """True when a warm-up measurably failed to lower its samples' loss (see `WARMUP_FALL`)."""
    if before is None or after is None or not before > 0:
        return False
    return after > WARMUP_FALL * before


@torch.no_grad()
def mean_loss(proxy: ScoringModel, samples: Sequence[Sample], batch_size: int = 16) -> float | None:
    """Mean per-sample loss over `samples` in eval mode (unusable records skipped)."""
    module = getattr(proxy, "model", None)
    was_training = module.training if isinstance(module, torch.nn.Module) else None
    if isinstance(module, torch.nn.Module):
        module.eval()
    total, n = 0.0, 0
    try:
        for i in range(0, len(samples), batch_size):
            prepared = _prepare_usable(proxy, list(samples[i : i + batch_size]), [])
            if prepared is None:
                continue
            losses = proxy.per_sample_loss(prepared)
            total += float(losses.sum())
            n += int(losses.numel())
    finally:
        if isinstance(module, torch.nn.Module) and was_training is not None:
            module.train(was_training)
    return total / n if n else None


def warmup(
    proxy: ScoringModel,
    pool: Iterable[Sample],
    out_dir: str | Path,
    config: WarmupConfig | None = None,
    *,
    progress: Callable[[int, float], None] | None = None,
) -> tuple[Path, WarmupResult]:
    """Warm up on a seeded fraction of `pool` and save the proxy with its optimizer state."""
    config = config or WarmupConfig()
    samples = list(pool)
    if not samples:
        raise ValueError("the pool is empty: nothing to warm up on")
    chosen = select_fraction(samples, config.fraction, config.seed)
    # Did the warm-up teach the proxy anything? The same samples' loss before and after says it
    # reliably; the batch losses of a few-step run are too noisy to.
    measured = chosen[:MEASURE_SAMPLES]
    before = mean_loss(proxy, measured)
    result = train_steps(proxy, chosen, config, total_samples=len(samples), progress=progress)
    after = mean_loss(proxy, measured)
    result.loss_before, result.loss_after = before, after
    skipped = {sid for sid, _ in result.skipped}
    metadata: dict[str, Any] = {
        "warmup_ids": [s.id for s in chosen if s.id not in skipped],
        "warmup": {
            **{k: v for k, v in asdict(config).items()},
            "pool_size": len(samples),
            "trained_samples": len(chosen) - len(skipped),
            "steps": result.steps,
            "schedule_steps": result.schedule_steps,
            "ramp_steps": result.ramp_steps,
            "next_lr": result.state.lr,
            "first_loss": result.losses[0] if result.losses else None,
            "last_loss": result.losses[-1] if result.losses else None,
            **loss_trend(result.losses),
            "loss_before": before,
            "loss_after": after,
            "loss_measured_on": len(measured),
            "skipped": [{"id": sid, "reason": why} for sid, why in result.skipped],
        },
    }
    path = proxy.save(out_dir, optimizer_state=result.state, metadata=metadata)
    return Path(path), result
