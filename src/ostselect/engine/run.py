"""`run_shards` / `run_scoring`: score a pool shard by shard, resumably, locally or on Ray.

The driver streams the pool, cuts it into shards of `shard_size` consecutive valid samples, skips
the shards the store already holds, has the backend score the rest, and writes each finished shard
atomically. When every shard is on disk it merges them in pool order, recomputes rank and toxic
over the whole pool (`run_shards` stops here: a multi-pass caller writes once, at its end);
`run_scoring` then writes the scores table and `<out dir>/rejects.jsonl`. Killing the process
at any moment and rerunning with `resume=True` therefore gives exactly the uninterrupted table;
SIGINT/SIGTERM arriving while a shard is written are held until that write is complete.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa

from ostselect.data.rejects import REJECTS_FILENAME, RejectsWriter
from ostselect.engine.api import ScorerFactory
from ostselect.engine.local import LocalBackend
from ostselect.engine.pool import Shard, iter_shards
from ostselect.engine.store import (
    STORE_FORMAT,
    ShardResult,
    ShardStore,
    StoreError,
    atomic_write_bytes,
    store_path_for,
)
from ostselect.interrupt import deferred_signals

if TYPE_CHECKING:
    from ostselect.progress import LiveProgress

Backend = Literal["local", "ray"]
# The merged rows of every shard -> the final rows (a method whose rows depend on each other).
PoolPass = Callable[[pa.Table], pa.Table]
_BASE_COLUMNS = ("id", "utility", "status")
_DERIVED_COLUMNS = ("rank", "toxic", "mode")  # recomputed globally by build_scores_table


class _ShardFeed:
    """Shards to score: finished ones are checked against the store and skipped."""

    def __init__(
        self, shards: Iterator[Shard], store: ShardStore, on_skip: Callable[[Shard], None]
    ):
        self._shards = shards
        self._store = store
        self._on_skip = on_skip
        self.total = 0
        self.skipped = 0

    def __iter__(self) -> Iterator[Shard]:
        for shard in self._shards:
            self.total += 1
            if self._store.is_finished(shard.index):
                stored = self._store.shard_meta(shard.index).get("ids_digest")
                if stored != shard.ids_digest:
                    raise StoreError(
                        f"shard {shard.index} in {self._store.root} holds other samples than the "
                        "pool gives now (was the pool edited in place?): score into a new path"
                    )
                self.skipped += 1
                self._on_skip(shard)
                continue
            yield shard


@dataclass
class ShardedRun:
    """What `run_shards` made: the merged table and its provenance, nothing written yet.

    The rejects are on disk in the store (the reader's, then each shard's); `rejects_bytes()`
    gives them in that order, one JSON line per record, for whoever writes the final files.
    """

    table: pa.Table
    provenance: dict[str, Any]
    store: ShardStore
    n_shards: int

    def rejects_bytes(self) -> bytes:
        driver = self.store.driver_rejects_path
        parts = [driver.read_bytes()] if driver.exists() else []
        parts.extend(self.store.read_shard_rejects_bytes(i) for i in range(self.n_shards))
        return b"".join(parts)


def run_scoring(
    pool_path: str | Path,
    factory: ScorerFactory,
    out_path: str | Path,
    *,
    rejects_path: str | Path | None = None,
    extra_provenance: Mapping[str, Any] | None = None,
    **options: Any,
) -> pa.Table:
    """Score every valid sample of `pool_path` into the scores table at `out_path` (also returned).

    `run_shards` into `<out>.shards/` (see it for `options`), then the two outputs, each written
    once and atomically: the rejects (default `<out dir>/rejects.jsonl`) and the table, whose
    provenance gets `extra_provenance`'s keys (e.g. the pool path).
    """
    out_path = Path(out_path)
    run = run_shards(pool_path, factory, store_path_for(out_path), **options)
    run.provenance.update(extra_provenance or {})
    rejects = Path(rejects_path) if rejects_path is not None else out_path.parent / REJECTS_FILENAME
    write_outputs(out_path, run.table, run.provenance, rejects, run.rejects_bytes())
    return run.table


def write_outputs(
    out_path: Path, table: pa.Table, provenance: Mapping[str, Any], rejects: Path, lines: bytes
) -> None:
    """The rejects file, then the scores table: a reader that finds the table finds its rejects."""
    from ostselect.scores import write_scores

    rejects.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(rejects, lines)
    write_scores(table, out_path, provenance)


def run_shards(
    pool_path: str | Path,
    factory: ScorerFactory,
    store_path: str | Path,
    *,
    shard_size: int = 256,
    batch_size: int = 16,
    resume: bool = False,
    backend: Backend = "local",
    ray_address: str | None = None,
    num_workers: int | None = None,
    gpus_per_worker: float = 0,
    image_root: str | Path | None = None,
    pool_format: str = "auto",
    fingerprint: Mapping[str, Any],
    progress: bool = True,
    on_progress: Callable[[int, bool], None] | None = None,
    pool_pass: PoolPass | None = None,
) -> ShardedRun:
    """Score every valid sample of `pool_path` shard by shard into the store at `store_path`.

    `fingerprint` says how the scores are made (proxy hash, anchor hash, pool fingerprint, mode,
    config); `resume=True` continues `<out>.shards/` only under an identical fingerprint.
    `on_progress(n_samples, resumed)` is for callers that draw their own display: the local
    backend calls it after every batch (samples a worker rejected come with a shard's last call),
    the Ray backend once per finished shard; shards kept from an earlier run are reported at
    once with `resumed=True`. Either way the calls of a shard add up to its sample count.
    `pool_pass(merged)` runs once over all merged rows before rank and toxic are derived, for a
    method whose rows depend on each other (DEITA's diversity filter).
    """
    if shard_size < 1 or batch_size < 1:
        raise ValueError("shard_size and batch_size must be at least 1")
    if backend not in ("local", "ray"):
        raise ValueError(f"unknown backend {backend!r}: use 'local' or 'ray'")
    store = ShardStore(Path(store_path))
    manifest = {
        "fingerprint": dict(fingerprint),
        "engine": {"shard_size": shard_size, "store_format": STORE_FORMAT},
    }
    store.open(manifest, resume=resume)

    if backend == "ray":
        from ostselect.engine.ray_backend import RayBackend

        runner: Any = RayBackend(
            factory,
            batch_size,
            address=ray_address,
            num_workers=num_workers,
            gpus_per_worker=gpus_per_worker,
        )
    else:
        runner = LocalBackend(factory, batch_size)

    started = time.perf_counter()
    bar = _progress_bar() if progress else None
    task = bar.add_task("scoring", total=None) if bar is not None else None
    with (
        RejectsWriter(store.driver_rejects_path, stage="score", truncate=True) as reader_rejects,
        bar or nullcontext(),
    ):
        shards = iter_shards(
            pool_path,
            shard_size,
            image_root=image_root,
            rejects=reader_rejects,
            pool_format=pool_format,
        )
        in_shard = 0  # samples of the shard in progress already reported batch by batch

        def report(n: int, resumed: bool) -> None:
            if n and bar is not None and task is not None:
                bar.advance(task, n, resumed=resumed)
            if n and on_progress is not None:
                on_progress(n, resumed)

        def on_skip(shard: Shard) -> None:
            report(len(shard.samples), True)

        def on_batch(n: int) -> None:
            nonlocal in_shard
            in_shard += n
            report(n, False)

        def on_result(result: ShardResult) -> None:
            nonlocal in_shard
            with deferred_signals():  # a Ctrl-C now would throw away a finished shard
                store.write_shard(result)
            n = len(result.columns["id"]) + len(result.rejects)
            report(n - in_shard, False)
            in_shard = 0

        feed = _ShardFeed(shards, store, on_skip)
        if isinstance(runner, LocalBackend):
            runner.run(feed, on_result, on_batch)
        else:
            runner.run(feed, on_result)
        n_reader_rejects = reader_rejects.total

    scorer_for_empty_pool = runner.scorer if isinstance(runner, LocalBackend) else None
    table, provenance = merge_shards(
        store,
        feed.total,
        empty_pool_scorer=scorer_for_empty_pool or (lambda: factory()),
        pool_pass=pool_pass,
    )
    runner.close()
    provenance.update(
        {
            "fingerprint": dict(fingerprint),
            "engine": {
                "backend": backend,
                "workers": runner.workers,
                "worker_restarts": runner.restarts,
                "shard_size": shard_size,
                "batch_size": batch_size,
                "shards": feed.total,
                "shards_resumed": feed.skipped,
                "wall_s": round(time.perf_counter() - started, 3),
            },
        }
    )
    provenance["counts"]["rejected_reader"] = n_reader_rejects
    # a scorer without `counters()` still gets the schema's cost: the time the run took
    provenance.setdefault("cost", {}).setdefault("wall_s", provenance["engine"]["wall_s"])
    return ShardedRun(table, provenance, store, feed.total)


def merge_shards(
    store: ShardStore,
    n_shards: int,
    *,
    empty_pool_scorer: Callable[[], Any],
    pool_pass: PoolPass | None = None,
) -> tuple[pa.Table, dict[str, Any]]:
    """All shards in order as one scores table (rank/toxic over the whole pool) + provenance.

    Cost counters are the sum of every shard's share (`ShardResult.cost`), so a resumed or Ray
    run reports what the whole table cost.
    """
    from ostselect.scores import build_scores_table, count_statuses, split_settings

    tables: list[pa.Table] = []
    modes: set[str] = set()
    scorer_provenance: dict[str, Any] = {}
    cost: Counter[str] = Counter()
    n_rejected = 0
    for index in range(n_shards):
        if not store.is_finished(index):
            raise StoreError(f"shard {index} is missing from {store.root} after the run")
        meta = store.shard_meta(index)
        modes.add(meta["mode"])
        scorer_provenance = meta["scorer_provenance"]
        cost.update(meta.get("cost") or {})
        n_rejected += int(meta["n_rejected"])
        tables.append(store.read_shard(index))
    if len(modes) > 1:
        raise StoreError(f"shards of {store.root} were scored in different modes: {sorted(modes)}")
    if tables:
        mode = modes.pop()
        merged = pa.concat_tables(tables, promote_options="default")
    else:
        scorer = empty_pool_scorer()
        mode, scorer_provenance = str(scorer.mode), dict(scorer.provenance())
        merged = pa.table({"id": pa.array([], pa.string()), "utility": pa.array([], pa.float64())})
    if pool_pass is not None:
        merged = pool_pass(merged)
    status = (merged.column("status").to_pylist() if "status" in merged.column_names else None) or [
        "ok"
    ] * merged.num_rows
    extra = {
        name: merged.column(name).combine_chunks()
        for name in merged.column_names
        if name not in _BASE_COLUMNS and name not in _DERIVED_COLUMNS
    }
    utility = merged.column("utility").to_numpy(zero_copy_only=False).astype(np.float64)
    table = build_scores_table(
        merged.column("id").to_pylist(), utility, mode, status=status, extra_columns=extra
    )
    # the schema's places: a third-party scorer's own keys go under `settings`
    provenance = split_settings(scorer_provenance)
    provenance.setdefault("scorer", mode)
    if cost:
        summed = {k: round(v, 4) if isinstance(v, float) else v for k, v in cost.items()}
        provenance["cost"] = {**provenance.get("cost", {}), **summed}
    # `scores.count_statuses` under the schema's names; write_scores derives the same again
    provenance["counts"] = {**count_statuses(status), "rejected_worker": n_rejected}
    return table, provenance


def _progress_bar() -> LiveProgress:
    """The shared display (`ostselect.progress`) for library callers that ask for one."""
    from rich.console import Console

    from ostselect.progress import make_progress

    return make_progress(Console(stderr=True))
