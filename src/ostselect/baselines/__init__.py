"""Baselines: the selection methods OST is compared with, each writing the same scores table.

Every baseline is a `SampleScorer` (higher utility = keep) registered by name in
`ostselect.baselines.registry` (one decorator in its own module), so selection, reports, the CLI
and the benchmark treat them exactly like OST. `run_baseline` scores samples in memory;
`ost baseline NAME` runs the same scorer through the engine (shards, resume, Ray). Either way the
table's provenance holds the settings and the cost (sample forward/backward passes, judge
tokens, wall time). See docs/baselines.md for each method's definition and conventions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ostselect.baselines.registry import (
    BaselineOptions,
    BaselineSpec,
    baseline_names,
    get_baseline,
    register_baseline,
)
from ostselect.scores import attach_provenance, build_scores_table

if TYPE_CHECKING:
    import pyarrow as pa

    from ostselect.baselines.base import Baseline
    from ostselect.data.sample import Sample
    from ostselect.proxy.api import ScoringModel

CORE_COLUMNS = ("id", "utility", "status")


def make_baseline(
    name: str,
    *,
    proxy: ScoringModel | None = None,
    anchors: Sequence[Sample] | None = None,
    **options: Any,
) -> Baseline:
    """Build the scorer for `name` with its options (the scorer class's keyword arguments)."""
    return get_baseline(name).make(proxy, anchors, **options)


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
    """Score samples in memory with one baseline; the table's metadata holds the provenance.

    Samples go to the scorer in chunks of `chunk_size` (or the method's larger registered
    `chunk`) through the engine's batch guard, so an out-of-memory chunk is halved and a
    non-finite value is marked exactly as `ost baseline` does; each chunk is reported to
    `on_progress`. A method with a pool pass (DEITA's diversity filter) gets it at the end.
    """
    import pyarrow as pa

    from ostselect.engine.worker import append_columns, score_batch_resilient

    spec = get_baseline(name)
    samples = list(pool_samples)
    start = time.perf_counter()
    scorer = spec.make(proxy, anchors, **options)
    step = max(1, chunk_size, spec.chunk or 0)
    columns: dict[str, list[Any]] = {}
    n_rows = 0
    for begin in range(0, len(samples), step):
        chunk = samples[begin : begin + step]
        n_rows = append_columns(columns, score_batch_resilient(scorer, chunk), n_rows)
        if on_progress is not None:
            on_progress(len(chunk))
    if not samples:
        columns = scorer.score_samples([])
    if spec.pool_pass is not None:
        columns = spec.pool_pass(pa.table(columns), options).to_pydict()
    provenance = scorer.provenance()
    provenance["cost"]["wall_s"] = round(time.perf_counter() - start, 4)
    return _scores_table(name, columns, provenance)  # counts.scored says how many


def _scores_table(name: str, columns: dict[str, list[Any]], provenance: dict[str, Any]) -> pa.Table:
    extra = {k: v for k, v in columns.items() if k not in CORE_COLUMNS}
    table = build_scores_table(
        columns["id"],
        columns["utility"],
        mode=name,
        status=[str(s) for s in columns["status"]],
        extra_columns=extra,
    )
    return attach_provenance(table, provenance)


def __getattr__(name: str) -> Any:
    """The registry's views, computed when asked (a method registered later is included)."""
    if name == "BASELINE_NAMES":
        return baseline_names()
    if name == "NEEDS_PROXY":
        return frozenset(n for n, s in get_registry().items() if s.proxy == "required")
    if name == "NEEDS_ANCHORS":
        return frozenset(n for n, s in get_registry().items() if s.anchors)
    if name == "BaselineFactory":
        from ostselect.baselines.factory import BaselineFactory

        return BaselineFactory
    raise AttributeError(f"module 'ostselect.baselines' has no attribute {name!r}")


def get_registry() -> dict[str, BaselineSpec]:
    """Every registered method by name, the built-in ones imported first."""
    from ostselect.baselines.registry import load_builtin_baselines

    return load_builtin_baselines()


__all__ = [
    "BASELINE_NAMES",
    "BaselineFactory",
    "BaselineOptions",
    "BaselineSpec",
    "get_baseline",
    "get_registry",
    "make_baseline",
    "register_baseline",
    "run_baseline",
]
