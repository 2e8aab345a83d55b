"""`loss`: the proxy's own per-sample loss (a perplexity filter).

`keep="low"` (default) keeps what the proxy already finds likely (utility = -loss), which drops
garbled or off-distribution answers; `keep="high"` keeps the hardest samples (utility = loss).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import field_validator

from ostselect.baselines.base import Baseline, check_keep, proxy_description
from ostselect.baselines.proxy_ops import per_sample_losses
from ostselect.baselines.registry import (
    KeepOptions,
    batch_field,
    check_batch_size,
    keep_field,
    register_baseline,
)
from ostselect.data.sample import Sample
from ostselect.proxy.api import ScoringModel
from ostselect.scores import finite_status


class ProxyBatchOptions(KeepOptions):
    """`--keep` plus `--batch-size` (samples per forward pass), shared by the loss-based methods."""

    batch_size: int = batch_field()

    _check_batch = field_validator("batch_size")(check_batch_size)


class LossOptions(ProxyBatchOptions):
    keep: str = keep_field("low")


@register_baseline(
    "loss",
    options=LossOptions,
    proxy="required",
    summary="Proxy per-sample loss; --keep low (default) keeps what the proxy finds likely.",
    example="ost baseline loss --pool pool.jsonl --proxy proxy/ --out scores.loss.parquet",
    utility="-loss (`--keep low`) or loss",
    direction="low loss kept",
    cost=("forward_passes",),
    order=10,
)
class LossBaseline(Baseline):
    def __init__(self, proxy: ScoringModel, keep: str = "low", batch_size: int = 8) -> None:
        super().__init__()
        self.proxy = proxy
        self.keep = check_keep(keep, self.mode)
        self.batch_size = batch_size

    def _score(self, samples: list[Sample]) -> dict[str, list[Any]]:
        losses, tokens = per_sample_losses(self.proxy, samples, self.cost, self.batch_size)
        utility = -losses if self.keep == "low" else losses
        return {
            "id": [s.id for s in samples],
            "utility": np.where(np.isfinite(utility), utility, np.nan).tolist(),
            "status": finite_status(losses),
            "loss": losses.tolist(),
            "tokens": tokens.tolist(),
        }

    def _settings(self) -> dict[str, Any]:
        return {**proxy_description(self.proxy), "keep": self.keep, "batch_size": self.batch_size}
