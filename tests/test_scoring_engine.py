"""The OST scorer through the engine: same rows as in-process `score()`, resumable after SIGKILL,
fingerprint-checked, the same on Ray, and a sample whose loss is NaN marked, not fatal.

One tiny Qwen2-VL proxy (float64, LoRA, SGD) whose embedding row for the token "~" is NaN: a pool
sample answering "~~~~" has a non-finite loss through the real model, every other sample is fine
(the anchors never use that token and the embeddings are frozen).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from engine_kit import same_table
from ostselect.cli import app
from ostselect.data import write_samples
from ostselect.data.sample import Sample, Turn
from ostselect.scores import read_scores
from ostselect.scoring import ScoreConfig, score
from ostselect.scoring.driver import OSTScorerFactory, score_pool
from test_scoring_proxies import samples

POISON_ID = "poison"
CONFIG = dict(
    optimizer="sgd", eta=0.05, dtype="float64", device="cpu", group_field="topic", batch_size=4
)
CLI_ARGS = [
    "--params", "lora", "--optimizer", "sgd", "--eta", "0.05", "--dtype", "float64",
    "--device", "cpu", "--group-field", "topic", "--batch-size", "2",
]  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The poisoned proxy folder, a 12-sample pool (one poisoned) and a 4-anchor file."""
    import torch
    from safetensors.torch import load_file, save_file

    from ostselect.proxy import build_tiny_proxy, load_proxy

    root = tmp_path_factory.mktemp("world")
    proxy_dir = build_tiny_proxy(root / "proxy", arch="qwen2-vl", size="tiny", seed=0)
    tokenizer = load_proxy(proxy_dir).processor.tokenizer
    poison_ids = set(tokenizer.encode("~")) - set(tokenizer.encode(" the cat sat on a mat"))
    assert poison_ids, "the tokenizer has no token of its own for '~'"
    weights_file = proxy_dir / "model.safetensors"
    weights = load_file(str(weights_file))
    (embed_key,) = [k for k in weights if k.endswith("embed_tokens.weight")]
    weights[embed_key][sorted(poison_ids)] = torch.nan
    save_file(weights, str(weights_file), metadata={"format": "pt"})
    pool_samples = samples(11, "p", 1)
    poison = Sample(
        id=POISON_ID,
        turns=[Turn("user", "what is this?"), Turn("assistant", "~~~~")],
        extra={"topic": "shapes"},
    )
    pool_samples.insert(5, poison)
    pool = root / "pool.jsonl"
    anchors = root / "anchors.jsonl"
    write_samples(pool_samples, pool)
    write_samples(samples(4, "a", 2), anchors)
    return {"proxy": proxy_dir, "pool": pool, "anchors": anchors, "root": root}


def _factory(world: dict[str, Path], **config: object) -> OSTScorerFactory:
    cfg = ScoreConfig(**{**CONFIG, **config})
    return OSTScorerFactory(world["proxy"], world["anchors"], cfg, params="lora")


def _in_process(world: dict[str, Path], **config: object):
    import torch

    from ostselect.proxy import load_proxy

    torch.manual_seed(0)  # the LoRA initialisation, as the engine's workers seed it (config.seed)
    proxy = load_proxy(world["proxy"], dtype="float64", params="lora")
    rejects: list = []
    table = score(
        world["pool"],
        world["anchors"],
        proxy,
        ScoreConfig(**{**CONFIG, **config}),
        on_reject=rejects.append,
    )
    return table, rejects


def _assert_same_rows(a, b, rel: float = 1e-12) -> None:
    """Ids, statuses, ranks, flags equal; numbers equal to float64 round-off (NaN == NaN)."""
    assert a.column_names == b.column_names
    for name in a.column_names:
        x, y = a.column(name).to_pylist(), b.column(name).to_pylist()
        if name in ("utility", "loss") or name.startswith("utility["):
            x, y = np.array(x, dtype=float), np.array(y, dtype=float)
            assert np.array_equal(np.isnan(x), np.isnan(y)), name
            ok = ~np.isnan(x)
            scale = max(np.abs(x[ok]).max(initial=0.0), 1e-300)
            assert np.abs(x[ok] - y[ok]).max(initial=0.0) <= rel * scale, name
        else:
            assert x == y, name


