"""Outputs honour the umask: shareable (0644 under umask 022), not mkstemp's owner-only 0600."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine_kit import FINGERPRINT, TextScorerFactory, write_test_pool
from ostselect.cli import app
from ostselect.engine import run_scoring, store_path_for


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(("umask", "expected"), [(0o022, 0o644), (0o027, 0o640)])
def test_every_output_gets_the_mode_open_would_give(tmp_path, umask, expected):
    pool = write_test_pool(tmp_path / "data", n=12)
    scores = tmp_path / "run" / "scores.parquet"
    old = os.umask(umask)
    try:
        run_scoring(pool, TextScorerFactory(), scores, shard_size=4, fingerprint=FINGERPRINT)
        common = ["--pool", str(pool), "--scores", str(scores)]
        sub, report = tmp_path / "sub", tmp_path / "report.html"
        res = CliRunner().invoke(app, ["select", *common, "--out", str(sub), "--top", "50%"])
        assert res.exit_code == 0, res.output
        res = CliRunner().invoke(app, ["report", *common, "--out", str(report)])
        assert res.exit_code == 0, res.output
    finally:
        os.umask(old)
    store = store_path_for(scores)
    shards = sorted(store.glob("shard-*"))
    outputs = [scores, scores.with_name("rejects.jsonl"), store / "manifest.json", report]
    outputs += [sub / "pool.jsonl", sub / "selection.json"]
    assert shards and all(p.is_file() for p in outputs)
    assert {p.name: mode(p) for p in [*outputs, *shards]} == {
        p.name: expected for p in [*outputs, *shards]
    }
