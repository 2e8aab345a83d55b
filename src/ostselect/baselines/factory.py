"""A picklable recipe that builds a baseline scorer inside a worker (the engine's `ScorerFactory`).

It carries paths and options only; the proxy and the anchor set are loaded where the scorer runs,
once per worker. A method with a pool pass (DEITA's diversity filter) is scored row by row in
shards like any other, and `pool_pass()` gives the engine the step that runs once over the merged
table; `fingerprint()` says what makes two runs' rows interchangeable, so `--resume` refuses to mix
rows made differently.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

    from ostselect.baselines.base import Baseline
    from ostselect.baselines.registry import BaselineSpec
    from ostselect.engine.run import PoolPass


@dataclass(frozen=True)
class BaselineFactory:
    name: str
    proxy_dir: str | Path | None = None
    anchors_path: str | Path | None = None
    params: str | None = None
    dtype: str = "float32"
    device: str = "cpu"
    image_root: str | Path | None = None
    options: dict[str, Any] = field(default_factory=dict)  # the scorer's keyword arguments
    # The registry entry, looked up where the factory is made and shipped with it: a method
    # registered only in the driver (a plugin, a notebook cell) still runs in Ray workers.
    spec: BaselineSpec | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.spec is None:
            from ostselect.baselines import get_baseline

            object.__setattr__(self, "spec", get_baseline(self.name))

    def __call__(self) -> Baseline:
        proxy = None
        if self.proxy_dir is not None:
            from ostselect.proxy import load_proxy
            from ostselect.scoring.ost_scorer import resolve_device

            device = resolve_device(self.device)  # "auto" is resolved where the worker runs
            proxy = load_proxy(self.proxy_dir, dtype=self.dtype, device=device, params=self.params)
        assert self.spec is not None
        return self.spec.make(proxy, self.read_anchors(), **self.options)

    def read_anchors(self) -> list[Any] | None:
        if self.anchors_path is None:
            return None
        from ostselect.data import iter_samples

        return list(iter_samples(self.anchors_path, image_root=self.image_root))

    def pool_pass(self) -> PoolPass | None:
        """The method's final pass over the merged table, with these options, or None."""
        assert self.spec is not None
        step = self.spec.pool_pass
        return functools.partial(step, options=self.options) if step is not None else None

    def fingerprint(self, pool_path: str | Path) -> dict[str, Any]:
        """Method, options, proxy folder hash, anchor hash and pool hash (the driver loads no
        model: the proxy is identified by its folder's content, as `ost score` does)."""
        from ostselect.data import pool_fingerprint
        from ostselect.proxy.folder import proxy_identity

        fp: dict[str, Any] = {
            "scorer": "baseline",
            "baseline": self.name,
            "pool": pool_fingerprint(pool_path),
            "options": json.loads(json.dumps(self.options, sort_keys=True, default=str)),
        }
        if self.proxy_dir is not None:
            fp["proxy"] = {
                "content_hash": proxy_identity(self.proxy_dir),
                "params": self.params,
                "dtype": self.dtype,
            }
        anchors = self.read_anchors()
        if anchors is not None:
            from ostselect.scoring.anchors import anchor_hash

            fp["anchor_hash"] = anchor_hash(anchors)
        return fp


ENGINE_BATCH = 64  # samples per `score_samples` call unless the method asks for more
SHARD_SIZE = 256


def score_baseline_pool(
    pool_path: str | Path,
    factory: BaselineFactory,
    out_path: str | Path,
    *,
    resume: bool = False,
    shard_size: int | None = None,
    backend: str = "local",
    address: str | None = None,
    num_workers: int | None = None,
    gpus_per_worker: float = 0,
    rejects_path: str | Path | None = None,
    pool_format: str = "auto",
    on_progress: Callable[[int, bool], None] | None = None,
    keep_shards: bool = False,
) -> pa.Table:
    """Score a pool file with a baseline through the engine and write the scores table.

    The same path as `ost score`: shards in `<out>.shards/`, `resume=True` continues them under
    an identical fingerprint, `backend="ray"` spreads them over workers, out-of-memory batches are
    halved and non-finite values marked. Batches are the method's chunk (64, LESS 1024, at most a
    shard) and shards a multiple of it, so the rows equal `run_baseline` over the same samples.
    Once the table is written the shard store is removed (unless `keep_shards`): it only serves
    a resume, and a rerun into the same `out_path` then starts afresh, as before the engine.
    """
    from ostselect.engine import run_scoring

    spec = factory.spec
    assert spec is not None
    batch = max(ENGINE_BATCH, spec.chunk or 0)
    shard = shard_size if shard_size is not None else max(SHARD_SIZE, batch)
    table = run_scoring(
        pool_path,
        factory,
        out_path,
        shard_size=shard,
        batch_size=min(batch, shard),
        resume=resume,
        backend=backend,  # type: ignore[arg-type]
        ray_address=address,
        num_workers=num_workers,
        gpus_per_worker=gpus_per_worker,
        image_root=factory.image_root,
        pool_format=pool_format,
        fingerprint=factory.fingerprint(pool_path),
        progress=False,
        on_progress=on_progress,
        pool_pass=factory.pool_pass(),
        rejects_path=rejects_path,
        extra_provenance={"pool": str(pool_path)},
    )
    if not keep_shards:
        import shutil

        from ostselect.engine.store import store_path_for

        shutil.rmtree(store_path_for(out_path), ignore_errors=True)
    return table
