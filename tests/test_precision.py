"""bfloat16 and float16 proxies on CPU: scoring runs, keeps the sign convention, agrees with
float32 loosely (the tight figures come from benchmarks/precision_agreement.py), steps in float32
master precision, and the warm-up and score commands take `--dtype` end to end."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ostselect.cli import app
from ostselect.data import write_samples
from ostselect.data.sample import Sample, Turn
from ostselect.precision import peak_memory
from ostselect.proxy import build_tiny_proxy, load_proxy
from ostselect.proxy.api import OptimizerState
from ostselect.proxy.warmup import WarmupConfig, train_steps
from ostselect.scores import read_provenance, read_scores
from ostselect.scoring import ScoreConfig, score
from ostselect.scoring.hybrid import spearman
from ostselect.scoring.updates import SGD, AdamW
from test_scoring_proxies import samples

LOW = ("bfloat16", "float16")
POOL = samples(10, "p", 1)
ANCHORS = samples(5, "a", 2)


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    """A tiny Qwen2-VL proxy (all weights trainable) after a few float32 AdamW steps."""
    root = tmp_path_factory.mktemp("precision")
    base = build_tiny_proxy(root / "base", arch="qwen2-vl", size="tiny", seed=0)
    proxy = load_proxy(base, dtype="float32", params="all")
    cfg = WarmupConfig(lr=1e-3, batch_size=4, warmup_ratio=0.0, schedule_steps=40)
    result = train_steps(proxy, samples(12, "w", 3), cfg)
    return proxy.save(root / "warm", result.state)


def _memory(prov: dict) -> dict:
    """The peak-memory report, top-level or under `settings` (the provenance schema's home for
    keys it does not name)."""
    return prov.get("memory") or prov.get("settings", {})["memory"]


def _utility(table) -> np.ndarray:
    return table.column("utility").to_numpy(zero_copy_only=False).astype(np.float64)


def _config(mode: str, dtype: str) -> ScoreConfig:
    return ScoreConfig(mode=mode, optimizer="sgd", eta=0.05, dtype=dtype, batch_size=4)


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("mode", ["exact", "first-order"])
def test_low_precision_scores_run_and_agree_with_float32(warm, dtype, mode):
    reference = _utility(
        score(POOL, ANCHORS, load_proxy(warm, dtype="float32"), _config(mode, "float32"))
    )
    proxy = load_proxy(warm, dtype=dtype)
    assert proxy.dtype == getattr(torch, dtype)
    table = score(POOL, ANCHORS, proxy, _config(mode, dtype))
    assert table.column("status").to_pylist() == ["ok"] * len(POOL)
    u = _utility(table)
    assert np.isfinite(u).all() and np.any(u != 0)
    # loose on 10 samples; benchmarks/precision_agreement.py measures the real agreement
    assert spearman(reference, u) > 0.8, (reference, u)
    # same sign wherever float32's utility is clearly away from 0, and close in value
    clear = np.abs(reference) > 0.1 * np.abs(reference).max()
    assert (np.sign(u[clear]) == np.sign(reference[clear])).all(), (reference, u)
    assert np.abs(u - reference).max() < 0.05 * np.abs(reference).max(), (reference, u)
    prov = read_provenance(table)
    assert prov["dtype"] == dtype and prov["device"] == "cpu"
    assert _memory(prov)["peak_bytes"] > 0 and _memory(prov)["measure"] == "process peak RSS"


def _echo(anchor: Sample, answer: str | None = None) -> Sample:
    """A candidate with an anchor's image and question, and its answer or another one."""
    turns = list(anchor.turns)
    if answer is not None:
        turns[-1] = Turn("assistant", answer)
    return dataclasses.replace(anchor, id=f"echo-{answer is not None}", turns=turns)


