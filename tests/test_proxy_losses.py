"""Tiny proxies of every architecture: build offline, reload, and the prepared (cached-prefix) loss
equals the plain HF forward; functional params, vmap and gradients behave."""

from __future__ import annotations

import pytest
import torch

from ostselect.proxy import build_tiny_proxy, load_proxy
from ostselect.proxy.families import buildable_names
from ostselect.proxy.toy import toy_samples

ARCHES = buildable_names()
PARAM_CASES = [("all", {}), ("lora", {}), ("lora", {"lora_layers": "top-half"})]


@pytest.fixture(scope="module")
def proxy_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("proxies")
    return {arch: build_tiny_proxy(root / arch, arch=arch, seed=1) for arch in ARCHES}


@pytest.fixture(scope="module")
def samples():
    return toy_samples(5, seed=3)


def _perturb_lora(proxy, seed: int = 0) -> None:
    """Fresh LoRA B matrices are zero; make the adapters matter so the test can fail."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in proxy.trainable_parameters().values():
            t.add_(0.05 * torch.randn(t.shape, generator=gen, dtype=t.dtype))


@pytest.mark.parametrize("arch", ARCHES)
def test_build_reload_and_loss(proxy_dirs, samples, arch):
    from transformers import AutoModelForImageTextToText

    folder = proxy_dirs[arch]
    assert (folder / "ostselect.json").is_file()
    model = AutoModelForImageTextToText.from_pretrained(folder)  # a plain HF checkpoint
    n_params = sum(p.numel() for p in model.parameters())
    assert 50_000 < n_params < 5_000_000
    proxy = load_proxy(folder)
    assert proxy.arch == arch
    losses = proxy.per_sample_loss_reference(samples)
    assert losses.shape == (len(samples),)
    assert torch.isfinite(losses).all()
    # random init over a vocab of V tokens: loss near log(V)
    vocab = proxy.hf_model.get_output_embeddings().weight.shape[0]
    assert torch.allclose(
        losses, torch.full_like(losses, float(torch.log(torch.tensor(vocab)))), atol=1.0
    )


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize(("params", "kw"), PARAM_CASES, ids=["all", "lora", "lora-top-half"])
def test_prepared_equals_reference_float64(proxy_dirs, samples, arch, params, kw):
    proxy = load_proxy(proxy_dirs[arch], params=params, dtype="float64", **kw)
    if params == "lora":
        _perturb_lora(proxy)
    prepared = proxy.prepare(samples)
    expected_start = 2 if kw.get("lora_layers") == "top-half" else 0
    assert prepared.start_layer == expected_start
    reference = proxy.per_sample_loss_reference(samples)
    fast = proxy.per_sample_loss(prepared)
    theta = {k: v.detach().clone() for k, v in proxy.trainable_parameters().items()}
    functional = proxy.per_sample_loss(prepared, theta)
    torch.testing.assert_close(fast, reference, rtol=0, atol=1e-10)
    torch.testing.assert_close(functional, reference, rtol=0, atol=1e-10)


@pytest.mark.parametrize("arch", ["qwen2-vl", "llava"])
@pytest.mark.parametrize(("params", "kw"), PARAM_CASES, ids=["all", "lora", "lora-top-half"])
def test_prepared_equals_reference_float32(proxy_dirs, samples, arch, params, kw):
    proxy = load_proxy(proxy_dirs[arch], params=params, **kw)
    if params == "lora":
        _perturb_lora(proxy)
    fast = proxy.per_sample_loss(proxy.prepare(samples))
    torch.testing.assert_close(fast, proxy.per_sample_loss_reference(samples), rtol=0, atol=2e-6)


@pytest.mark.parametrize("params", ["all", "lora"])
def test_functional_params_are_used_and_differentiable(proxy_dirs, samples, params):
    """A perturbed params dict gives the loss of a model holding those weights, with gradients."""
    proxy = load_proxy(proxy_dirs["qwen2-vl"], params=params, dtype="float64")
    prepared = proxy.prepare(samples)
    theta = proxy.trainable_parameters()
    gen = torch.Generator().manual_seed(0)
    moved = {
        k: (v + 0.02 * torch.randn(v.shape, generator=gen, dtype=v.dtype)).detach()
        for k, v in theta.items()
    }
    moved = {k: v.requires_grad_(True) for k, v in moved.items()}
    loss_moved = proxy.per_sample_loss(prepared, moved)
    base = proxy.per_sample_loss(prepared).detach()
    assert (loss_moved.detach() - base).abs().max() > 1e-6
    loss_moved.mean().backward()
    assert all(v.grad is not None for v in moved.values())
    assert sum(float(v.grad.abs().sum()) for v in moved.values()) > 0
    with torch.no_grad():  # the same weights written into the model give the same loss
        for k, v in theta.items():
            v.copy_(moved[k])
    torch.testing.assert_close(
        proxy.per_sample_loss_reference(samples), loss_moved.detach(), rtol=0, atol=1e-10
    )


@pytest.mark.parametrize("arch", ["qwen2-vl", "llava"])
def test_vmap_over_candidate_params(proxy_dirs, samples, arch):
    proxy = load_proxy(proxy_dirs[arch], params="lora", lora_layers="top-half", dtype="float64")
    prepared = proxy.prepare(samples)
    gen = torch.Generator().manual_seed(1)
    stacked = {
        k: v.detach()[None] + 0.05 * torch.randn((3, *v.shape), generator=gen, dtype=v.dtype)
        for k, v in proxy.trainable_parameters().items()
    }
    batched = torch.func.vmap(lambda p: proxy.per_sample_loss(prepared, p))(stacked)
    looped = torch.stack(
        [proxy.per_sample_loss(prepared, {k: v[c] for k, v in stacked.items()}) for c in range(3)]
    )
    assert batched.shape == (3, len(samples))
    torch.testing.assert_close(batched, looped, rtol=0, atol=1e-10)


def test_param_selection(proxy_dirs):
    proxy = load_proxy(proxy_dirs["qwen2-vl"], params="all")
    names = proxy.trainable_parameters()
    assert names and not any(".visual." in n for n in names)
    assert any("embed_tokens" in n for n in names) and any(n.startswith("lm_head") for n in names)
    lora = load_proxy(
        proxy_dirs["qwen2-vl"], params="lora", lora_layers="top-half", lora_targets=["q_proj"]
    )
    lnames = list(lora.trainable_parameters())
    assert lnames and all("lora_" in n and "q_proj" in n for n in lnames)
    assert all(".layers.2." in n or ".layers.3." in n for n in lnames)
    regex = load_proxy(proxy_dirs["qwen2-vl"], params=r"visual\.merger|layers\.3\.mlp")
    rnames = list(regex.trainable_parameters())
    assert any("visual.merger" in n for n in rnames) and any("layers.3.mlp" in n for n in rnames)
    assert "nothing is cached" in regex.frozen_description()
    with pytest.raises(ValueError, match="matches no parameter"):
        load_proxy(proxy_dirs["qwen2-vl"], params="no_such_parameter")


def test_vision_trainable_falls_back_to_full_forward(proxy_dirs, samples):
    proxy = load_proxy(proxy_dirs["llava"], params=r"vision_tower.*layers\.1\.", dtype="float64")
    prepared = proxy.prepare(samples)
    assert prepared.hidden is None
    theta = {k: v.detach().clone() for k, v in proxy.trainable_parameters().items()}
    torch.testing.assert_close(
        proxy.per_sample_loss(prepared, theta),
        proxy.per_sample_loss_reference(samples),
        rtol=0,
        atol=1e-10,
    )


@pytest.mark.parametrize("arch", ["qwen2-vl", "llava"])
def test_head_only_and_mixed_text_only_batch(proxy_dirs, samples, arch):
    """Only the final norm + head train (all layers cached); a text-only sample joins the batch."""
    from ostselect.data.sample import Sample, Turn

    proxy = load_proxy(proxy_dirs[arch], params=r"lm_head|language_model\.norm", dtype="float64")
    mixed = [*samples[:2], Sample("text-only", [Turn("user", "hi"), Turn("assistant", "hello")])]
    prepared = proxy.prepare(mixed)
    assert prepared.start_layer == 4
    torch.testing.assert_close(
        proxy.per_sample_loss(prepared), proxy.per_sample_loss_reference(mixed), rtol=0, atol=1e-10
    )
