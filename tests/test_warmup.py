"""Warm-up keeps an AdamW state from which the scorer's next step is the training run's next."""

from __future__ import annotations

import math

import pytest
import torch

from ostselect.proxy.warmup import WarmupConfig, select_fraction, train_steps, warmup
from ostselect.scoring.updates import AdamW
from scoring_toy_model import ToyProxy, make_samples

POOL = make_samples(40, seed=5)


def _proxy() -> ToyProxy:
    proxy = ToyProxy(seed=3)
    proxy.model.dropout.p = 0.0  # training and scoring then compute the same function
    return proxy


def test_select_fraction_is_seeded_and_in_pool_order():
    a = select_fraction(POOL, 0.1, seed=1)
    assert [s.id for s in a] == [s.id for s in select_fraction(POOL, 0.1, seed=1)]
    assert [s.id for s in a] != [s.id for s in select_fraction(POOL, 0.1, seed=2)]
    assert len(a) == 4 and [s.id for s in a] == sorted((s.id for s in a), key=lambda i: int(i[1:]))
    assert len(select_fraction(POOL, 0.001, seed=0)) == 1


@pytest.mark.parametrize("steps", [1, 4])
def test_scorer_step_from_checkpoint_equals_next_training_step(tmp_path, steps):
    config = WarmupConfig(lr=5e-2, batch_size=3, epochs=2, weight_decay=0.1, warmup_ratio=0.2)
    chosen = POOL[:12]
    probe = POOL[30]

    # run A: N steps, saved to disk and reloaded, then the scorer's simulated step on `probe`
    proxy_a = _proxy()
    result_a = train_steps(proxy_a, chosen, config, total_samples=len(POOL), max_steps=steps)
    saved = proxy_a.save(tmp_path / "ckpt", optimizer_state=result_a.state)
    loaded = ToyProxy.load(saved)
    state = loaded.optimizer_state()
    assert state.step == steps
    theta = {k: v.detach() for k, v in loaded.trainable_parameters().items()}
    leaves = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
    loss = loaded.per_sample_loss(loaded.prepare([probe]), leaves)[0]
    grads = dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values())), strict=True))
    simulated = AdamW.from_state(state, theta).apply(theta, grads)

    # run B: the same run, uninterrupted, takes step N+1 on `probe` with the scheduler's lr
    proxy_b = _proxy()
    result_b = train_steps(proxy_b, chosen, config, total_samples=len(POOL), max_steps=steps)
    opt = result_b.optimizer
    assert opt.param_groups[0]["lr"] == pytest.approx(state.lr, rel=0, abs=0)
    assert 0 < state.lr < config.lr  # mid-schedule: neither 0 nor the peak
    opt.zero_grad()
    proxy_b.per_sample_loss(proxy_b.prepare([probe])).mean().backward()
    opt.step()
    real = {k: v.detach() for k, v in proxy_b.trainable_parameters().items()}
    for k in real:
        assert torch.equal(simulated[k], real[k]), (k, (simulated[k] - real[k]).abs().max())
    moved = max(float((real[k] - theta[k]).abs().max()) for k in real)
    assert moved > 1e-4  # the step is real, so equality above means something


def test_warmup_saves_state_ids_and_metadata(tmp_path):
    proxy = _proxy()
    before = {k: v.detach().clone() for k, v in proxy.trainable_parameters().items()}
    config = WarmupConfig(fraction=0.25, lr=1e-2, batch_size=4, seed=7)
    calls = []
    path, result = warmup(
        proxy, POOL, tmp_path / "warm", config, progress=lambda n, loss: calls.append(n)
    )
    loaded = ToyProxy.load(path)
    import json

    meta = json.loads((path / "meta.json").read_text())
    expected_ids = [s.id for s in select_fraction(POOL, 0.25, 7)]
    assert meta["warmup_ids"] == expected_ids
    assert meta["warmup"]["steps"] == result.steps == math.ceil(10 / 4) == sum(1 for _ in calls)
    assert loaded.optimizer_state().step == result.steps
    assert set(loaded.optimizer_state().exp_avg) == set(proxy.trainable_parameters())
    after = loaded.trainable_parameters()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # it trained