@pytest.mark.parametrize("dtype", LOW)
def test_sign_convention_holds_in_low_precision(warm, dtype):
    """Training on an anchor itself lowers the anchor loss (utility > 0); the same question
    with a contradicting answer helps less."""
    anchor = ANCHORS[0]
    same = _echo(anchor)
    other = _echo(anchor, "blue blue blue blue blue blue")
    for mode in ("exact", "first-order"):
        table = score([same, other], ANCHORS, load_proxy(warm, dtype=dtype), _config(mode, dtype))
        u_same, u_other = _utility(table)
        assert u_same > 0, (mode, u_same)
        assert u_other < u_same, (mode, u_same, u_other)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_steps_are_taken_in_float32_and_rounded_once(dtype):
    """A step below the low dtype's rounding survives in float32 and is rounded at the end."""
    p = {"w": torch.tensor([1.0, 0.5, -2.0], dtype=dtype)}
    g = {"w": torch.tensor([3e-3, -1e-3, 2e-3], dtype=dtype)}
    sgd = SGD(lr=0.5)
    out = sgd.apply(p, g)["w"]
    expected = (p["w"].float() - 0.5 * g["w"].float()).to(dtype)
    assert out.dtype == dtype and torch.equal(out, expected)
    assert sgd.displacement(p, g)["w"].dtype == torch.float32
    state = OptimizerState(
        step=3,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0.01,
        exp_avg={"w": torch.full((3,), 1e-5)},
        exp_avg_sq={"w": torch.full((3,), 1e-10)},  # 0 in float16: the step would be m / eps
    )
    adamw = AdamW.from_state(state, p)
    assert adamw.exp_avg_sq["w"].dtype == torch.float32 and bool((adamw.exp_avg_sq["w"] > 0).all())
    stepped = adamw.apply(p, g)["w"]
    master = AdamW.from_state(state, {"w": p["w"].float()}).apply(
        {"w": p["w"].float()}, {"w": g["w"].float()}
    )["w"]
    assert stepped.dtype == dtype and torch.equal(stepped, master.to(dtype))
    assert torch.isfinite(adamw.displacement(p, g)["w"]).all()


def test_low_precision_proxy_keeps_float32_optimizer_moments(warm):
    proxy = load_proxy(warm, dtype="float16")
    state = proxy.optimizer_state()
    assert state is not None
    assert {v.dtype for v in state.exp_avg_sq.values()} == {torch.float32}
    assert {p.dtype for p in proxy.trainable_parameters().values()} == {torch.float16}


def test_peak_memory_reports_rss_on_cpu():
    report = peak_memory("cpu")
    assert report["device"] == "cpu" and report["peak_bytes"] > 10 * 2**20


@pytest.mark.slow
@pytest.mark.parametrize("dtype", LOW)
def test_warmup_and_score_commands_take_low_dtypes(tmp_path, dtype):
    proxy = build_tiny_proxy(tmp_path / "proxy", arch="qwen2-vl", size="tiny")
    pool, anchors = tmp_path / "pool.jsonl", tmp_path / "anchors.jsonl"
    write_samples(samples(8, "p", 1), pool)
    write_samples(samples(4, "a", 2), anchors)
    runner = CliRunner()
    warm = tmp_path / "warm"
    args = ["--fraction", "0.5", "--batch-size", "2", "--lr", "1e-3", "--dtype", dtype]
    res = runner.invoke(
        app, ["warmup", "--proxy", str(proxy), "--pool", str(pool), "--out", str(warm), *args]
    )
    assert res.exit_code == 0, res.output
    # mixed precision: the folder keeps float32 master weights and float32 moments
    saved = load_proxy(warm, dtype="float32", params=None)
    assert saved.metadata["warmup"]["compute_dtype"] == dtype
    assert all(torch.isfinite(p).all() for p in saved.trainable_parameters().values())
    out = tmp_path / "scores.parquet"
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
            "--dtype",
            dtype,
            "--device",
            "cpu",
            "--eta",
            "0.01",
            "--quiet",
        ],
    )
    assert res.exit_code == 0, res.output
    scores = read_scores(out)
    assert scores.table.column("status").to_pylist() == ["ok"] * 8
    assert scores.provenance["dtype"] == dtype and _memory(scores.provenance)["peak_bytes"] > 0
