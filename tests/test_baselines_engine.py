"""Every registered baseline through the engine, parametrised over the registry, plus a method
registered in this module (no other edit):

- a run stopped with shards unfinished (as a kill leaves its store) and resumed gives the
  uninterrupted table and rejects;
- the Ray backend (2 workers) gives the local backend's table and rejects; the method registered
  only here reaches the workers with its factory (its class travels by value);
- the method registered here becomes a benchmark row (`BenchmarkRun.subsets`).

The SIGKILL variants (a real process killed mid-write) are in test_baselines_registry.py and
test_engine_resume.py; they exercise the same store these shards are taken from.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine_kit import same_table
from ostselect.baselines import get_registry
from ostselect.baselines.base import Baseline
from ostselect.baselines.factory import BaselineFactory, score_baseline_pool
from ostselect.baselines.registry import register_baseline, unregister_baseline
from ostselect.data.sample import Sample
from ostselect.engine import store_path_for
from ostselect.scores import read_scores
from test_baselines_cli import write_pool

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow
TOY = "toy-answer-length"
SHARD = 2  # 8 usable samples + a bad line -> 4 shards


def hashed_embedder(texts: Sequence[str]) -> np.ndarray:
    """DEITA's embedder, offline and deterministic (two texts share a vector when their first
    words match), so its diversity filter has something to drop."""
    out = []
    for text in texts:
        v = np.random.default_rng(sum(text.split()[0].encode())).normal(size=8)
        out.append(v / np.linalg.norm(v))
    return np.asarray(out)


@pytest.fixture(scope="module")
def toy() -> Iterator[str]:
    """A method registered from this module only: utility = the answer's length."""

    @register_baseline(
        TOY,
        summary="Toy: the answer's length in characters.",
        example=f"ost baseline {TOY} --pool pool.jsonl --out scores.toy.parquet",
        utility="answer length",
        direction="long kept",
        cost=("forward_passes",),
        in_benchmark=False,
    )
    class AnswerLength(Baseline):
        def _score(self, samples: list[Sample]) -> dict[str, list[Any]]:
            self.cost.forward_passes += len(samples)
            lengths = [float(len(s.assistant_text)) for s in samples]
            return {"id": [s.id for s in samples], "utility": lengths}

        def _settings(self) -> dict[str, Any]:
            return {}

    yield TOY
    unregister_baseline(TOY)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, toy: str) -> Iterator[dict[str, Any]]:
    """A tiny proxy, an 8-sample pool with images and one bad line, 3 anchors, a fake judge
    endpoint, and one local Ray for the module."""
    from ostselect.engine.ray_backend import start_ray
    from ostselect.proxy import build_tiny_proxy
    from test_baselines_judge import FakeChatServer

    root = tmp_path_factory.mktemp("baselines-engine")
    (root / "anchors").mkdir()
    server = FakeChatServer()
    server.thread.start()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    ray.cloudpickle.register_pickle_by_value(__import__(__name__))
    started = start_ray(None, num_cpus=2)
    yield {
        "proxy": build_tiny_proxy(root / "proxy", arch="qwen2-vl", seed=0),
        "pool": write_pool(root / "pool.jsonl", 8, bad_line=True, images=True),
        "anchors": write_pool(root / "anchors" / "anchors.jsonl", 3, images=True),
        "judge": server.url,
    }
    if started:
        ray.shutdown()
    server.httpd.shutdown()
    server.httpd.server_close()


def _factory(name: str, world: dict[str, Any], tmp_path: Path) -> BaselineFactory:
    spec = get_registry()[name]
    options: dict[str, Any] = {
        "deita": {"embedder": hashed_embedder, "threshold": 0.9},
        "judge": {"endpoint": world["judge"], "model": "fake", "cache_path": None},
    }.get(name, {})
    return BaselineFactory(
        name,
        proxy_dir=world["proxy"] if spec.uses_proxy else None,
        anchors_path=world["anchors"] if spec.anchors else None,
        options=options,
    )


def _run(factory: BaselineFactory, world: dict[str, Any], out: Path, **kw: Any) -> Any:
    pool = world["pool"]
    table = score_baseline_pool(pool, factory, out, shard_size=SHARD, keep_shards=True, **kw)
    return table, (out.parent / "rejects.jsonl").read_bytes()


def _names() -> list[str]:
    return [*get_registry(), TOY]  # TOY is registered by the fixture before the tests run


@pytest.mark.parametrize("name", _names())
def test_resumed_and_ray_runs_equal_the_uninterrupted_local_run(name, world, toy, tmp_path):
    factory = _factory(name, world, tmp_path)
    reference, rejects = _run(factory, world, tmp_path / "local" / "scores.parquet")
    assert reference.num_rows == 8 and b'"cut"' not in rejects and b"line" in rejects

    out = tmp_path / "killed" / "scores.parquet"
    _run(factory, world, out)
    store = store_path_for(out)
    for i in (1, 3):  # what a run killed with these two shards unfinished leaves behind
        (store / f"shard-{i:06d}.parquet").unlink()
    out.unlink()
    resumed, resumed_rejects = _run(factory, world, out, resume=True)
    assert same_table(resumed, reference), name
    assert resumed_rejects == rejects
    assert read_scores(out).provenance["engine"]["shards_resumed"] == 2

    on_ray, ray_rejects = _run(
        factory, world, tmp_path / "ray" / "scores.parquet", backend="ray", num_workers=2
    )
    assert same_table(on_ray, reference), name
    assert ray_rejects == rejects
    assert read_scores(tmp_path / "ray" / "scores.parquet").provenance["engine"]["workers"] == 2


def test_a_method_registered_here_is_a_benchmark_row(world, toy, tmp_path):
    from types import SimpleNamespace

    from ostselect.bench.config import mini_config
    from ostselect.bench.noise import CLEAN
    from ostselect.bench.protocol import BenchmarkRun
    from ostselect.data import iter_samples

    config = mini_config().with_overrides(baselines=(toy,), modes=(), seeds=(0,))
    run = BenchmarkRun(config, tmp_path / "bench")
    run.pool = list(iter_samples(world["pool"]))
    run.paths = SimpleNamespace(pool=world["pool"])
    run.noise = {s.id: CLEAN for s in run.pool}
    run.checkpoints = {config.warmup_fraction: (world["proxy"], 0.0)}
    run.score_candidates()
    rows = {s.row: s for s in run.subsets(0)}
    f = min(config.fractions)
    row = rows[f"{toy} {round(f * 100)}%"]
    lengths = {s.id: len(s.assistant_text) for s in run.pool}
    kept = sorted(lengths, key=lambda i: -lengths[i])[: len(row.ids)]
    assert row.method == toy and sorted(row.ids) == sorted(kept)
    assert read_scores(run.score_paths[toy]).provenance["engine"]["shards"] >= 1
