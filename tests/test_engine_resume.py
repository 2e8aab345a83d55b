"""SIGKILL a scoring run at several moments, resume it, and get exactly the uninterrupted result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from engine_kit import FINGERPRINT, TextScorerFactory, same_table, write_test_pool
from ostselect.engine import StoreError, run_scoring, store_path_for
from ostselect.scores import read_scores

KIT = Path(__file__).with_name("engine_kit.py")
SHARD, BATCH = 4, 2  # 30 valid records -> 8 shards; 28 rows once the workers reject s9, s21


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_test_pool(tmp_path_factory.mktemp("pool"))


@pytest.fixture(scope="module")
def reference(pool: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """An uninterrupted run: the table and rejects file every resumed run must reproduce."""
    out = tmp_path_factory.mktemp("reference") / "scores.parquet"
    run_scoring(
        pool,
        TextScorerFactory(),
        out,
        shard_size=SHARD,
        batch_size=BATCH,
        fingerprint=FINGERPRINT,
        progress=False,
    )
    return out, (out.parent / "rejects.jsonl").read_bytes()


def _spawn(pool: Path, out: Path, **extra: object) -> subprocess.Popen:
    spec = {"pool": str(pool), "out": str(out), "shard_size": SHARD, "batch_size": BATCH, **extra}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(KIT), json.dumps(spec)], env=env)


def _wait_until(condition, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, "the run ended before the kill point"
        assert time.monotonic() < deadline, "kill point never reached"
        time.sleep(0.01)


def _finished_shards(out: Path) -> int:
    return len(list(store_path_for(out).glob("shard-*.parquet")))


def _resume_and_compare(pool: Path, out: Path, reference: tuple[Path, bytes]) -> None:
    ref_out, ref_rejects = reference
    table = run_scoring(
        pool,
        TextScorerFactory(),
        out,
        shard_size=SHARD,
        batch_size=BATCH,
        resume=True,
        fingerprint=FINGERPRINT,
        progress=False,
    )
    expected = read_scores(ref_out).table
    assert same_table(table, expected), "resumed table differs from the uninterrupted one"
    assert same_table(read_scores(out).table, expected)
    assert (out.parent / "rejects.jsonl").read_bytes() == ref_rejects
    assert table.num_rows == 28 and len(set(table.column("id").to_pylist())) == 28


def test_kill_after_some_shards_then_resume(pool, reference, tmp_path):
    out = tmp_path / "scores.parquet"
    proc = _spawn(pool, out, scorer={"sleep_s": 0.15})
    _wait_until(lambda: _finished_shards(out) >= 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = _finished_shards(out)
    assert 2 <= done_before < 8 and not out.exists()
    _resume_and_compare(pool, out, reference)
    prov = read_scores(out).provenance
    assert prov["engine"]["shards_resumed"] == done_before


def test_kill_mid_shard_then_resume(pool, reference, tmp_path):
    out = tmp_path / "scores.parquet"
    progress = tmp_path / "batches"
    proc = _spawn(pool, out, scorer={"sleep_s": 0.3, "progress_file": str(progress)})
    # Shards 0 and 1 take batches 1-4; batch 5 is the first of shard 2's two.
    _wait_until(lambda: progress.exists() and progress.read_text() == "5", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _finished_shards(out) == 2  # shards 0 and 1 written, shard 2 half scored and lost
    _resume_and_compare(pool, out, reference)


@pytest.mark.parametrize(
    "target",
    [
        ("shard-000003.parquet", 1),  # its rejects are on disk, its rows still a temp file
        ("shard-000001.rejects.jsonl", 1),  # the shard's first file not yet in place
        ("manifest.json", 1),  # before the store even exists
        ("rejects.jsonl", 1),  # every shard done, final rejects being written
        ("scores.parquet", 1),  # the final table's temp file written, not yet renamed
    ],
)
def test_kill_mid_write_then_resume(pool, reference, tmp_path, target):
    out = tmp_path / "scores.parquet"
    proc = _spawn(pool, out, kill_before_replace=list(target))
    assert proc.wait(timeout=120) == -signal.SIGKILL
    assert not out.exists()
    _resume_and_compare(pool, out, reference)
    # The killed write left a temp file behind at most; resuming cleaned the store's up.
    assert not list(store_path_for(out).glob(".*.tmp"))


def test_resume_after_a_complete_run_rescores_nothing(pool, reference, tmp_path):
    out = tmp_path / "scores.parquet"
    kwargs = {"shard_size": SHARD, "batch_size": BATCH, "fingerprint": FINGERPRINT}
    run_scoring(pool, TextScorerFactory(), out, progress=False, **kwargs)
    # A scorer that would die on any sample proves nothing is scored again.
    crash = TextScorerFactory(oom_ids=tuple(f"s{i}" for i in range(30)))
    table = run_scoring(pool, crash, out, resume=True, progress=False, **kwargs)
    assert same_table(table, read_scores(reference[0]).table)
    assert read_scores(out).provenance["engine"]["shards_resumed"] == 8


def test_fingerprint_mismatch_is_refused_naming_the_fields(pool, tmp_path):
    out = tmp_path / "scores.parquet"
    kwargs = {"shard_size": SHARD, "batch_size": BATCH, "progress": False}
    run_scoring(pool, TextScorerFactory(), out, fingerprint=FINGERPRINT, **kwargs)
    other = {**FINGERPRINT, "anchors": "sha256:other", "mode": "exact"}
    with pytest.raises(StoreError, match="different fingerprint") as excinfo:
        run_scoring(pool, TextScorerFactory(), out, resume=True, fingerprint=other, **kwargs)
    message = str(excinfo.value)
    assert "fingerprint.anchors" in message and "fingerprint.mode" in message
    assert "fingerprint.proxy" not in message
    # A different shard size would cut other shards: refused as well.
    with pytest.raises(StoreError, match=r"engine\.shard_size"):
        run_scoring(
            pool,
            TextScorerFactory(),
            out,
            resume=True,
            fingerprint=FINGERPRINT,
            shard_size=5,
            batch_size=BATCH,
            progress=False,
        )


def test_existing_store_without_resume_is_an_error(pool, tmp_path):
    out = tmp_path / "scores.parquet"
    kwargs = {"shard_size": SHARD, "batch_size": BATCH, "progress": False}
    run_scoring(pool, TextScorerFactory(), out, fingerprint=FINGERPRINT, **kwargs)
    with pytest.raises(StoreError, match=r"--resume"):
        run_scoring(pool, TextScorerFactory(), out, fingerprint=FINGERPRINT, **kwargs)


def test_shards_are_committed_atomically_with_their_ids(pool, tmp_path):
    out = tmp_path / "scores.parquet"
    run_scoring(
        pool,
        TextScorerFactory(),
        out,
        shard_size=SHARD,
        batch_size=BATCH,
        fingerprint=FINGERPRINT,
        progress=False,
    )
    store = store_path_for(out)
    ids = [pq.read_table(p).column("id").to_pylist() for p in sorted(store.glob("shard-*.parquet"))]
    # Shards are consecutive runs of 4 valid samples; worker rejects (s9, s21) leave gaps.
    assert ids[0] == ["s0", "s1", "s2", "s3"]
    assert ids[2] == ["s8", "s10", "inf-11"]
    assert [len(x) for x in ids] == [4, 4, 3, 4, 4, 3, 4, 2]
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["fingerprint"] == FINGERPRINT and manifest["engine"]["shard_size"] == SHARD


def test_pool_edited_in_place_is_detected_on_resume(pool, tmp_path):
    edited = tmp_path / "pool.jsonl"
    lines = pool.read_text().splitlines(keepends=True)
    edited.write_text("".join(lines))
    (tmp_path / "images").symlink_to(pool.parent / "images")
    out = tmp_path / "scores.parquet"
    kwargs = {"shard_size": SHARD, "batch_size": BATCH, "progress": False}
    run_scoring(edited, TextScorerFactory(), out, fingerprint=FINGERPRINT, **kwargs)
    edited.write_text("".join(lines[1:]))  # first record removed: every shard shifts by one
    with pytest.raises(StoreError, match="holds other samples than the pool gives now"):
        run_scoring(
            edited, TextScorerFactory(), out, resume=True, fingerprint=FINGERPRINT, **kwargs
        )
