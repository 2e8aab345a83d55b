"""The engine reports progress per batch (local backend), counts resumed shards at once, and holds
Ctrl-C/SIGTERM until a shard being written is complete; none of it changes the rows."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from engine_kit import FINGERPRINT, TextScorerFactory, same_table, write_test_pool
from ostselect.engine import run_scoring, store_path_for
from ostselect.interrupt import Interrupted, deferred_signals, stop_on_signals
from ostselect.scores import read_scores

SHARD, BATCH = 6, 2  # 30 samples reach the shards (the reader rejects 3 records) -> 5 shards


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_test_pool(tmp_path_factory.mktemp("pool"))


def _run(pool: Path, out: Path, calls: list | None = None, **kwargs: object):
    return run_scoring(
        pool,
        TextScorerFactory(),
        out,
        shard_size=SHARD,
        batch_size=BATCH,
        fingerprint=FINGERPRINT,
        progress=False,
        on_progress=(lambda n, resumed: calls.append((n, resumed))) if calls is not None else None,
        **kwargs,
    )


def test_local_backend_reports_every_batch_and_rows_do_not_change(pool: Path, tmp_path: Path):
    plain = _run(pool, tmp_path / "plain" / "scores.parquet")
    calls: list[tuple[int, bool]] = []
    table = _run(pool, tmp_path / "watched" / "scores.parquet", calls)
    assert same_table(table, plain)
    assert sum(n for n, _ in calls) == 30  # every sample a shard held, rejected ones included
    assert not any(resumed for _, resumed in calls)
    assert all(0 < n <= BATCH for n, _ in calls)
    assert len(calls) >= 30 // BATCH  # per batch, not 5 reports for 5 shards


def test_resumed_shards_are_reported_at_once_then_new_work_per_batch(pool: Path, tmp_path: Path):
    out = tmp_path / "scores.parquet"
    full = _run(pool, out)
    store = store_path_for(out)
    for index in (3, 4):  # as if the run had been stopped after three shards
        (store / f"shard-{index:06d}.parquet").unlink()
    calls: list[tuple[int, bool]] = []
    table = _run(pool, out, calls, resume=True)
    assert same_table(table, full)
    resumed = [n for n, r in calls if r]
    fresh = [n for n, r in calls if not r]
    assert resumed == [SHARD, SHARD, SHARD] and calls[:3] == [(SHARD, True)] * 3
    assert sum(fresh) == 12 and all(n <= BATCH for n in fresh)


def test_a_signal_during_a_shard_write_waits_for_the_write(
    pool: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """SIGINT between a shard's rejects file and its rows (the commit marker) would lose the
    shard; held until the write is done, it stops the run right after it, the shard kept."""
    from ostselect.engine import store as store_module

    real_write = store_module.atomic_write_bytes

    def write(path: Path, data: bytes) -> None:
        real_write(path, data)
        if path.name.endswith(".rejects.jsonl"):  # the rows of this shard are not written yet
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # Python runs handlers between bytecodes: give it the chance

    monkeypatch.setattr(store_module, "atomic_write_bytes", write)
    # Python's own Ctrl-C handler, whatever this process inherited: a job started in the
    # background by a non-interactive shell starts with SIGINT ignored, and a held signal that
    # was ignored is (rightly) dropped, not raised.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    out = tmp_path / "scores.parquet"
    try:
        with pytest.raises(KeyboardInterrupt):
            _run(pool, out)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert sorted(p.name for p in store_path_for(out).glob("shard-*.parquet")) == [
        "shard-000000.parquet"
    ]
    monkeypatch.setattr(store_module, "atomic_write_bytes", real_write)
    reference = _run(pool, tmp_path / "reference" / "scores.parquet")
    assert same_table(_run(pool, out, resume=True), reference)
    assert same_table(read_scores(out).table, reference)


def test_deferred_signals_deliver_to_the_handler_in_place():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(Interrupted) as stopped, stop_on_signals(), deferred_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        finished = True  # reached: the signal waited
    assert finished and stopped.value.signum == signal.SIGTERM
    assert stopped.value.signal_name == "SIGTERM"
    assert {s: signal.getsignal(s) for s in before} == before  # handlers put back


def test_kept_shards_lists_every_pass_of_an_interrupted_hybrid_run(pool: Path, tmp_path: Path):
    from ostselect.scoring.driver import exact_rounds_root, first_pass_out, kept_shards

    out = tmp_path / "scores.parquet"
    assert kept_shards(out, "hybrid") == []
    _run(pool, first_pass_out(out, "hybrid"))  # pass 1 done
    _run(pool, exact_rounds_root(out) / "round-000")  # calibration done, then stopped
    (store_path_for(exact_rounds_root(out) / "round-000") / "shard-000004.parquet").unlink()
    kept = kept_shards(out, "hybrid")
    assert [(k.store.name, k.shards, k.samples) for k in kept] == [
        ("scores.parquet.first-order.shards", 5, 30),
        ("round-000.shards", 4, 24),
    ]
    assert kept_shards(out, "exact") == []  # another mode's stores are not this run's
