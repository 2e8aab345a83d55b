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
from ostselect.scores import attach_provenance
from ostselect.scoring.config import ScoreConfig
from ostselect.scoring.modes import batches
from ostselect.scoring.ost_scorer import OSTScorer, ScoringCore, eval_mode
from ostselect.scoring.passes import Pass, finish_provenance, run_passes
from ostselect.scoring.table import finish_table, outcome_columns

SampleSource = Iterable[Sample] | str | Path
ProgressHook = Callable[[str, int, int | None], None]  # (phase, samples just finished, phase total)


__all__ = ["SampleSource", "eval_mode", "score"]


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

    In this process, no shards: the same passes (`passes.run_passes`) and the same `OSTScorer`
    rows as the engine's `ostselect.scoring.driver.score_pool` (sharded, resumable, Ray-capable),
    each batch through the engine's fault handling, so both give the same table. The pool is
    streamed in batches of `config.batch_size`; hybrid re-reads it for each exact round.
    Write the table with `ostselect.scores.write_scores(table, path, read_provenance(table))`.
    """
    from ostselect.engine.worker import score_batch_resilient

    config = config or ScoreConfig()
    started = time.perf_counter()
    source = _Source(pool, reiterable=config.mode == "hybrid", on_reject=on_reject)
    core = ScoringCore.build(proxy, _Source(anchors, reiterable=True), config)
    hook = progress or (lambda phase, n, total: None)

    def run_pass(p: Pass) -> dict[str, list[Any]]:
        scorer = OSTScorer(core, p.phase, p.only_ids)
        total = len(p.only_ids) if p.only_ids is not None else source.size()
        columns: dict[str, list[Any]] = {}
        for batch in batches(source, config.batch_size):
            wanted = [s for s in batch if scorer.only_ids is None or s.id in scorer.only_ids]
            if not wanted:
                continue
            for name, values in score_batch_resilient(scorer, wanted).items():
                columns.setdefault(name, []).extend(values)
            hook(p.label, len(wanted), total)
        return columns or outcome_columns([], [], core.groups, scorer.phase)

    columns, report = run_passes(config, run_pass, source.size())
    table, rejects = finish_table(columns, config.mode)
    if on_reject is not None:
        for r in rejects:
            on_reject(r)
    # the whole call, anchor preparation included (`run_baseline` counts the same way)
    cost = {**core.counter.as_cost(), "wall_s": time.perf_counter() - started}
    provenance = finish_provenance(
        core.provenance(),
        pool=str(source.path) if source.path else None,
        pool_fingerprint=source.fingerprint(),
        cost=cost,
        report=report,
    )
    return attach_provenance(table, provenance)  # counts come from the table
