"""The fast paths of `Proxy` equal the slow ones, for every registered family: batched per-sample
gradients equal one-sample-at-a-time autograd (float64, SDPA attention throughout), evaluation
with LoRA merged into the base weights equals the LoRA side branch (float64), and the
fused-attention evaluation equals eager attention (float32)."""

from __future__ import annotations

import pytest
import torch

from ostselect.proxy import build_tiny_proxy, load_proxy
from ostselect.proxy.families import buildable_names
from ostselect.proxy.params import find_text_model
from ostselect.proxy.toy import toy_samples

ARCHES = buildable_names()  # every registered family with a tiny build
PARAMS = {
    "all": {"params": "all"},
    "lora": {"params": "lora"},
    "lora-top-half": {"params": "lora", "lora_layers": "top-half"},
}


@pytest.fixture(scope="module")
def proxy_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("proxies")
    return {arch: build_tiny_proxy(root / arch, arch=arch, seed=2) for arch in ARCHES}


@pytest.fixture(scope="module")
def samples():
    return toy_samples(5, seed=4)  # different lengths: the batch is padded


def _perturbed(theta, seed: int, scale: float = 0.05) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        k: v.detach() + scale * torch.randn(v.shape, generator=gen, dtype=v.dtype)
        for k, v in theta.items()
    }


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("params", list(PARAMS))
def test_batched_gradients_equal_one_at_a_time(proxy_dirs, samples, arch, params):
    proxy = load_proxy(proxy_dirs[arch], dtype="float64", **PARAMS[params])
    theta = _perturbed(proxy.trainable_parameters(), 0)  # LoRA B is zero at init: move it
    prepared = proxy.prepare(samples)
    assert prepared.attention_mask.sum(1).unique().numel() > 1  # really padded
    # LoRA goes through one batched backward + per-sample einsums, the rest through vmap(grad);
    # a float64 proxy attends with SDPA (float64; HF's eager softmax would be float32), so a
    # padded row differs from the one-sample batch by float64 round-off only.
    assert proxy.hf_model.config._attn_implementation == "sdpa"
    lora = params.startswith("lora")
    assert proxy.lora_adapters.only(theta) == lora
    losses, grads = proxy.per_sample_gradients(prepared, theta)
    assert losses.shape == (len(samples),)
    rel = 1e-10
    for i, s in enumerate(samples):
        leaves = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
        loss = proxy.per_sample_loss(proxy.prepare([s]), leaves)[0]
        ref = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
        assert float(losses[i]) == pytest.approx(float(loss), abs=1e-12, rel=rel)
        for (k, _), g in zip(leaves.items(), ref, strict=True):
            g = torch.zeros_like(theta[k]) if g is None else g
            scale = float(g.abs().max()) + 1e-30
            assert float((grads[k][i] - g).abs().max()) <= rel * scale + 1e-14, k


@pytest.mark.parametrize("arch", ARCHES)
def test_merged_lora_evaluation_equals_side_branch(proxy_dirs, samples, arch):
    proxy = load_proxy(proxy_dirs[arch], dtype="float64", params="lora")
    theta = _perturbed(proxy.trainable_parameters(), 1)
    prepared = proxy.prepare(samples)
    assert proxy.lora_adapters.merged(theta) is not None  # the fast path is really taken
    with torch.no_grad():
        merged = proxy.per_sample_loss(prepared, theta)
    with torch.enable_grad():  # grad mode keeps the side branch
        branch = proxy.per_sample_loss(prepared, theta).detach()
    plain = proxy.per_sample_loss(prepared, proxy.trainable_parameters()).detach()
    assert not torch.allclose(branch, plain)  # the perturbation matters
    torch.testing.assert_close(merged, branch, rtol=1e-11, atol=1e-12)
    # the flags are restored: the live model still runs its LoRA branches
    assert all(not m._disable_adapters for _, m, _ in proxy.lora_adapters.layers())


@pytest.mark.parametrize("arch", ARCHES)
def test_float32_evaluation_uses_fused_attention_and_equals_eager(
    proxy_dirs, samples, arch, monkeypatch
):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    calls = []
    sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]

    def counted(*args, **kwargs):
        calls.append(1)
        return sdpa(*args, **kwargs)

    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS, "sdpa", counted)
    proxy = load_proxy(proxy_dirs[arch], dtype="float32", params="all")
    theta = _perturbed(proxy.trainable_parameters(), 2, scale=0.02)
    prepared = proxy.prepare(samples)
    with torch.no_grad():
        fused = proxy.per_sample_loss(prepared, theta)
    n_layers = len(find_text_model(proxy.hf_model).layers)
    assert len(calls) == n_layers  # every layer went through the fused kernel
    with torch.enable_grad():  # the differentiable path keeps eager attention
        eager = proxy.per_sample_loss(prepared, theta).detach()
    torch.testing.assert_close(fused, eager, rtol=2e-6, atol=2e-6)
    configs = [m.config for m in proxy.hf_model.modules() if hasattr(m, "config")]
    assert all(c._attn_implementation == "eager" for c in configs)  # restored
