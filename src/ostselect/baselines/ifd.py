"""`ifd`: instruction-following difficulty (Cherry LLM, Li et al. 2024).

    IFD = loss(answer | question) / loss(answer | no question)

"No question" keeps only the image placeholders of each user turn (and drops the system turn), so
the answer is still scored against its images. IFD near 0: the question explains the answer; near
1: the question hardly helps; above 1: the answer is *less* likely with its question than without
it, which Cherry LLM reads as a misaligned pair and discards.

Convention: `keep="high"` (default, as Cherry LLM) ranks by IFD, and with `drop_above_one=True` a
sample with IFD >= 1 gets utility -IFD, so it ranks after every sample below 1 and is flagged toxic.
`keep="low"` ranks by -IFD (samples whose question makes the answer easy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from ostselect.baselines.base import Baseline, check_keep, proxy_description
from ostselect.baselines.loss import ProxyBatchOptions
from ostselect.baselines.proxy_ops import per_sample_losses, without_question
from ostselect.baselines.registry import register_baseline
from ostselect.data.sample import Sample
from ostselect.proxy.api import ScoringModel
from ostselect.scores import Status


def ifd_utility(ifd: np.ndarray, keep: str, drop_above_one: bool) -> np.ndarray:
    if keep == "low":
        return -ifd
    if drop_above_one:
        return np.where(ifd >= 1.0, -ifd, ifd)
    return ifd.copy()


class IFDOptions(ProxyBatchOptions):
    keep_above_one: bool = Field(
        False, description="Do not push IFD >= 1 (misaligned pairs) to the bottom."
    )

    def scorer_kwargs(self, out: Path | None = None) -> dict[str, Any]:
        return {"keep": self.keep, "drop_above_one": not self.keep_above_one,
                "batch_size": self.batch_size}  # fmt: skip


@register_baseline(
    "ifd",
    options=IFDOptions,
    proxy="required",
    summary="Instruction-following difficulty: loss(answer | question) / loss(answer | images "
    "only).",
    example="ost baseline ifd --pool pool.jsonl --proxy proxy/ --out scores.ifd.parquet",
    utility="IFD, or -IFD for IFD >= 1",
    direction="high IFD kept (Cherry LLM)",
    cost=("forward_passes",),
    order=20,
)
class IFDBaseline(Baseline):
    def __init__(
        self,
        proxy: ScoringModel,
        keep: str = "high",
        drop_above_one: bool = True,
        batch_size: int = 8,
    ) -> None:
        super().__init__()
        self.proxy = proxy
        self.keep = check_keep(keep, self.mode)
        self.drop_above_one = drop_above_one
        self.batch_size = batch_size

    def _score(self, samples: list[Sample]) -> dict[str, list[Any]]:
        conditioned, tokens = per_sample_losses(self.proxy, samples, self.cost, self.batch_size)
        bare = [without_question(s) for s in samples]
        unconditioned, _ = per_sample_losses(self.proxy, bare, self.cost, self.batch_size)
        with np.errstate(divide="ignore", invalid="ignore"):
            ifd = conditioned / unconditioned
        ok = np.isfinite(ifd) & (unconditioned > 0)
        utility = np.where(ok, ifd_utility(ifd, self.keep, self.drop_above_one), np.nan)
        return {
            "id": [s.id for s in samples],
            "utility": utility.tolist(),
            "status": [Status.OK if g else Status.NONFINITE for g in ok],
            "loss": conditioned.tolist(),
            "loss_without_question": unconditioned.tolist(),
            "ifd": np.where(ok, ifd, np.nan).tolist(),
            "tokens": tokens.tolist(),
        }

    def _settings(self) -> dict[str, Any]:
        return {
            **proxy_description(self.proxy),
            "keep": self.keep,
            "drop_above_one": self.drop_above_one,
            "batch_size": self.batch_size,
            "no_question_variant": "user turns reduced to their image placeholders; system dropped",
        }
