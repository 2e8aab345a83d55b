"""Baselines: the selection methods OST is compared with, each writing the same scores table.

Every baseline is a `SampleScorer` (higher utility = keep), so selection, reports and the benchmark
treat them exactly like OST. `run_baseline` scores a whole pool and returns the table with its
provenance (settings + cost: wall time, sample forward/backward passes, judge tokens) in the
metadata. See docs/baselines.md for each method's definition and conventions.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ostselect.scores import PROVENANCE_KEY, build_scores_table

if TYPE_CHECKING:
    import pyarrow as pa

    from ostselect.baselines.base import Baseline
    from ostselect.data.sample import Sample
    from ostselect.proxy.api import ScoringModel

BASELINE_NAMES = ("random", "loss", "ifd", "grand", "el2n", "less", "deita", "judge")
NEEDS_PROXY = frozenset({"loss", "ifd", "grand", "el2n", "less"})
NEEDS_ANCHORS = frozenset({"less"})
CORE_COLUMNS = ("id", "utility", "status")


def make_baseline(
    name: str,
    *,
    proxy: ScoringModel | None = None,
    anchors: Sequence[Sample] | None = None,
    **options: Any,
) -> Baseline:
    """Build the scorer for `name` with its options (see each class for the keywords)."""
    from ostselect.baselines.base import require_proxy

    if name not in BASELINE_NAMES:
        raise ValueError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINE_NAMES)}")
    if name in NEEDS_PROXY:
        proxy = require_proxy(proxy, name)
    if name == "random":
        from ostselect.baselines.random_scores import RandomBaseline

        return RandomBaseline(**options)
    if name == "loss":
        from ostselect.baselines.loss import LossBaseline

        return LossBaseline(proxy, **options)
    if name == "ifd":
        from ostselect.baselines.ifd import IFDBaseline

        return IFDBaseline(proxy, **options)
    if name == "grand":
        from ostselect.baselines.norms import GraNdBaseline

        return GraNdBaseline(proxy, **options)
    if name == "el2n":
        from ostselect.baselines.norms import EL2NBaseline

        return EL2NBaseline(proxy, **options)
    if name == "less":
        from ostselect.baselines.less import LESSBaseline

        return LESSBaseline(proxy, anchors or [], **options)
    if name == "deita":
        from ostselect.baselines.deita import DEITABaseline

        return DEITABaseline(proxy, **options)
    return _make_judge(**options)


def _make_judge(
    *,
    endpoint: str | None = None,
    model: str | None = None,
    model_path: str | Path | None = None,
    cache_path: str | Path | None = None,
    **backend_options: Any,
) -> Baseline:
    from ostselect.baselines.judge import JudgeBaseline

    if endpoint is not None:
        from ostselect.baselines.judge_backends import OpenAIChatJudge

        if not model:
            raise ValueError("the HTTP judge needs a model name (--model)")
        backend: Any = OpenAIChatJudge(endpoint, model, **backend_options)
    else:
        from ostselect.baselines.judge_backends import LocalHFJudge

        backend = LocalHFJudge(model_path, **backend_options)
    return JudgeBaseline(backend, cache_path=cache_path)


def run_baseline(
    name: str,
    pool_samples: Sequence[Sample],
    *,
    proxy: ScoringModel | None = None,
    anchors: Sequence[Sample] | None = None,
    on_progress: Callable[[int], None] | None = None,
    chunk_size: int = 64,
    **options: Any,
) -> pa.Table:
    """Score a pool with one baseline; the table's metadata holds the provenance (with `cost`).

    Row-wise baselines are fed in chunks of `chunk_size` (or their larger `preferred_chunk`),
    reporting each to `on_progress`; pool-level ones (DEITA's filter) see the whole pool at once.
    """
    samples = list(pool_samples)
    start = time.perf_counter()
    scorer = make_baseline(name, proxy=proxy, anchors=anchors, **options)
    step = len(samples) if scorer.pool_level else max(1, chunk_size, scorer.preferred_chunk or 0)
    columns: dict[str, list[Any]] = {}
    for begin in range(0, len(samples), step or 1):
        chunk = samples[begin : begin + step]
        for key, values in scorer.score_samples(chunk).items():
            columns.setdefault(key, []).extend(values)
        if on_progress is not None:
            on_progress(len(chunk))
    if not samples:
        columns = scorer.score_samples([])
    provenance = scorer.provenance()
    provenance["cost"]["wall_s"] = round(time.perf_counter() - start, 4)
    provenance["pool_size"] = len(samples)
    extra = {k: v for k, v in columns.items() if k not in CORE_COLUMNS}
    table = build_scores_table(
        columns["id"],
        columns["utility"],
        mode=name,
        status=columns["status"],
        extra_columns=extra,
    )
    meta = dict(table.schema.metadata or {})
    meta[PROVENANCE_KEY] = json.dumps(provenance, sort_keys=True, default=str).encode()
    return table.replace_schema_metadata(meta)


def __getattr__(name: str) -> Any:
    if name == "BaselineFactory":
        from ostselect.baselines.factory import BaselineFactory

        return BaselineFactory
    raise AttributeError(f"module 'ostselect.baselines' has no attribute {name!r}")


__all__ = ["BASELINE_NAMES", "BaselineFactory", "make_baseline", "run_baseline"]
