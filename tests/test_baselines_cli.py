"""`ost baseline NAME ...` end to end: pool file in, scores Parquet (with provenance) out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ostselect.baselines import BASELINE_NAMES
from ostselect.cli import app
from ostselect.data.rejects import read_rejects
from ostselect.scores import read_scores

runner = CliRunner()


def write_pool(path: Path, n: int, *, bad_line: bool = False, images: bool = False) -> Path:
    from ostselect.proxy.toy import noise_png

    lines = []
    for i in range(n):
        record: dict = {
            "id": f"r{i}",
            "messages": [
                {"role": "user", "content": f"What is {i} + 1?"},
                {"role": "assistant", "content": f"{i} + 1 = {i + 1}. grade={1 + i % 10}"},
            ],
        }
        if images:
            (path.parent / f"img{i}.png").write_bytes(noise_png(i))
            record["messages"][0]["content"] = "<image>\n" + record["messages"][0]["content"]
            record["images"] = [f"img{i}.png"]
        lines.append(json.dumps(record))
    if bad_line:
        lines.insert(1, '{"id": "cut", "messages": [{"role": "us')
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("name", BASELINE_NAMES)
def test_every_baseline_has_help(name: str) -> None:
    result = runner.invoke(app, ["baseline", name, "--help"])
    assert result.exit_code == 0, result.output
    assert "--pool" in result.output and "--out" in result.output and "Example" in result.output


def test_random_writes_scores_and_rejects_bad_records(tmp_path: Path) -> None:
    pool = write_pool(tmp_path / "pool.jsonl", 5, bad_line=True)
    out = tmp_path / "scores" / "random.parquet"
    result = runner.invoke(
        app, ["baseline", "random", "--pool", str(pool), "--out", str(out), "--seed", "3"]
    )
    assert result.exit_code == 0, result.output
    scores = read_scores(out)
    assert scores.ids == [f"r{i}" for i in range(5)]
    assert scores.provenance["mode"] == "random" and scores.provenance["seed"] == 3
    assert scores.provenance["pool"] == str(pool)
    assert "wall_s" in scores.provenance["cost"]
    rejects = read_rejects(out.parent / "rejects.jsonl")
    assert [(r.file, r.line) for r in rejects] == [(str(pool), 2)]


def test_missing_pool_fails_with_a_message(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "baseline",
            "random",
            "--pool",
            str(tmp_path / "nope.jsonl"),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code != 0
    assert "nope.jsonl" in result.output


def test_loss_and_less_with_a_tiny_proxy(tmp_path: Path) -> None:
    from ostselect.proxy import build_tiny_proxy

    proxy = build_tiny_proxy(tmp_path / "proxy", arch="qwen2-vl")
    pool = write_pool(tmp_path / "pool.jsonl", 4, images=True)
    anchors = write_pool(tmp_path / "anchors.jsonl", 2, images=True)
    out = tmp_path / "loss.parquet"
    args = ["--pool", str(pool), "--proxy", str(proxy), "--out", str(out)]
    result = runner.invoke(app, ["baseline", "loss", *args, "--keep", "high"])
    assert result.exit_code == 0, result.output
    scores = read_scores(out)
    assert scores.table.column("utility").to_pylist() == scores.table.column("loss").to_pylist()
    assert scores.provenance["cost"]["forward_passes"] == 4
    result = runner.invoke(
        app, ["baseline", "less", *args, "--anchors", str(anchors), "--dim", "32"]
    )
    assert result.exit_code == 0, result.output
    scores = read_scores(out)
    settings = scores.provenance["settings"]
    assert settings["dim"] == 32 and settings["direction"] == "sgd"
    assert all(-1 <= u <= 1 for u in scores.utility)


def test_judge_over_http(tmp_path: Path) -> None:
    from test_baselines_judge import FakeChatServer

    server = FakeChatServer()
    server.thread.start()
    try:
        pool = write_pool(tmp_path / "pool.jsonl", 3, images=True)
        out = tmp_path / "judge.parquet"
        args = ["baseline", "judge", "--pool", str(pool), "--out", str(out)]
        args += ["--endpoint", server.url, "--model", "fake", "--concurrency", "2"]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        scores = read_scores(out)
        assert scores.utility.tolist() == [1.0, 2.0, 3.0]
        assert (tmp_path / "judge-cache.jsonl").exists()
        assert runner.invoke(app, args).exit_code == 0
        assert len(server.requests) == 3  # the rerun came from the cache
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


def test_factory_pickles_and_runs_under_the_engine(tmp_path: Path) -> None:
    import pickle

    from ostselect.baselines import BaselineFactory, run_baseline
    from ostselect.data import iter_samples
    from ostselect.engine.run import run_scoring
    from ostselect.proxy import build_tiny_proxy

    proxy = build_tiny_proxy(tmp_path / "proxy", arch="llava")
    pool = write_pool(tmp_path / "pool.jsonl", 5, images=True)
    factory = pickle.loads(pickle.dumps(BaselineFactory("loss", proxy_dir=str(proxy))))
    table = run_scoring(
        pool,
        factory,
        tmp_path / "engine.parquet",
        shard_size=2,
        fingerprint={"m": "loss"},
        progress=False,
    )
    samples = list(iter_samples(pool))
    direct = run_baseline("loss", samples, proxy=factory().proxy)
    assert table.column("id").to_pylist() == direct.column("id").to_pylist()
    assert table.column("utility").to_numpy() == pytest.approx(direct.column("utility").to_numpy())
