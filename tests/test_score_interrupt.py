"""Ctrl-C during `ost score`: exit 130, say what is kept, print a resume command that works."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ostselect.data import write_samples
from ostselect.engine import store_path_for
from ostselect.scores import read_scores
from test_scoring_proxies import samples

N_POOL = 40  # ~4 s of scoring after the first shard: room to interrupt in between


def _ost() -> list[str]:
    script = Path(sys.executable).with_name("ost")
    return [str(script)] if script.exists() else [sys.executable, "-m", "ostselect"]


def _env() -> dict[str, str]:
    # One thread in every run: thread count can flip float32 roundings, and the cores are shared.
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_ctrl_c_keeps_finished_shards_and_the_printed_command_resumes(tmp_path: Path) -> None:
    from ostselect.proxy import build_tiny_proxy

    proxy = build_tiny_proxy(tmp_path / "proxy", arch="qwen2-vl", size="tiny")
    pool, anchors = tmp_path / "pool.jsonl", tmp_path / "anchors.jsonl"
    write_samples(samples(N_POOL, "p", 1), pool)
    write_samples(samples(16, "a", 2), anchors)

    def command(out: Path) -> list[str]:
        return [
            *_ost(),
            "score",
            "--proxy",
            str(proxy),
            "--pool",
            str(pool),
            "--anchors",
            str(anchors),
            "--out",
            str(out),
            "--device",
            "cpu",
            "--batch-size",
            "1",
            "--shard-size",
            "2",
        ]

    out = tmp_path / "run" / "scores.parquet"
    store = store_path_for(out)
    proc = subprocess.Popen(
        command(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()
    )
    deadline = time.monotonic() + 180
    while not any(store.glob("shard-*.parquet")):
        assert proc.poll() is None, "the run ended before a shard was written"
        assert time.monotonic() < deadline, "no shard was written in time"
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert not out.exists(), "the run finished before the interrupt: enlarge the pool"

    kept = len(list(store.glob("shard-*.parquet")))
    found = re.search(r"(\d+) scored samples in (\d+) finished shard\(s\) are kept in (\S+)/", err)
    assert found, err
    assert (int(found[1]), int(found[2])) == (2 * kept, kept) and 0 < kept < N_POOL // 2
    assert Path(found[3]) == store
    resume_line = err.split("Continue with:\n", 1)[1].splitlines()[0]
    resume = shlex.split(resume_line)
    assert resume == [*command(out), "--resume"] or resume[1:] == [*command(out)[1:], "--resume"]

    done = subprocess.run(resume, capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    assert read_scores(out).provenance["engine"]["shards_resumed"] == kept

    reference = tmp_path / "reference" / "scores.parquet"
    ref = subprocess.run(command(reference), capture_output=True, text=True, env=_env())
    assert ref.returncode == 0, ref.stderr

    got, expected = read_scores(out), read_scores(reference)
    assert got.ids == expected.ids and len(set(got.ids)) == N_POOL
    np.testing.assert_array_equal(got.utility, expected.utility)


def test_resume_command_is_the_same_command_line_plus_resume(tmp_path: Path) -> None:
    from ostselect.cli.score import _resume_command

    ost = str(tmp_path / "bin" / "ost")  # not the `ost` on PATH: kept as typed
    assert _resume_command([ost, "score", "--out", "my runs/s.parquet", "-q"]) == (
        f"{ost} score --out 'my runs/s.parquet' -q --resume"
    )
    assert _resume_command([ost, "score", "--resume", "--out", "s.parquet"]) == (
        f"{ost} score --resume --out s.parquet"
    )
    main = str(tmp_path / "ostselect" / "__main__.py")
    assert _resume_command([main, "score", "--out", "s.parquet"]) == (
        f"{shlex.quote(sys.executable)} -m ostselect score --out s.parquet --resume"
    )
    assert _resume_command(["pytest", "-q"]) is None  # invoked in-process: argv is not ours
