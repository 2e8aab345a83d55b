"""Candidate batching (`candidate_batch` K, `ost score --candidate-batch K`): exact mode steps K
candidates together and evaluates their parameters against the anchors in one batched pass; on
CPU in float64 its utilities and group utilities equal one at a time (K = 1) to 1e-12 relative,
on tiny Qwen2-VL and LLaVA proxies, all parameters and LoRA, SGD and AdamW with a warm-up state.
K = 3 does not divide the batches, and the pool holds a record that cannot be prepared."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ostselect.cli import app
from ostselect.data.sample import ImageRef, Sample, Turn
from ostselect.proxy import build_tiny_proxy, load_proxy
from ostselect.scores import read_provenance
from ostselect.scoring import ScoreConfig, make_update_rule, score
from ostselect.scoring.anchors import PreparedAnchors
from ostselect.scoring.candidates import ERROR, NONFINITE, OK
from ostselect.scoring.modes import OneStepUtility
from ostselect.scoring.work import WorkCounter
from proxy_kit import warmed_copy
from test_scoring_proxies import samples

ARCHES = ("qwen2-vl", "llava")
PARAMS = {"all": {"params": "all"}, "lora": {"params": "lora", "lora_layers": "top-half"}}
ANCHORS = samples(5, "a", 2)
BROKEN = Sample(
    id="broken",
    turns=[Turn("user", "<image> what is it"), Turn("assistant", "a red square")],
    images=[ImageRef(path=Path("/nonexistent/ostselect-candidate-batch.png"))],
)
# 7 candidates in batches of 5: [p0..p4] (K = 3 groups 3 + 2), [broken, q0] (an error, a lone one)
POOL = [*samples(5, "p", 1), BROKEN, *samples(1, "q", 4)]
TOL = 1e-12


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Per arch: a random tiny proxy, and per params selection a copy with an AdamW state."""
    root = tmp_path_factory.mktemp("cb")
    out = {}
    for arch in ARCHES:
        base = build_tiny_proxy(root / arch, arch=arch, size="tiny", seed=0)
        out[(arch, None)] = base
        for name, kw in PARAMS.items():
            warm = root / f"{arch}-{name}-warm"
            out[(arch, name)] = warmed_copy(base, warm, samples(2, "w", 3), **kw)
    return out


def _utility(proxy, optimizer: str, k: int, counter: WorkCounter | None = None):
    counter = counter or WorkCounter()
    theta = proxy.trainable_parameters()
    eta = 1e-2 if optimizer == "sgd" else None
    rule = make_update_rule(optimizer, theta, proxy.optimizer_state(), eta)
    anchors = PreparedAnchors(proxy, ANCHORS, batch_size=3, group_field="topic", counter=counter)
    return OneStepUtility(proxy, rule, anchors, 5, counter, candidate_batch=k)


def _assert_same(one, many) -> None:
    assert [o.id for o in one] == [o.id for o in many] == [s.id for s in POOL]
    assert [o.status for o in one] == [o.status for o in many]
    u1 = np.array([o.utility for o in one])
    scale = np.nanmax(np.abs(u1))
    assert scale > 1e-5  # the step moves the anchor loss: a real comparison
    for a, b in zip(one, many, strict=True):
        assert (a.exact, a.tokens, a.reason) == (b.exact, b.tokens, b.reason)
        assert a.loss == b.loss or (math.isnan(a.loss) and math.isnan(b.loss))
        if a.status != OK:
            assert math.isnan(a.utility) and math.isnan(b.utility)
            continue
        assert abs(a.utility - b.utility) <= TOL * scale
        assert a.groups.keys() == b.groups.keys() == {"shapes", "colors"}
        for g in a.groups:
            assert abs(a.groups[g] - b.groups[g]) <= TOL * scale


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
@pytest.mark.parametrize("params", ["all", "lora"])
@pytest.mark.parametrize("arch", ARCHES)
def test_batched_candidates_equal_one_at_a_time(folders, arch, params, optimizer):
    folder = folders[(arch, None)] if optimizer == "sgd" else folders[(arch, params)]
    proxy = load_proxy(folder, dtype="float64", **PARAMS[params])
    if optimizer == "adamw":
        assert proxy.optimizer_state() is not None
    c1, c3 = WorkCounter(), WorkCounter()
    one = list(_utility(proxy, optimizer, 1, c1).exact(POOL))
    many = list(_utility(proxy, optimizer, 3, c3).exact(POOL))
    assert [o.status for o in one].count(ERROR) == 1 and one[5].id == "broken"
    _assert_same(one, many)
    # K x n_anchors forward samples per batched pass: the same work as one at a time
    assert (c1.forward, c1.backward) == (c3.forward, c3.backward)


