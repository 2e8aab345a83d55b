"""float64 is float64 end to end: a float64 proxy attends with SDPA (HF's eager softmax is float32
even in a float64 model), so exact and naive scores equal an independent float64 loop (a plain HF
forward and backward on the sample, a `torch.optim` step, a plain HF forward on each anchor) to
1e-12 relative to the largest utility."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ostselect.proxy import build_tiny_proxy, load_proxy
from ostselect.proxy.toy import word_samples
from ostselect.scoring import ScoreConfig, score
from proxy_kit import warmed_copy

ARCHES = ("qwen2-vl", "llava")
POOL = list(word_samples(4, "p", 1, answer_words=(2, 8)))
ANCHORS = list(word_samples(5, "a", 2, answer_words=(2, 8)))
ETA = {"sgd": 1e-2, "adamw": 1e-3}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Per arch: a tiny proxy warmed up for two AdamW steps (so it has optimizer state)."""
    root = tmp_path_factory.mktemp("f64")
    out = {}
    for arch in ARCHES:
        base = build_tiny_proxy(root / arch, arch=arch, seed=0)
        out[arch] = warmed_copy(base, root / f"{arch}-warm", word_samples(4, "w", 3))
    return out


def _loop_utilities(folder, optimizer: str) -> np.ndarray:
    """u(z) = mean anchor loss before - after one optimizer step on z alone, the plain way."""
    proxy = load_proxy(folder, dtype="float64")  # SDPA everywhere: float64 attention
    assert proxy.hf_model.config._attn_implementation == "sdpa"
    params = proxy.trainable_parameters()
    theta = {k: v.detach().clone() for k, v in params.items()}
    state = proxy.optimizer_state()

    def anchor_loss() -> float:
        with torch.no_grad():  # one anchor at a time: no padding anywhere
            losses = [float(proxy.per_sample_loss_reference([a])[0]) for a in ANCHORS]
        return math.fsum(losses) / len(losses)

    before = anchor_loss()
    out = []
    for sample in POOL:
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(theta[k])
                p.grad = None
        proxy.per_sample_loss_reference([sample])[0].backward()
        if optimizer == "sgd":
            with torch.no_grad():
                for p in params.values():
                    p.sub_(ETA["sgd"] * p.grad)
        else:
            opt = torch.optim.AdamW(
                list(params.values()),
                lr=ETA["adamw"],
                betas=state.betas,
                eps=state.eps,
                weight_decay=state.weight_decay,
            )
            for k, p in params.items():
                opt.state[p] = {
                    "step": torch.tensor(float(state.step), dtype=torch.float64),
                    "exp_avg": state.exp_avg[k].clone(),
                    "exp_avg_sq": state.exp_avg_sq[k].clone(),
                }
            opt.step()
        out.append(before - anchor_loss())
    return np.array(out)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
@pytest.mark.parametrize("arch", ARCHES)
def test_exact_and_naive_equal_an_independent_float64_loop(folders, arch, optimizer):
    expected = _loop_utilities(folders[arch], optimizer)
    proxy = load_proxy(folders[arch], dtype="float64")
    cfg = dict(optimizer=optimizer, eta=ETA[optimizer], anchor_batch_size=3)
    exact = score(POOL, ANCHORS, proxy, ScoreConfig(mode="exact", batch_size=3, **cfg))
    naive = score(POOL, ANCHORS, proxy, ScoreConfig(mode="naive", **cfg))
    scale = np.abs(expected).max()
    assert scale > 1e-6  # the steps matter
    for table in (exact, naive):
        got = table.column("utility").to_numpy(zero_copy_only=False)
        assert np.abs(got - expected).max() <= 1e-12 * scale, np.abs(got - expected).max() / scale


def test_eager_float64_is_only_float32_accurate_in_attention(folders):
    """Why SDPA: the same scores with eager attention are off by float32 round-off."""
    expected = _loop_utilities(folders["qwen2-vl"], "sgd")
    proxy = load_proxy(folders["qwen2-vl"], dtype="float64", attn_implementation="eager")
    cfg = ScoreConfig(mode="exact", optimizer="sgd", eta=ETA["sgd"])
    got = score(POOL, ANCHORS, proxy, cfg).column("utility").to_numpy(zero_copy_only=False)
    error = np.abs(got - expected).max() / np.abs(expected).max()
    assert 1e-12 < error < 1e-4, error
