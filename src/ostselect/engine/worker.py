"""Scoring one shard inside a worker: check samples, score in batches, survive numerical faults.

Whatever backend runs it, a shard is scored by `score_shard`, so the local and Ray backends produce
the same rows. Faults that concern one sample never stop the run:
- a sample that does not pass `check_sample` (e.g. an image that does not decode) becomes a reject;
- a non-finite value marks that sample `status="nonfinite"` (utility NaN), whether or not the scorer
  noticed it itself;
- an out-of-memory error on a batch retries the two halves, down to single samples; a single sample
  that still does not fit gets `status="oom"`.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable, Sequence
from typing import Any

from ostselect.data.rejects import Reject
from ostselect.data.sample import Sample
from ostselect.engine.api import SampleScorer
from ostselect.engine.pool import Shard, reject_if_unusable
from ostselect.engine.store import ShardResult
from ostselect.scores import Status

STATUS_OK = Status.OK
STATUS_NONFINITE = Status.NONFINITE
STATUS_OOM = Status.OOM
# Columns whose non-finite values make a row unusable (a NaN loss makes the step meaningless).
_GUARDED = ("utility", "loss")


def _oom_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [MemoryError]
    try:
        import torch

        errors.append(torch.OutOfMemoryError)
    except (ImportError, AttributeError):
        pass
    return tuple(errors)


def _release_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def score_shard(
    scorer: SampleScorer,
    shard: Shard,
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
) -> ShardResult:
    """Rows for the shard's usable samples, in pool order, plus the rejected ones.

    `on_batch(n)` is told after each scored batch, so a display can move inside a shard (a shard
    of exact utilities takes minutes); it never changes the rows.
    """
    usable: list[Sample] = []
    rejects: list[Reject] = []
    for sample in shard.samples:
        reject = reject_if_unusable(sample)
        if reject is None:
            usable.append(sample)
        else:
            rejects.append(reject)
    columns: dict[str, list[Any]] = {}
    n_rows = 0
    before = _counters(scorer)
    for start in range(0, len(usable), batch_size):
        batch_cols = score_batch_resilient(scorer, usable[start : start + batch_size])
        n_rows = append_columns(columns, batch_cols, n_rows)
        if on_batch is not None:
            on_batch(len(batch_cols["id"]))
    if not columns:
        columns = {"id": [], "utility": [], "status": []}
    return ShardResult(
        index=shard.index,
        ids_digest=shard.ids_digest,
        columns=columns,
        rejects=rejects,
        mode=str(scorer.mode),
        scorer_provenance=dict(scorer.provenance()),
        cost=_counter_difference(before, _counters(scorer)),
    )


def _counters(scorer: SampleScorer) -> dict[str, float]:
    """The scorer's cumulative cost counters, if it keeps any (the optional `counters()`)."""
    counters = getattr(scorer, "counters", None)
    return dict(counters()) if callable(counters) else {}


def _counter_difference(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """What one shard cost: per-shard amounts add up across workers and resumed runs, where a
    worker's running totals would count only its own shards."""
    return {k: v - before.get(k, 0) for k, v in after.items()}


def score_batch_resilient(scorer: SampleScorer, batch: Sequence[Sample]) -> dict[str, list[Any]]:
    """Score a batch; on out-of-memory, score its halves; a lone sample that fails is marked oom."""
    try:
        cols = scorer.score_samples(batch)
    except _oom_errors():
        _release_memory()
        if len(batch) == 1:
            return {"id": [batch[0].id], "utility": [math.nan], "status": [STATUS_OOM]}
        mid = len(batch) // 2
        left = score_batch_resilient(scorer, batch[:mid])
        right = score_batch_resilient(scorer, batch[mid:])
        merged: dict[str, list[Any]] = {}
        n = append_columns(merged, left, 0)
        append_columns(merged, right, n)
        return merged
    return guard_columns(cols, batch)


def guard_columns(cols: dict[str, list[Any]], batch: Sequence[Sample]) -> dict[str, list[Any]]:
    """Check the scorer kept its contract, and mark rows with non-finite values."""
    expected = [s.id for s in batch]
    if list(cols.get("id", [])) != expected:
        raise ValueError(
            f"scorer returned ids {list(cols.get('id', []))[:5]}... for samples {expected[:5]}...: "
            "score_samples must return one row per sample, in input order"
        )
    cols = {k: list(v) for k, v in cols.items()}
    for name, values in cols.items():
        if len(values) != len(expected):
            raise ValueError(f"scorer column {name!r} has {len(values)} values for {len(expected)}")
    if "utility" not in cols:
        raise ValueError("scorer returned no `utility` column")
    status = list(cols.get("status") or [STATUS_OK] * len(expected))
    guarded = [n for n in cols if n in _GUARDED or n.startswith("utility[")]
    for i in range(len(expected)):
        if status[i] == STATUS_OK and any(_nonfinite(cols[n][i]) for n in guarded):
            status[i] = STATUS_NONFINITE
        if status[i] != STATUS_OK:
            cols["utility"][i] = math.nan  # an unusable value must never be ranked as a real one
        else:
            cols["utility"][i] = float(cols["utility"][i])
    cols["status"] = status
    return cols


def _nonfinite(value: Any) -> bool:
    if value is None:
        return False
    try:
        return not math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def append_columns(into: dict[str, list[Any]], cols: dict[str, list[Any]], n_rows: int) -> int:
    """Append a batch's columns; a column a batch lacks is filled with None (e.g. after oom)."""
    n_new = len(cols["id"])
    for name in cols:
        if name not in into:
            into[name] = [None] * n_rows
    for name, values in into.items():
        values.extend(cols.get(name, [None] * n_new))
    return n_rows + n_new
