"""Proxy-based baselines on real tiny Hugging Face VLM proxies (Qwen2-VL and LLaVA), built offline.

Each proxy is warmed up for a few AdamW steps and reloaded from its folder with the optimizer state,
as `ost warmup` leaves it. Expected values come from the proxy's independent reference loss
(`per_sample_loss_reference`: a plain `model(**inputs)` on a fresh batch) and plain autograd.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from ostselect.baselines import run_baseline
from ostselect.baselines.norms import hf_supervised_logits
from ostselect.baselines.proxy_ops import without_question
from ostselect.data.sample import Sample, Turn
from ostselect.scores import read_provenance


@pytest.fixture(scope="module", params=["qwen2-vl", "llava"])
def warm(request, tmp_path_factory):
    from ostselect.proxy import build_tiny_proxy, load_proxy
    from ostselect.proxy.toy import toy_samples
    from ostselect.proxy.warmup import WarmupConfig, train_steps

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp(request.param)
    proxy = load_proxy(build_tiny_proxy(root / "init", arch=request.param), dtype="float64")
    config = WarmupConfig(lr=3e-3, batch_size=8, epochs=6, warmup_ratio=0.0)
    result = train_steps(proxy, toy_samples(24, seed=1, multi_turn_every=0), config)
    proxy.save(root / "warm", optimizer_state=result.state)
    warm = load_proxy(root / "warm", dtype="float64", params="all")
    assert warm.optimizer_state() is not None
    return warm


def eval_samples(n: int = 4) -> list[Sample]:
    from ostselect.proxy.toy import toy_samples

    return toy_samples(n, seed=2, multi_turn_every=0)


def ref_loss(proxy, sample: Sample) -> torch.Tensor:
    return proxy.per_sample_loss_reference([sample])[0]


def flat_grad(proxy, loss: torch.Tensor) -> torch.Tensor:
    grads = torch.autograd.grad(loss, list(proxy.trainable_parameters().values()))
    return torch.cat([g.reshape(-1) for g in grads])


def test_loss_ranks_garbled_answer_last(warm) -> None:
    pool = eval_samples(6)
    first = pool[0]
    garbled = Turn("assistant", "zq#v! kk8 ~~w Xy")
    pool.append(replace(first, id="garbled", turns=[first.turns[0], garbled]))
    rows = run_baseline("loss", pool, proxy=warm, batch_size=4).to_pylist()
    assert max(rows, key=lambda r: r["rank"])["id"] == "garbled"
    for row, sample in zip(rows, pool, strict=True):
        assert row["loss"] == pytest.approx(ref_loss(warm, sample).item(), rel=1e-9)


def test_ifd_equals_ratio_of_reference_losses(warm) -> None:
    pool = eval_samples(3)
    rows = run_baseline("ifd", pool, proxy=warm, drop_above_one=False).to_pylist()
    for row, sample in zip(rows, pool, strict=True):
        with_q = ref_loss(warm, sample).item()
        without_q = ref_loss(warm, without_question(sample)).item()
        assert row["ifd"] == pytest.approx(with_q / without_q, rel=1e-9)


def test_grand_and_less_match_autograd(warm) -> None:
    pool = eval_samples(2)
    anchors = eval_samples(5)[2:]
    grand = run_baseline("grand", pool, proxy=warm).to_pylist()
    less = run_baseline("less", pool, proxy=warm, anchors=anchors, dim=None)
    state = warm.optimizer_state()
    names = list(warm.trainable_parameters())
    m = torch.cat([state.exp_avg[n].reshape(-1) for n in names])
    v = torch.cat([state.exp_avg_sq[n].reshape(-1) for n in names])
    b1, b2 = state.betas
    t = state.step + 1
    anchor_loss = torch.stack([ref_loss(warm, a) for a in anchors]).mean()
    ga = flat_grad(warm, anchor_loss)
    for g_row, l_row, sample in zip(grand, less.to_pylist(), pool, strict=True):
        g = flat_grad(warm, ref_loss(warm, sample))
        assert g_row["grad_norm"] == pytest.approx(g.norm().item(), rel=1e-7)
        m_hat = (b1 * m + (1 - b1) * g) / (1 - b1**t)
        v_hat = (b2 * v + (1 - b2) * g * g) / (1 - b2**t)
        d = m_hat / (v_hat.sqrt() + state.eps)
        expected = (d @ ga / (d.norm() * ga.norm())).item()
        assert l_row["utility"] == pytest.approx(expected, rel=1e-6, abs=1e-9)
    prov = read_provenance(less)
    settings = prov["settings"]
    assert settings["direction"] == "adam" and settings["optimizer_step"] == state.step


def test_el2n_uses_the_hf_logits_at_the_supervised_positions(warm) -> None:
    pool = eval_samples(3)
    table = run_baseline("el2n", pool, proxy=warm)
    assert read_provenance(table)["settings"]["el2n_source"] == "hf-logits"
    with torch.no_grad():
        prepared = warm.prepare(pool)
        pairs = hf_supervised_logits(warm, prepared)
        own_loss = warm.per_sample_loss(prepared)
    counts = warm.supervised_token_counts(prepared).tolist()
    for (logits, labels), loss, count in zip(pairs, own_loss, counts, strict=True):
        assert len(labels) == count  # the same supervised positions as the proxy's own loss
        ce = torch.nn.functional.cross_entropy(logits, labels)
        assert ce.item() == pytest.approx(loss.item(), rel=1e-9)
    el2n = table.column("el2n").to_numpy()
    assert ((el2n > 0) & (el2n < 2**0.5)).all()
