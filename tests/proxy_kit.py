"""Tiny proxies with an optimizer state, as the float64 scoring tests need them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ostselect.data.sample import Sample
from ostselect.proxy import load_proxy
from ostselect.proxy.warmup import WarmupConfig, train_steps


def warmed_copy(base: Path, out: Path, samples: Sequence[Sample], **load: Any) -> Path:
    """`base` loaded in float64 (`load`: params selection), after two AdamW steps on `samples`
    (batch 2), saved to `out` with the optimizer state `--optimizer auto` continues."""
    proxy = load_proxy(base, dtype="float64", **load)
    cfg = WarmupConfig(lr=1e-2, batch_size=2, warmup_ratio=0.0, weight_decay=0.01)
    result = train_steps(proxy, list(samples), cfg, total_samples=40)
    return proxy.save(out, result.state)