def test_losses_many_rows_equal_losses_and_count_the_work(folders):
    proxy = load_proxy(folders[("llava", None)], dtype="float64", **PARAMS["lora"])
    counter = WorkCounter()
    anchors = PreparedAnchors(proxy, ANCHORS, batch_size=2, counter=counter)
    theta = {k: v.detach() for k, v in proxy.trainable_parameters().items()}
    gen = torch.Generator().manual_seed(0)
    sets = [
        {k: v + 1e-2 * torch.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in theta.items()}
        for _ in range(4)
    ]
    many = anchors.losses_many(sets)  # a list of mappings, stacked inside
    assert many.shape == (4, len(ANCHORS)) and counter.forward == 4 * len(ANCHORS)
    for row, params in zip(many, sets, strict=True):
        ref = anchors.losses(params)
        assert torch.allclose(row, ref, rtol=TOL, atol=0)
    stacked = {k: torch.stack([s[k] for s in sets]) for k in theta}
    assert torch.equal(anchors.losses_many(stacked), many)
    values = anchors.values_many(stacked)
    assert [v[0] for v in values] == pytest.approx([float(r.mean()) for r in many], rel=TOL)


class _NoVmap:
    """A proxy whose per_sample_loss reads a parameter as a Python number (no vmap)."""

    def __init__(self, proxy):
        self._proxy = proxy

    def __getattr__(self, name):
        return getattr(self._proxy, name)

    def per_sample_loss(self, prepared, params=None):
        if params is not None:
            float(next(iter(params.values())).detach().flatten()[0])  # .item(): no vmap
        return self._proxy.per_sample_loss(prepared, params)


def test_a_proxy_that_does_not_vmap_falls_back_with_one_warning(folders):
    proxy = _NoVmap(load_proxy(folders[("qwen2-vl", None)], dtype="float64", **PARAMS["lora"]))
    one = list(_utility(proxy, "sgd", 1).exact(POOL))
    with pytest.warns(RuntimeWarning, match="one at a time") as caught:
        many = list(_utility(proxy, "sgd", 3).exact(POOL))
    assert sum("candidate batching" in str(w.message) for w in caught) == 1
    _assert_same(one, many)


def test_a_non_finite_candidate_is_flagged_alone(folders, monkeypatch):
    proxy = load_proxy(folders[("qwen2-vl", None)], dtype="float64", **PARAMS["lora"])
    utility = _utility(proxy, "sgd", 3)
    real = PreparedAnchors.losses_many

    def poisoned(self, params):
        out = real(self, params)
        out[1, 0] = math.nan  # the second candidate of every batched pass
        return out

    monkeypatch.setattr(PreparedAnchors, "losses_many", poisoned)
    out = list(utility.exact(POOL))
    status = [o.status for o in out]
    # passes: [p0 p1 p2], [p3 p4]; q0, alone in its batch, takes exact_one's path
    assert status == [OK, NONFINITE, OK, OK, NONFINITE, ERROR, OK]
    assert all(math.isfinite(o.utility) for o in out if o.status == OK)


def test_config_cli_and_provenance(folders, tmp_path, monkeypatch):
    assert ScoreConfig().candidate_batch == 1
    with pytest.raises(ValueError, match="applies to mode exact and hybrid"):
        ScoreConfig(mode="first-order", candidate_batch=2)
    with pytest.raises(ValueError):
        ScoreConfig(candidate_batch=0)
    where = ["--proxy", str(tmp_path), "--pool", str(tmp_path), "--anchors", str(tmp_path)]
    res = CliRunner().invoke(app, ["score", *where, "--mode", "naive", "--candidate-batch", "2"])
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and "error: --candidate-batch 2: batches exact" in text, text
    assert "Value error" not in text and "Traceback" not in text
    proxy = load_proxy(folders[("llava", None)], dtype="float64", **PARAMS["lora"])
    calls = []
    real = PreparedAnchors.losses_many

    def spy(self, params):
        calls.append(1)
        return real(self, params)

    cfg = dict(mode="exact", optimizer="sgd", eta=1e-2, batch_size=5, group_field="topic")
    one = score(POOL, ANCHORS, proxy, ScoreConfig(**cfg))
    monkeypatch.setattr(PreparedAnchors, "losses_many", spy)
    many = score(POOL, ANCHORS, proxy, ScoreConfig(candidate_batch=3, **cfg))
    settings = read_provenance(many)["settings"]["config"]
    assert settings["candidate_batch"] == 3
    assert calls, "the batched anchor pass was never used"
    for col in ("utility", "utility[shapes]", "utility[colors]"):
        a = one.column(col).to_numpy(zero_copy_only=False)
        b = many.column(col).to_numpy(zero_copy_only=False)
        assert np.array_equal(np.isnan(a), np.isnan(b))
        assert np.nanmax(np.abs(a - b)) <= TOL * np.nanmax(np.abs(a))
