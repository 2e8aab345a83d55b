"""Acceptance on tiny Qwen2-VL and LLaVA proxies (float64): exact == naive, nothing changes,
first-order -> exact linearly in eta, hybrid keeps exact's selection and toxic flags."""

from __future__ import annotations

import io
import itertools
import math

import numpy as np
import pytest
import torch

from ostselect.data.sample import ImageRef, Sample, Turn
from ostselect.proxy import build_tiny_proxy, load_proxy
from ostselect.proxy.toy import WORDS
from ostselect.scores import read_provenance
from ostselect.scoring import ScoreConfig, score
from proxy_kit import warmed_copy


def _png(seed: int) -> bytes:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, (28, 28, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def samples(n: int, prefix: str, seed: int) -> list[Sample]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        question = " ".join(rng.choice(WORDS, 5))
        answer = " ".join(rng.choice(WORDS, int(rng.integers(2, 8))))
        out.append(
            Sample(
                id=f"{prefix}{i}",
                turns=[Turn("user", "<image> " + question), Turn("assistant", answer)],
                images=[ImageRef(data=_png(seed * 1000 + i))],
                extra={"topic": ("shapes", "colors")[i % 2]},
            )
        )
    return out


POOL = samples(4, "p", 1)
ANCHORS = samples(5, "a", 2)
PARAMS = {"all": {"params": "all"}, "lora": {"params": "lora", "lora_layers": "top-half"}}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Per arch: a random tiny proxy, and per params selection a warmed-up copy with AdamW state."""
    root = tmp_path_factory.mktemp("proxies")
    out = {}
    for arch in ("qwen2-vl", "llava"):
        base = build_tiny_proxy(root / arch, arch=arch, size="tiny", seed=0)
        out[(arch, None)] = base
        for name, kw in PARAMS.items():
            warm = root / f"{arch}-{name}-warm"
            out[(arch, name)] = warmed_copy(base, warm, samples(4, "w", 3), **kw)
    return out


def _snapshot(proxy) -> dict[str, torch.Tensor]:
    snap = {k: v.detach().clone() for k, v in proxy.model.state_dict().items()}
    state = proxy.optimizer_state()
    if state is not None:
        snap.update({f"m:{k}": v.clone() for k, v in state.exp_avg.items()})
        snap.update({f"v:{k}": v.clone() for k, v in state.exp_avg_sq.items()})
    return snap


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _u(table) -> np.ndarray:
    return table.column("utility").to_numpy(zero_copy_only=False)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
@pytest.mark.parametrize("params", ["all", "lora"])
@pytest.mark.parametrize("arch", ["qwen2-vl", "llava"])
def test_exact_equals_naive_and_proxy_is_untouched(folders, arch, params, optimizer):
    folder = folders[(arch, None)] if optimizer == "sgd" else folders[(arch, params)]
    proxy = load_proxy(folder, dtype="float64", **PARAMS[params])
    if optimizer == "adamw":
        assert proxy.optimizer_state() is not None and proxy.optimizer_state().step == 2
    before = _snapshot(proxy)
    cfg = dict(optimizer=optimizer, eta=1e-2 if optimizer == "sgd" else None, group_field="topic")
    naive = score(POOL, ANCHORS, proxy, ScoreConfig(mode="naive", **cfg))
    assert _same(before, _snapshot(proxy))
    exact = score(POOL, ANCHORS, proxy, ScoreConfig(mode="exact", batch_size=3, **cfg))
    assert _same(before, _snapshot(proxy))
    assert not proxy.model.training
    un, ue = _u(naive), _u(exact)
    assert np.isfinite(ue).all() and np.abs(ue).max() > 1e-5
    assert np.abs(un - ue).max() <= 1e-9 + 1e-6 * np.abs(ue).max()
    for col in ("utility[shapes]", "utility[colors]"):
        a, b = naive.column(col).to_numpy(), exact.column(col).to_numpy()
        assert np.abs(a - b).max() <= 1e-9 + 1e-6 * np.abs(b).max()
    prov = read_provenance(exact)
    assert prov["optimizer"] == optimizer and prov["dtype"] == "float64"
    assert prov["proxy_fingerprint"] == proxy.fingerprint()


@pytest.mark.parametrize("arch", ["qwen2-vl", "llava"])
def test_first_order_converges_to_exact(folders, arch):
    proxy = load_proxy(folders[(arch, "lora")], dtype="float64", **PARAMS["lora"])
    errors = []
    for lr in (1e-3, 1e-4, 1e-5):
        cfg = dict(optimizer="adamw", eta=lr)
        fo = _u(score(POOL, ANCHORS, proxy, ScoreConfig(mode="first-order", **cfg)))
        ex = _u(score(POOL, ANCHORS, proxy, ScoreConfig(mode="exact", **cfg)))
        errors.append(np.abs(fo - ex).max() / np.abs(ex).max())
    assert errors[-1] < 1e-3, errors
    for big, small in itertools.pairwise(errors):
        assert 4 < big / small < 25, errors


def test_hybrid_selection_equals_exact_on_a_small_pool(folders):
    proxy = load_proxy(folders[("qwen2-vl", None)], dtype="float64", params="all")
    pool = samples(20, "h", 4)
    cfg = dict(optimizer="sgd", eta=0.05, cutoff="20%", calibration_size=4, batch_size=5)
    exact = score(pool, ANCHORS, proxy, ScoreConfig(mode="exact", **cfg))
    hybrid = score(pool, ANCHORS, proxy, ScoreConfig(mode="hybrid", **cfg))
    k = math.ceil(0.2 * len(pool))

    def top(t) -> set[str]:
        return set(t.filter(t.column("rank").to_numpy() <= k).column("id").to_pylist())

    assert top(hybrid) == top(exact)
    assert hybrid.column("toxic").to_pylist() == exact.column("toxic").to_pylist()
    report = read_provenance(hybrid)["hybrid"]
    assert report["rescored"] <= len(pool)