@pytest.mark.parametrize("mode", ["exact", "first-order"])
def test_engine_equals_in_process_score_row_for_row(world, tmp_path, mode):
    # Shards of 8 cut the stream where in-process batches of 4 do: the very same computation.
    expected, rejects = _in_process(world, mode=mode)
    out = tmp_path / "scores.parquet"
    table = score_pool(world["pool"], _factory(world, mode=mode), out, shard_size=8)
    _assert_same_rows(table, expected, rel=0.0)
    _assert_same_rows(read_scores(out).table, expected, rel=0.0)
    assert "utility[shapes]" in table.column_names and "utility[colors]" in table.column_names
    assert "_reject" not in table.column_names and "step_sq" not in table.column_names
    assert table.num_rows == 12 and set(table.column("mode").to_pylist()) == {mode}

    # the poisoned sample is marked, ranked last, and listed in the rejects with where it came from
    status = dict(zip(table["id"].to_pylist(), table["status"].to_pylist(), strict=True))
    assert status.pop(POISON_ID) == "nonfinite" and set(status.values()) == {"ok"}
    row = table.column("id").to_pylist().index(POISON_ID)
    assert math.isnan(table.column("utility")[row].as_py())
    assert table.column("rank")[row].as_py() == 12
    lines = [json.loads(x) for x in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [(r["id"], r["code"], r["line"]) for r in lines] == [(POISON_ID, "score_nonfinite", 6)]
    assert lines[0]["file"].endswith("pool.jsonl")
    assert [(r.id, r.code, r.line) for r in rejects] == [(POISON_ID, "score_nonfinite", 6)]
    prov = read_scores(out).provenance
    assert prov["mode"] == mode and prov["optimizer"] == "sgd" and prov["counts"]["ok"] == 11
    assert prov["engine"]["shards"] == 2 and prov["fingerprint"]["anchor_hash"]


def test_rows_do_not_depend_on_batch_or_shard_boundaries(world, tmp_path):
    """A sample's row is the same whichever neighbours share its batch (float64 round-off only):
    shards of 3 and batches of 2 against one stream in batches of 4."""
    expected, _ = _in_process(world, mode="exact")
    out = tmp_path / "scores.parquet"
    factory = _factory(world, mode="exact", batch_size=2)
    _assert_same_rows(score_pool(world["pool"], factory, out, shard_size=3), expected)


def test_hybrid_through_the_engine_equals_in_process_hybrid(world, tmp_path):
    cfg = dict(mode="hybrid", cutoff="25%", calibration_size=3)
    expected, _ = _in_process(world, **cfg)
    out = tmp_path / "scores.parquet"
    table = score_pool(world["pool"], _factory(world, **cfg), out, shard_size=4)
    _assert_same_rows(table, expected, rel=0.0)
    prov = read_scores(out).provenance["hybrid"]
    exact_rows = table.column("scored_exactly").to_pylist()
    assert prov["rescored"] == sum(exact_rows) and 3 <= prov["rescored"] < 11
    rounds = sorted(p.name for p in (tmp_path / "scores.parquet.exact.shards").glob("*.shards"))
    assert rounds[0] == "round-000.shards" and len(rounds) == prov["rounds"] + 1
    assert not (tmp_path / "scores.parquet.first-order").exists()  # pass 1's table is cleaned up
    # exact rows hold exact values: compare with a plain exact run
    exact, _ = _in_process(world, mode="exact")
    u_h = np.array(table.column("utility").to_pylist(), dtype=float)
    u_e = np.array(exact.column("utility").to_pylist(), dtype=float)
    assert np.allclose(u_h[exact_rows], u_e[exact_rows], rtol=1e-12, atol=0)


def _cli(world: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        "score",
        "--proxy", str(world["proxy"]),
        "--pool", str(world["pool"]),
        "--anchors", str(world["anchors"]),
        "--out", str(out),
        "--shard-size", "1",
        *CLI_ARGS,
        *extra,
    ]  # fmt: skip


def _spawn(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    code = "import sys; from ostselect.cli import app; app(sys.argv[1:])"
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env)


def _finished(store: Path) -> int:
    return len(list(store.glob("shard-*.parquet"))) if store.exists() else 0


@pytest.mark.parametrize(
    ("mode", "store_suffix", "kill_after"),
    [("first-order", ".shards", 4), ("hybrid", ".exact.shards/round-000.shards", 2)],
)
def test_sigkill_then_resume_equals_an_uninterrupted_run(
    world, tmp_path, mode, store_suffix, kill_after
):
    # a calibration sample smaller than the pool: hybrid runs its passes (first-order, rounds)
    extra = ["--mode", mode, "--cutoff", "25%", "--calibration-size", "4"]
    reference = tmp_path / "ref" / "scores.parquet"
    res = CliRunner().invoke(app, _cli(world, reference, *extra))
    assert res.exit_code == 0, res.output

    out = tmp_path / "run" / "scores.parquet"
    store = Path(str(out) + store_suffix)
    proc = _spawn(_cli(world, out, *extra))
    deadline = time.monotonic() + 120
    while _finished(store) < kill_after:
        assert proc.poll() is None, "the run ended before the kill point"
        assert time.monotonic() < deadline, "kill point never reached"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "killed too late: the run had finished"

    res = CliRunner().invoke(app, _cli(world, out, *extra, "--resume"))
    assert res.exit_code == 0, res.output
    assert "resumed" in res.output
    assert same_table(read_scores(out).table, read_scores(reference).table)
    assert (out.parent / "rejects.jsonl").read_bytes() == (
        reference.parent / "rejects.jsonl"
    ).read_bytes()


def test_resume_under_another_fingerprint_is_refused(world, tmp_path):
    out = tmp_path / "scores.parquet"
    runner = CliRunner()
    first = runner.invoke(app, _cli(world, out, "--mode", "first-order"))
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, _cli(world, out, "--mode", "first-order"))
    assert again.exit_code == 2 and "--resume" in again.output
    other_eta = [*_cli(world, out, "--mode", "first-order", "--resume"), "--eta", "0.01"]
    refused = runner.invoke(app, other_eta)
    assert refused.exit_code == 2
    flat = " ".join(refused.output.split())
    assert "scored with another --eta;" in flat, flat  # the flag, not the field name
    assert "config.lr" not in flat and "resume=True" not in again.output
    # same settings resume fine (every shard skipped) and give the same table
    before = read_scores(out).table
    ok = runner.invoke(app, _cli(world, out, "--mode", "first-order", "--resume"))
    assert ok.exit_code == 0, ok.output
    assert same_table(read_scores(out).table, before)
    assert read_scores(out).provenance["engine"]["shards_resumed"] == 12


