"""The Ray backend on a local 2-CPU Ray: same rows as the local backend, survives a dying worker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

import engine_kit  # noqa: E402
from engine_kit import FINGERPRINT, TextScorerFactory, same_table, write_test_pool  # noqa: E402
from ostselect.engine import run_scoring, store_path_for  # noqa: E402
from ostselect.engine.ray_backend import start_ray  # noqa: E402
from ostselect.scores import read_scores  # noqa: E402

pytestmark = pytest.mark.slow
KW = {"shard_size": 4, "batch_size": 2, "fingerprint": FINGERPRINT, "progress": False}


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    """One local Ray for the module; test scorers travel by value (workers cannot import tests/)."""
    ray.cloudpickle.register_pickle_by_value(engine_kit)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    assert start_ray(None, num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_test_pool(tmp_path_factory.mktemp("pool"))


@pytest.fixture(scope="module")
def local_result(pool: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("local") / "scores.parquet"
    table = run_scoring(pool, TextScorerFactory(), out, **KW)
    return table, (out.parent / "rejects.jsonl").read_bytes()


def test_ray_backend_equals_local_backend(pool, local_result, tmp_path):
    out = tmp_path / "scores.parquet"
    table = run_scoring(pool, TextScorerFactory(), out, backend="ray", num_workers=2, **KW)
    assert same_table(table, local_result[0])
    assert (tmp_path / "rejects.jsonl").read_bytes() == local_result[1]
    engine = read_scores(out).provenance["engine"]
    assert engine["backend"] == "ray" and engine["workers"] == 2


def test_worker_killed_mid_shard_is_recovered(pool, local_result, tmp_path):
    marker = tmp_path / "crashed-once"
    # The worker scoring s13 (shard 3, second batch) exits hard the first time it sees it.
    factory = TextScorerFactory(crash_marker=str(marker), crash_id="s13")
    out = tmp_path / "scores.parquet"
    table = run_scoring(pool, factory, out, backend="ray", num_workers=2, **KW)
    assert marker.exists(), "the worker never crashed: the test proves nothing"
    assert int(marker.read_text()) != os.getpid()  # it was a worker process that died
    assert same_table(table, local_result[0])
    assert (tmp_path / "rejects.jsonl").read_bytes() == local_result[1]
    assert read_scores(out).provenance["engine"]["worker_restarts"] == 1


def test_resume_across_backends(pool, local_result, tmp_path):
    out = tmp_path / "scores.parquet"
    run_scoring(pool, TextScorerFactory(), out, **KW)
    store = store_path_for(out)
    for i in (1, 4, 7):  # as if the local run had been killed with these shards unfinished
        (store / f"shard-{i:06d}.parquet").unlink()
    out.unlink()
    table = run_scoring(pool, TextScorerFactory(), out, backend="ray", resume=True, **KW)
    assert same_table(table, local_result[0])
    assert (tmp_path / "rejects.jsonl").read_bytes() == local_result[1]
    assert read_scores(out).provenance["engine"]["shards_resumed"] == 5
