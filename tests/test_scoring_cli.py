"""`ost warmup` then `ost score` end to end on a tiny Qwen2-VL proxy and a JSONL pool."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ostselect.cli import app
from ostselect.data import write_samples
from ostselect.scores import read_scores
from test_scoring_proxies import samples


@pytest.mark.slow
def test_warmup_then_score_from_the_command_line(tmp_path):
    from ostselect.proxy import build_tiny_proxy

    proxy = build_tiny_proxy(tmp_path / "proxy", arch="qwen2-vl", size="tiny")
    pool = tmp_path / "pool.jsonl"
    anchors = tmp_path / "anchors.jsonl"
    write_samples(samples(10, "p", 1), pool)
    write_samples(samples(4, "a", 2), anchors)
    with pool.open("a") as fh:  # one record whose image is missing: rejected, run goes on
        fh.write(
            json.dumps(
                {
                    "id": "lost",
                    "messages": [
                        {"role": "user", "content": "<image> what?"},
                        {"role": "assistant", "content": "a cat"},
                    ],
                    "images": ["nope.png"],
                }
            )
            + "\n"
        )
    runner = CliRunner()
    warm = tmp_path / "warm"
    res = runner.invoke(
        app,
        [
            "warmup",
            "--proxy",
            str(proxy),
            "--pool",
            str(pool),
            "--out",
            str(warm),
            "--fraction",
            "0.5",
            "--batch-size",
            "2",
            "--lr",
            "1e-3",
        ],
    )
    assert res.exit_code == 0, res.output
    from ostselect.proxy import load_proxy

    warmed = load_proxy(warm)
    assert len(warmed.metadata["warmup_ids"]) == 5  # 50% of the 10 usable records
    assert warmed.optimizer_state().step == 3
    out = tmp_path / "run" / "scores.parquet"
    res = runner.invoke(
        app,
        [
            "score",
            "--proxy",
            str(warm),
            "--pool",
            str(pool),
            "--anchors",
            str(anchors),
            "--out",
            str(out),
            "--mode",
            "hybrid",
            "--device",
            "cpu",
            "--cutoff",
            "30%",
        ],
    )
    assert res.exit_code == 0, res.output
    # 10 samples <= the default --calibration-size 64: hybrid scores exactly at once, and says so
    assert "hybrid ran exact instead: the calibration sample covers the pool" in " ".join(
        res.output.split()
    )
    scores = read_scores(out)
    assert len(scores.ids) == 10 and "lost" not in scores.ids
    assert scores.provenance["hybrid"]["rounds"] == 0 and all(
        scores.table["scored_exactly"].to_pylist()
    )
    assert scores.provenance["optimizer"] == "adamw"  # continues the warm-up state
    assert scores.provenance["settings"]["state_step"] == 3
    assert scores.provenance["pool_fingerprint"]
    rejects = (tmp_path / "run" / "rejects.jsonl").read_text()
    assert "lost" in rejects and "nope.png" in rejects


def test_score_rejects_bad_arguments(tmp_path):
    res = CliRunner().invoke(
        app,
        [
            "score",
            "--proxy",
            str(tmp_path),
            "--pool",
            str(tmp_path),
            "--anchors",
            str(tmp_path),
            "--cutoff",
            "150%",
        ],
    )
    assert res.exit_code == 2 and "cutoff" in res.output
