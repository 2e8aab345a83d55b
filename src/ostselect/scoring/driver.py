"""`score_pool`: score a pool file through the engine (sharded, resumable, local or Ray).

Each pass of the mode (`passes.run_passes`) is one `engine.run_shards` run with its own shard
store and fingerprint, so a killed run resumes inside whichever pass it was in: `<out>.shards/`
for a one-pass mode, `<out>.first-order.shards/` and `<out>.exact.shards/round-NNN.shards/` for
hybrid. Nothing but shards is written until the last pass is done; then the rejects file and the
scores table are each written once, atomically.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from ostselect.scoring.ost_scorer import OSTScorerFactory, SharedCoreFactory
from ostselect.scoring.passes import Pass, finish_provenance, run_passes
from ostselect.scoring.table import finish_table

# (pass label, samples, resumed): per batch on the local backend, per shard on Ray; every pass
# first reports 0 samples as it begins, so a display can show the pass and start its clock.
EngineProgress = Callable[[str, int, bool], None]


def first_pass_out(out_path: Path, mode: str) -> Path:
    """The first pass's shard store is `<that>.shards/` (hybrid's first pass has its own)."""
    return out_path.with_name(out_path.name + ".first-order") if mode == "hybrid" else out_path


def exact_rounds_root(out_path: Path) -> Path:
    """The folder of hybrid's exact rounds, one shard store per round."""
    return out_path.with_name(out_path.name + ".exact.shards")


@dataclass(frozen=True)
class KeptShards:
    """Finished shards of one pass that a rerun with `resume=True` will not score again."""

    store: Path
    shards: int
    samples: int  # scored rows + samples the workers rejected


def kept_shards(out_path: str | Path, mode: str) -> list[KeptShards]:
    """What an interrupted `score_pool` into `out_path` has on disk, per pass, in pass order."""
    from ostselect.engine.store import ShardStore, store_path_for

    out_path = Path(out_path)
    roots = [store_path_for(first_pass_out(out_path, mode))]
    if mode == "hybrid":  # exact rounds; or one exact pass where calibration covers the pool
        roots += sorted(exact_rounds_root(out_path).glob("round-*.shards"))
        roots.append(store_path_for(out_path))
    kept = []
    for root in roots:
        store = ShardStore(root)
        done = sorted(store.finished_indices()) if root.is_dir() else []
        if not done:
            continue
        samples = 0
        for i in done:
            samples += _parquet_rows(store.shard_path(i)) + int(store.shard_meta(i)["n_rejected"])
        kept.append(KeptShards(root, len(done), samples))
    return kept


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.read_metadata(path).num_rows)


def score_pool(
    pool_path: str | Path,
    factory: OSTScorerFactory,
    out_path: str | Path,
    *,
    resume: bool = False,
    shard_size: int = 256,
    backend: str = "local",
    address: str | None = None,
    num_workers: int | None = None,
    gpus_per_worker: float = 0,
    progress: EngineProgress | None = None,
) -> pa.Table:
    """Score a pool file with the engine and write the scores table to `out_path` (returned).

    Rejects of the reader and the workers, then the samples that stayed in the table unusable,
    go to `<out dir>/rejects.jsonl`.
    """
    from ostselect.data import REJECTS_FILENAME
    from ostselect.engine import run_shards
    from ostselect.engine.pool import ids_digest
    from ostselect.engine.run import write_outputs
    from ostselect.engine.store import store_path_for

    started = time.perf_counter()
    out_path = Path(out_path)
    config = factory.config
    fingerprint = factory.fingerprint(pool_path)
    ray_started = False
    if backend == "ray":  # one Ray session for every pass (run_shards reuses an open one)
        from ostselect.engine.ray_backend import start_ray

        ray_started = start_ray(address)
    shared = SharedCoreFactory(factory)
    first_run: list[Any] = []  # the first pass's `ShardedRun`: the reader's and workers' rejects
    cost: dict[str, float] = {}  # every pass's cost, summed (hybrid pays for its exact rounds)

    def run_pass(p: Pass) -> dict[str, list[Any]]:
        if p.round is not None:
            store = exact_rounds_root(out_path) / f"round-{p.round:03d}.shards"
            fp = {**fingerprint, "phase": "exact", "round": p.round, "ids": ids_digest(p.only_ids)}
        elif p.phase == "first-order" and config.mode == "hybrid":
            store = store_path_for(first_pass_out(out_path, config.mode))
            fp = {**fingerprint, "phase": "first-order"}
        else:
            store = store_path_for(out_path)
            fp = fingerprint
        if backend == "local":
            phase_factory: Any = shared(p.phase, p.only_ids)
        else:
            phase_factory = factory.with_phase(p.phase, p.only_ids)

        def tick(n: int, resumed: bool) -> None:
            if progress is not None:
                progress(p.label, n, resumed)

        tick(0, False)  # the pass begins (model loading counts in its elapsed time)
        run = run_shards(
            pool_path,
            phase_factory,
            store,
            shard_size=shard_size,
            batch_size=config.batch_size,
            resume=resume,
            backend=backend,  # type: ignore[arg-type]
            ray_address=address,
            num_workers=num_workers,
            gpus_per_worker=gpus_per_worker,
            image_root=factory.image_root,
            fingerprint=fp,
            progress=False,
            on_progress=tick,
        )
        if not first_run:
            first_run.append(run)
        for key, value in (run.provenance.get("cost") or {}).items():
            cost[key] = cost.get(key, 0) + value
        return run.table.to_pydict()

    try:
        columns, report = run_passes(config, run_pass, _pool_bound(pool_path, config))
    finally:
        if ray_started:
            import ray

            ray.shutdown()

    final, unusable = finish_table(columns, config.mode)
    first = first_run[0].provenance
    scorer = {k: v for k, v in first.items() if k not in ("cost", "counts", "hybrid")}
    scorer["mode"] = config.mode
    scorer["settings"] = {k: v for k, v in (first.get("settings") or {}).items() if k != "phase"}
    scorer["counts"] = {k: v for k, v in first["counts"].items() if k.startswith("rejected_")}
    scorer["engine"] = {**first["engine"], "wall_s": round(time.perf_counter() - started, 3)}
    provenance = finish_provenance(
        scorer,
        pool=str(pool_path),
        pool_fingerprint=fingerprint["pool"],
        cost=cost,
        report=report,
    )
    unusable_lines = "".join(r.to_json_line("score") for r in unusable).encode()
    lines = first_run[0].rejects_bytes() + unusable_lines
    write_outputs(out_path, final, provenance, out_path.parent / REJECTS_FILENAME, lines)
    return final


def _pool_bound(pool_path: str | Path, config: Any) -> int | None:
    """Records in the pool (an upper bound on its samples): hybrid runs exact on a pool its
    calibration sample would cover. Only hybrid pays for the count."""
    if config.mode != "hybrid":
        return None
    from ostselect.data.formats import count_records

    try:
        return count_records(pool_path)
    except (OSError, ValueError):
        return None
