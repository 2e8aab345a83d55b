"""Proxy folders round-trip: weights, LoRA adapter, parameter selection, optimizer state, meta."""

from __future__ import annotations

import json

import pytest
import torch

from ostselect.proxy import OptimizerState, ScoringModel, build_tiny_proxy, load_proxy
from ostselect.proxy.toy import toy_samples


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_tiny_proxy(tmp_path_factory.mktemp("p") / "qwen", arch="qwen2-vl")


def _state(proxy, step=7) -> OptimizerState:
    gen = torch.Generator().manual_seed(0)
    params = proxy.trainable_parameters()
    return OptimizerState(
        step=step,
        lr=1e-3,
        exp_avg={k: torch.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in params.items()},
        exp_avg_sq={
            k: torch.rand(v.shape, generator=gen, dtype=v.dtype) for k, v in params.items()
        },
    )


@pytest.mark.parametrize(
    ("params", "kw"), [("all", {}), ("lora", {"lora_layers": "top-half", "lora_rank": 4})]
)
def test_save_load_round_trip(folder, tmp_path, params, kw):
    proxy = load_proxy(folder, params=params, **kw)
    assert isinstance(proxy, ScoringModel)
    with torch.no_grad():  # move the weights so the round trip is not trivially the build
        for t in proxy.trainable_parameters().values():
            t.add_(0.01)
    state = _state(proxy)
    out = proxy.save(tmp_path / "saved", optimizer_state=state, metadata={"warmup_ids": ["a", "b"]})
    assert (out / "optimizer.pt").is_file()
    assert (out / "adapter").is_dir() == (params == "lora")
    meta = json.loads((out / "ostselect.json").read_text())
    assert meta["params"]["params"] == params and meta["metadata"]["warmup_ids"] == ["a", "b"]

    again = load_proxy(out, params=None)  # the saved selection
    assert again.params_spec.params == params
    assert list(again.trainable_parameters()) == list(proxy.trainable_parameters())
    for k, v in proxy.trainable_parameters().items():
        torch.testing.assert_close(again.trainable_parameters()[k], v, rtol=0, atol=0)
    restored = again.optimizer_state()
    assert restored is not None and restored.step == 7 and restored.lr == 1e-3
    for k in state.exp_avg:
        assert torch.equal(restored.exp_avg[k], state.exp_avg[k])
        assert torch.equal(restored.exp_avg_sq[k], state.exp_avg_sq[k])
    samples = toy_samples(3)
    torch.testing.assert_close(
        again.per_sample_loss_reference(samples),
        proxy.per_sample_loss_reference(samples),
        rtol=0,
        atol=0,
    )
    assert again.weights_hash() == proxy.weights_hash()
    assert again.metadata["warmup_ids"] == ["a", "b"]


def test_fingerprint_is_the_folders_content_until_the_weights_change(folder, tmp_path):
    import shutil

    from ostselect.proxy.folder import proxy_identity

    a = load_proxy(folder)
    twin = load_proxy(shutil.copytree(folder, tmp_path / "twin"))
    assert a.fingerprint() == twin.fingerprint() == proxy_identity(folder)  # content, not path
    b = load_proxy(folder)
    with torch.no_grad():
        next(iter(b.trainable_parameters().values())).view(-1)[0] += 1e-3
    assert b.fingerprint() == b.weights_hash() != a.fingerprint()  # changed in memory
    assert a.weights_hash() != b.weights_hash()
    other = load_proxy(folder, params=r"layers\.3\.")
    assert other.weights_hash() != a.weights_hash()  # the selection is part of the weights' hash
    assert other.fingerprint() == a.fingerprint()  # the folder's; provenance records `params`
    (tmp_path / "twin" / "ostselect.json").write_text("{}")
    assert proxy_identity(tmp_path / "twin") != proxy_identity(folder)  # any byte counts


def test_lora_folder_loaded_as_all_merges_adapter(folder, tmp_path):
    lora = load_proxy(folder, params="lora", dtype="float64")
    with torch.no_grad():
        for t in lora.trainable_parameters().values():
            t.add_(0.05)
    out = lora.save(tmp_path / "lora")
    merged = load_proxy(out, params="all", dtype="float64")
    assert not any("lora_" in n for n in merged.trainable_parameters())
    samples = toy_samples(2)
    torch.testing.assert_close(
        merged.per_sample_loss_reference(samples),
        lora.per_sample_loss_reference(samples),
        rtol=0,
        atol=1e-10,
    )


def test_optimizer_state_must_match_selection(folder, tmp_path):
    proxy = load_proxy(folder)
    out = proxy.save(tmp_path / "s", optimizer_state=_state(proxy))
    with pytest.raises(ValueError, match="no state for"):
        load_proxy(out, params="lora")
    bad = _state(proxy)
    bad.exp_avg.pop(next(iter(bad.exp_avg)))
    with pytest.raises(ValueError, match="keyed by the trainable"):
        proxy.save(tmp_path / "t", optimizer_state=bad)


def test_fresh_lora_is_the_same_on_every_load(folder):
    """Workers and resumed runs load the folder independently: they must score the same theta."""
    torch.manual_seed(1)
    first = load_proxy(folder, params="lora").trainable_parameters()
    torch.manual_seed(2)
    second = load_proxy(folder, params="lora").trainable_parameters()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_lora_init_leaves_the_global_rng_alone(folder):
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    load_proxy(folder, params="lora")
    assert torch.equal(torch.rand(4), expected)
