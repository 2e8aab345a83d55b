"""Which passes a mode runs, decided once for both ways of running a pass.

exact, naive and first-order are one pass over the pool. hybrid is a first-order pass, an exact
pass over a seeded calibration sample, then exact rounds near the cutoff and zero (`hybrid.py`),
or a single exact pass where the calibration sample would cover the pool anyway. The in-process
`score()` runs a pass batch by batch in this process; `score_pool` runs it through the engine
(shards, resume, Ray). Both hand `run_passes` a `PassRunner` and finish with `finish_provenance`,
so the two paths cannot drift apart.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ostselect.scores import Status, split_settings
from ostselect.scoring.config import ScoreConfig
from ostselect.scoring.hybrid import HybridReport, refine_hybrid

CALIBRATION_COVERS_POOL = "the calibration sample covers the pool"


@dataclass(frozen=True)
class Pass:
    """One pass over the pool: how rows are computed and for which samples."""

    label: str  # what a progress display shows
    phase: str  # naive | exact | first-order
    only_ids: tuple[str, ...] | None = None  # None: every sample; else the rest come `skipped`
    round: int | None = None  # hybrid's exact rounds (0: the calibration sample)


# One pass's columns (`scoring.table` shape) for every sample of the pool, in pool order.
PassRunner = Callable[[Pass], dict[str, list[Any]]]


def first_pass(config: ScoreConfig, pool_size: int | None) -> Pass:
    """The mode's first (or only) pass; `pool_size` is an upper bound on the samples, if known."""
    if config.mode != "hybrid":
        return Pass(config.mode, config.mode)
    if pool_size is not None and pool_size <= config.calibration_size:
        return Pass("exact (hybrid: calibration would cover the pool)", "exact")
    return Pass("first-order", "first-order")


def run_passes(
    config: ScoreConfig, run_pass: PassRunner, pool_size: int | None = None
) -> tuple[dict[str, list[Any]], HybridReport | None]:
    """The final columns of `config.mode`, and hybrid's report (None for the other modes)."""
    first = first_pass(config, pool_size)
    columns = run_pass(first)
    if config.mode != "hybrid":
        return columns, None
    if first.phase == "exact":
        scored = sum(1 for s in columns["status"] if s == Status.OK)
        return columns, HybridReport.exact_run(scored, CALIBRATION_COVERS_POOL)
    rounds = itertools.count()

    def rescore_ids(ids: list[str]) -> dict[str, list[Any]]:
        k = next(rounds)
        label = "calibration (exact)" if k == 0 else f"exact re-score, round {k}"
        return run_pass(Pass(label, "exact", tuple(ids), k))

    return refine_hybrid(columns, config, rescore_ids)


def finish_provenance(
    scorer: Mapping[str, Any],
    *,
    pool: str | None,
    pool_fingerprint: str | None,
    cost: Mapping[str, Any],
    report: HybridReport | None,
) -> dict[str, Any]:
    """The scores table's provenance: the scorer's record, the pool, the summed cost, hybrid's
    report; in the `scores.Provenance` schema (counts come from the table when it is written)."""
    provenance = {
        **scorer,
        "pool": pool,
        "pool_fingerprint": pool_fingerprint,
        "cost": {k: round(v, 4) if isinstance(v, float) else v for k, v in cost.items()},
    }
    if report is not None:
        provenance["hybrid"] = report.as_dict()
    return split_settings(provenance)
