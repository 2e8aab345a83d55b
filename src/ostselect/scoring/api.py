"""`score(pool, anchors, proxy, config) -> pyarrow.Table`: the scorer's one public entry point."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from ostselect.data import Reject, pool_fingerprint
from ostselect.data.sample import Sample
from ostselect.proxy.api import ScoringModel
from ostselect.scores import attach_provenance, split_settings
from ostselect.scoring.config import ScoreConfig
from ostselect.scoring.engine_scorer import (
    SCORE_REJECT_CODES,
    OSTScorer,
    ScoringCore,
    eval_mode,
    finish_table,
    outcome_columns,
    phase_of,
    refine_hybrid,
)
from ostselect.scoring.modes import batches

SampleSource = Iterable[Sample] | str | Path
ProgressHook = Callable[[str, int, int | None], None]  # (phase, samples just finished, phase total)


REJECT_CODES = SCORE_REJECT_CODES  # status -> reject code (kept for importers of this name)
__all__ = ["REJECT_CODES", "SampleSource", "eval_mode", "score"]


def _read_samples(path: Path, on_reject: Callable[[Reject], None] | None) -> Iterator[Sample]:
    """Usable samples of a pool file; unusable records go to `on_reject` (data package checks)."""
    from ostselect.data import iter_samples

    def on_record(item: Sample | Reject) -> None:
        if on_reject is not None and isinstance(item, Reject):
            on_reject(item)

    return iter(iter_samples(path, on_record=on_record))


class _Source:
    """A re-iterable view of a pool given as a path, a sequence or a one-shot iterable."""

    def __init__(
        self,
        source: SampleSource,
        *,
        reiterable: bool,
        on_reject: Callable[[Reject], None] | None = None,
    ) -> None:
        self.on_reject = on_reject
        self.path = Path(source) if isinstance(source, str | Path) else None
        self._items: Sequence[Sample] | None = None
        self._once: Iterable[Sample] | None = None
        if self.path is None:
            if isinstance(source, Sequence) or reiterable:
                self._items = source if isinstance(source, Sequence) else list(source)
            else:
                self._once = source

    def __iter__(self) -> Iterator[Sample]:
        if self.path is not None:  # reader rejects are reported on the first pass only
            on_reject, self.on_reject = self.on_reject, None
            return _read_samples(self.path, on_reject)
        if self._items is not None:
            return iter(self._items)
        assert self._once is not None
        return iter(self._once)

    def size(self) -> int | None:
        """Number of samples when known without reading the source."""
        return len(self._items) if self._items is not None else None

    def fingerprint(self) -> str | None:
        return pool_fingerprint(self.path) if self.path is not None else None


def score(
    pool: SampleSource,
    anchors: SampleSource,
    proxy: ScoringModel,
    config: ScoreConfig | None = None,
    *,
    progress: ProgressHook | None = None,
    on_reject: Callable[[Reject], None] | None = None,
) -> pa.Table:
    """Score every pool sample against the anchors; the table's metadata holds the provenance.

    In this process, no shards: the rows come from the same `OSTScorer` the engine runs
    (`ostselect.scoring.engine_scorer.score_pool` for the sharded, resumable, Ray-capable path),
    batch by batch through the engine's fault handling, so both give the same table. The pool is
    streamed in batches of `config.batch_size`; hybrid re-reads it for each exact round.
    The provenance follows `ostselect.scores.Provenance`; write the table with
    `ostselect.scores.write_scores(table, path, read_provenance(table))`.
    """
    from ostselect.engine.worker import score_batch_resilient

    config = config or ScoreConfig()
    started = time.perf_counter()
    source = _Source(pool, reiterable=config.mode == "hybrid", on_reject=on_reject)
    core = ScoringCore.build(proxy, _Source(anchors, reiterable=True), config)
    hook = progress or (lambda phase, n, total: None)

    def run(scorer: OSTScorer, label: str, total: int | None) -> dict[str, list[Any]]:
        columns: dict[str, list[Any]] = {}
        for batch in batches(source, config.batch_size):
            wanted = [s for s in batch if scorer.only_ids is None or s.id in scorer.only_ids]
            if not wanted:
                continue
            cols = score_batch_resilient(scorer, wanted)
            for name, values in cols.items():
                columns.setdefault(name, []).extend(values)
            hook(label, len(wanted), total)
        return columns or outcome_columns([], [], core.groups, scorer.phase)

    first = OSTScorer(core, phase_of(config.mode))
    columns = run(first, first.phase, source.size())
    report = None
    if config.mode == "hybrid":

        def rescore_ids(ids: list[str]) -> dict[str, list[Any]]:
            return run(first.for_phase("exact", ids), "exact re-score", len(ids))

        columns, report = refine_hybrid(columns, config, rescore_ids)
    table, rejects = finish_table(columns, config.mode)
    if on_reject is not None:
        for r in rejects:
            on_reject(r)
    provenance = {
        **core.provenance(),
        "pool": str(source.path) if source.path else None,
        "pool_fingerprint": source.fingerprint(),
        # the whole call, anchor preparation included (`run_baseline` counts the same way)
        "cost": {**core.counter.as_cost(), "wall_s": round(time.perf_counter() - started, 4)},
    }
    if report is not None:
        provenance["hybrid"] = report.as_dict()
    return attach_provenance(table, split_settings(provenance))  # counts come from the table