def test_engine_options_are_checked_and_documented(world, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, [*_cli(world, tmp_path / "s.parquet"), "--num-workers", "2"])
    assert res.exit_code == 2 and "--backend ray" in res.output
    res = runner.invoke(app, [*_cli(world, tmp_path / "s.parquet"), "--backend", "spark"])
    assert res.exit_code == 2 and "local or ray" in res.output
    res = runner.invoke(app, ["score", "--help"], terminal_width=200)
    assert res.exit_code == 0
    for text in ("--resume", "--backend", "--address", "ray start --head", "--gpus-per-worker"):
        assert text in res.output


@pytest.mark.slow
def test_ray_backend_equals_local_backend(world, tmp_path):
    ray = pytest.importorskip("ray")
    from ostselect.engine.ray_backend import start_ray

    local = score_pool(
        world["pool"],
        _factory(world, mode="hybrid", calibration_size=3),
        tmp_path / "local" / "scores.parquet",
        shard_size=3,
    )
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    assert start_ray(None, num_cpus=2)
    try:
        out = tmp_path / "ray" / "scores.parquet"
        table = score_pool(
            world["pool"],
            _factory(world, mode="hybrid", calibration_size=3),
            out,
            shard_size=3,
            backend="ray",
            num_workers=2,
        )
    finally:
        ray.shutdown()
    _assert_same_rows(table, local, rel=0.0)
    engine = read_scores(out).provenance["engine"]
    assert engine["backend"] == "ray" and engine["workers"] == 2
