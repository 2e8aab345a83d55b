"""Proxy-based baselines (loss, ifd, grand, el2n, less, deita quality) on a small pure-torch model.

`CharLM` implements the `ScoringModel` protocol for real (a byte-level recurrent LM whose loss is
the mean cross-entropy over assistant characters), so the baseline math runs end to end; expected
values are recomputed by hand with plain autograd, independently of the baseline code.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pytest
import torch
from torch import nn

from ostselect.baselines import make_baseline, run_baseline
from ostselect.baselines.projection import RademacherProjector
from ostselect.baselines.proxy_ops import without_question
from ostselect.data.sample import IMAGE_PLACEHOLDER, ImageRef, Sample, Turn
from ostselect.proxy.api import OptimizerState
from ostselect.scores import read_provenance

ROLE_BYTES = {"system": 1, "user": 2, "assistant": 3}


class CharNet(nn.Module):
    def __init__(self, hidden: int = 24) -> None:
        super().__init__()
        self.embed = nn.Embedding(256, 12)
        self.rnn = nn.GRU(12, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 256)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.embed(ids))
        return self.head(out)


class CharLM:
    """A `ScoringModel`: bytes of the turns in, loss over the assistant bytes only."""

    def __init__(self, seed: int = 0, dtype: torch.dtype = torch.float64) -> None:
        torch.manual_seed(seed)
        self.model = CharNet().to(dtype).eval()
        self.model.embed.weight.requires_grad_(False)  # a frozen part, like a vision tower
        self.name = "charlm"
        self.state: OptimizerState | None = None

    def trainable_parameters(self) -> dict[str, torch.Tensor]:
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    @staticmethod
    def encode(sample: Sample) -> tuple[list[int], list[bool]]:
        ids, sup = [0], [False]
        for image in sample.images:
            ids.append(200 + hashlib.sha256(image.read_bytes()).digest()[0] % 50)
            sup.append(False)
        for turn in sample.turns:
            ids.append(ROLE_BYTES[turn.role])
            sup.append(False)
            data = turn.content.encode()
            ids.extend(data)
            sup.extend([turn.role == "assistant"] * len(data))
        return ids, sup

    def prepare(self, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
        enc = [self.encode(s) for s in samples]
        length = max(len(i) for i, _ in enc)
        ids = torch.zeros(len(enc), length, dtype=torch.long)
        mask = torch.zeros(len(enc), length, dtype=torch.float64)
        for row, (seq, sup) in enumerate(enc):
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(sup)] = torch.tensor(sup, dtype=torch.float64)
        return {"ids": ids, "targets": ids[:, 1:], "mask": mask[:, 1:]}

    def _logits(self, prepared, params=None) -> torch.Tensor:
        if params is None:
            return self.model(prepared["ids"])
        return torch.func.functional_call(
            self.model, dict(params), (prepared["ids"],), strict=False
        )

    def per_sample_loss(self, prepared: Mapping[str, torch.Tensor], params=None) -> torch.Tensor:
        logp = torch.log_softmax(self._logits(prepared, params)[:, :-1], -1)
        nll = -logp.gather(-1, prepared["targets"][..., None])[..., 0]
        return (nll * prepared["mask"]).sum(-1) / prepared["mask"].sum(-1)

    def supervised_token_counts(self, prepared) -> torch.Tensor:
        return prepared["mask"].sum(-1).long()

    def supervised_token_logits(self, prepared):
        logits = self._logits(prepared)[:, :-1]
        out = []
        for row in range(logits.shape[0]):
            keep = prepared["mask"][row].bool()
            out.append((logits[row][keep], prepared["targets"][row][keep]))
        return out

    def optimizer_state(self) -> OptimizerState | None:
        return self.state

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for k, v in sorted(self.model.state_dict().items()):
            h.update(k.encode() + v.detach().numpy().tobytes())
        return h.hexdigest()[:16]

    def save(self, out_dir, optimizer_state=None, metadata=None):  # pragma: no cover - unused
        raise NotImplementedError


def qa(i: int, a: int, b: int, *, answer: str | None = None, image: bytes | None = None) -> Sample:
    question = f"What is {a} plus {b}?"
    if image is not None:
        question = f"{IMAGE_PLACEHOLDER}\n{question}"
    text = answer if answer is not None else f"{a} plus {b} is {a + b}."
    images = [ImageRef(data=image)] if image is not None else []
    return Sample(
        id=f"q{i}", turns=[Turn("user", question), Turn("assistant", text)], images=images
    )


def arithmetic_pool(n: int, seed: int = 0) -> list[Sample]:
    rng = np.random.default_rng(seed)
    return [qa(i, *rng.integers(1, 5, size=2).tolist()) for i in range(n)]


def train(proxy: CharLM, samples: Sequence[Sample], steps: int, lr: float = 0.02) -> OptimizerState:
    """A few AdamW steps; returns the optimizer state in the `OptimizerState` layout."""
    params = proxy.trainable_parameters()
    opt = torch.optim.AdamW(params.values(), lr=lr, weight_decay=0.0)
    prepared = proxy.prepare(samples)
    for _ in range(steps):
        opt.zero_grad()
        proxy.per_sample_loss(prepared).mean().backward()
        opt.step()
    opt.zero_grad()
    group = opt.param_groups[0]
    by_tensor = {id(p): n for n, p in params.items()}
    state = OptimizerState(step=steps, lr=lr, betas=group["betas"], eps=group["eps"])
    for p, st in opt.state.items():
        state.exp_avg[by_tensor[id(p)]] = st["exp_avg"].detach().clone()
        state.exp_avg_sq[by_tensor[id(p)]] = st["exp_avg_sq"].detach().clone()
    return state


@pytest.fixture(scope="module")
def trained() -> CharLM:
    torch.set_num_threads(1)
    proxy = CharLM(seed=0)
    proxy.state = train(proxy, arithmetic_pool(24, seed=1), steps=60)
    return proxy


def hand_loss(proxy: CharLM, sample: Sample) -> torch.Tensor:
    """The loss recomputed from the logits directly, not through `per_sample_loss`."""
    ids, sup = CharLM.encode(sample)
    logits = proxy.model(torch.tensor([ids]))[0, :-1]
    targets = torch.tensor(ids[1:])
    keep = torch.tensor(sup[1:])
    return torch.nn.functional.cross_entropy(logits[keep], targets[keep])


def test_loss_ranks_garbled_answer_last(trained: CharLM) -> None:
    pool = arithmetic_pool(6, seed=7)
    pool.append(qa(99, 2, 3, answer="zq#v! kk8 ~~w"))
    table = run_baseline("loss", pool, proxy=trained)
    rows = table.to_pylist()
    last = max(rows, key=lambda r: r["rank"])
    assert last["id"] == "q99"
    assert all(r["status"] == "ok" for r in rows)
    for row, sample in zip(rows, pool, strict=True):
        assert row["utility"] == pytest.approx(-row["loss"])
        assert row["loss"] == pytest.approx(hand_loss(trained, sample).detach().item(), rel=1e-9)
        assert row["tokens"] == len(sample.assistant_text.encode())
    high = run_baseline("loss", pool, proxy=trained, keep="high").to_pylist()
    assert min(high, key=lambda r: r["rank"])["id"] == "q99"


def test_loss_provenance_counts_passes(trained: CharLM) -> None:
    pool = arithmetic_pool(5)
    prov = read_provenance(run_baseline("loss", pool, proxy=trained, batch_size=2))
    assert prov["cost"]["forward_passes"] == 5
    assert prov["cost"]["backward_passes"] == 0
    assert prov["cost"]["wall_s"] > 0
    assert prov["proxy_fingerprint"] == trained.fingerprint()
    assert prov["settings"]["keep"] == "low"


def test_without_question_keeps_only_image_placeholders() -> None:
    sample = qa(1, 2, 2, image=b"\x89PNG fake")
    sample.turns.insert(0, Turn("system", "be brief"))
    bare = without_question(sample)
    assert [t.role for t in bare.turns] == ["user", "assistant"]
    assert bare.turns[0].content == IMAGE_PLACEHOLDER
    assert bare.turns[1] == sample.turns[-1]
    assert bare.images == sample.images


def test_ifd_equals_ratio_of_hand_losses(trained: CharLM) -> None:
    pool = [*arithmetic_pool(4, seed=3), qa(50, 1, 2, image=b"\x89PNG img", answer="3, I think.")]
    rows = run_baseline("ifd", pool, proxy=trained, drop_above_one=False).to_pylist()
    for row, sample in zip(rows, pool, strict=True):
        with_q = hand_loss(trained, sample).detach().item()
        without_q = hand_loss(trained, without_question(sample)).detach().item()
        assert row["ifd"] == pytest.approx(with_q / without_q, rel=1e-9)
        assert row["utility"] == pytest.approx(with_q / without_q, rel=1e-9)
    low = run_baseline("ifd", pool, proxy=trained, keep="low").to_pylist()
    assert [r["utility"] for r in low] == pytest.approx([-r["ifd"] for r in rows])


def test_ifd_above_one_ranks_after_everything_below_one(trained: CharLM) -> None:
    pool = arithmetic_pool(6, seed=4)
    # A user turn with nothing but its image: the "question" adds nothing, so IFD is exactly 1.
    image_only = Sample(
        id="img-only",
        turns=[Turn("user", IMAGE_PLACEHOLDER), Turn("assistant", "3 plus 1 is 4.")],
        images=[ImageRef(data=b"\x89PNG img")],
    )
    pool.append(image_only)
    rows = run_baseline("ifd", pool, proxy=trained).to_pylist()
    by_id = {r["id"]: r for r in rows}
    assert by_id["img-only"]["ifd"] == pytest.approx(1.0, rel=1e-12)
    above = [r for r in rows if r["ifd"] >= 1]
    below = [r for r in rows if r["ifd"] < 1]
    assert below and by_id["img-only"] in above
    for r in above:
        assert r["toxic"] and r["utility"] == pytest.approx(-r["ifd"])
        assert all(r["rank"] > b["rank"] for b in below)
    for r in below:
        assert r["utility"] == pytest.approx(r["ifd"]) and not r["toxic"]


def per_sample_grad(proxy: CharLM, sample: Sample) -> torch.Tensor:
    params = proxy.trainable_parameters()
    grads = torch.autograd.grad(hand_loss(proxy, sample), list(params.values()))
    return torch.cat([g.reshape(-1) for g in grads])


def test_grand_is_the_gradient_norm(trained: CharLM) -> None:
    pool = arithmetic_pool(3, seed=5)
    pool.append(qa(98, 3, 1, answer="@@ ## $$"))
    rows = run_baseline("grand", pool, proxy=trained).to_pylist()
    for row, sample in zip(rows, pool, strict=True):
        assert row["grad_norm"] == pytest.approx(per_sample_grad(trained, sample).norm().item())
    assert min(rows, key=lambda r: r["rank"])["id"] == "q98"
    prov = read_provenance(run_baseline("grand", pool, proxy=trained))
    assert prov["cost"]["backward_passes"] == len(pool)


def test_el2n_from_logits_and_fallback(trained: CharLM) -> None:
    pool = arithmetic_pool(3, seed=6)
    table = run_baseline("el2n", pool, proxy=trained)
    assert read_provenance(table)["settings"]["el2n_source"] == "logits"
    for row, sample in zip(table.to_pylist(), pool, strict=True):
        ids, sup = CharLM.encode(sample)
        probs = torch.softmax(trained.model(torch.tensor([ids]))[0, :-1], -1)
        keep = torch.tensor(sup[1:])
        onehot = torch.nn.functional.one_hot(torch.tensor(ids[1:]), 256).double()
        expected = (probs - onehot)[keep].norm(dim=-1).mean()
        assert row["el2n"] == pytest.approx(expected.item(), rel=1e-9)

    class NoLogits:  # the protocol only: EL2N falls back to 1 - exp(-loss), and says so
        def __init__(self, inner: CharLM) -> None:
            self.inner = inner
            self.name = "nologits"

        def __getattr__(self, item):
            if item == "supervised_token_logits":
                raise AttributeError(item)
            return getattr(self.inner, item)

    fallback = run_baseline("el2n", pool, proxy=NoLogits(trained))
    assert read_provenance(fallback)["settings"]["el2n_source"] == "loss-approximation"
    for row, sample in zip(fallback.to_pylist(), pool, strict=True):
        assert row["el2n"] == pytest.approx(
            1 - math.exp(-hand_loss(trained, sample).detach().item())
        )


def hand_less_cosine(proxy: CharLM, sample: Sample, anchors: Sequence[Sample]) -> float:
    state = proxy.state
    assert state is not None
    names = list(proxy.trainable_parameters())
    g = per_sample_grad(proxy, sample)
    m = torch.cat([state.exp_avg[n].reshape(-1) for n in names])
    v = torch.cat([state.exp_avg_sq[n].reshape(-1) for n in names])
    b1, b2 = state.betas
    t = state.step + 1
    m_hat = (b1 * m + (1 - b1) * g) / (1 - b1**t)
    v_hat = (b2 * v + (1 - b2) * g * g) / (1 - b2**t)
    direction = m_hat / (v_hat.sqrt() + state.eps)
    anchor_loss = torch.stack([hand_loss(proxy, a) for a in anchors]).mean()
    ga = torch.autograd.grad(anchor_loss, list(proxy.trainable_parameters().values()))
    ga = torch.cat([x.reshape(-1) for x in ga])
    return float(direction @ ga / (direction.norm() * ga.norm()))


def test_less_identity_projection_equals_hand_cosine(trained: CharLM) -> None:
    pool = [*arithmetic_pool(3, seed=8), qa(97, 2, 2, answer="2 plus 2 is 5.")]
    anchors = arithmetic_pool(4, seed=9)
    rows = run_baseline("less", pool, proxy=trained, anchors=anchors, dim=None).to_pylist()
    for row, sample in zip(rows, pool, strict=True):
        assert row["utility"] == pytest.approx(hand_less_cosine(trained, sample, anchors), rel=1e-7)
    prov = read_provenance(
        run_baseline("less", pool, proxy=trained, anchors=anchors, dim=None, batch_size=2)
    )
    assert prov["settings"]["direction"] == "adam"
    assert prov["settings"]["projection"] == "identity"
    assert prov["cost"]["backward_passes"] == len(pool) + len(anchors)


def test_less_projection_is_seeded_and_preserves_cosines(trained: CharLM) -> None:
    pool = arithmetic_pool(6, seed=10)
    anchors = arithmetic_pool(3, seed=11)
    exact = run_baseline("less", pool, proxy=trained, anchors=anchors, dim=None)
    a = run_baseline("less", pool, proxy=trained, anchors=anchors, dim=2048, seed=3)
    b = run_baseline("less", pool, proxy=trained, anchors=anchors, dim=2048, seed=3)
    assert a.column("utility").to_pylist() == b.column("utility").to_pylist()
    # Johnson-Lindenstrauss: at k = 2048, cosines move by a few hundredths at most.
    diff = np.abs(a.column("utility").to_numpy() - exact.column("utility").to_numpy())
    assert diff.max() < 0.1


def test_less_without_state_uses_plain_gradient(trained: CharLM) -> None:
    pool = arithmetic_pool(2, seed=12)
    anchors = arithmetic_pool(2, seed=13)
    scorer = make_baseline(
        "less", proxy=trained, anchors=anchors, dim=None, use_optimizer_state=False
    )
    cols = scorer.score_samples(pool)
    assert scorer.provenance()["settings"]["direction"] == "sgd"
    ga = sum(per_sample_grad(trained, s) for s in anchors) / len(anchors)
    for value, sample in zip(cols["utility"], pool, strict=True):
        g = per_sample_grad(trained, sample)
        assert value == pytest.approx(float(g @ ga / (g.norm() * ga.norm())), rel=1e-7)


def test_rademacher_projector_matches_dense_matrix(monkeypatch) -> None:
    from ostselect.baselines import projection

    proj = RademacherProjector(input_dim=70_000, dim=128, seed=1)
    x = torch.randn(3, 70_000, dtype=torch.float64)
    rows = proj.block_rows
    assert rows < 70_000  # the matrix comes in several blocks
    blocks = [proj._block(i, min(rows, 70_000 - s)) for i, s in enumerate(range(0, 70_000, rows))]
    dense = torch.cat(blocks)
    assert set(dense.unique().tolist()) == {-1.0, 1.0}
    expected = x.float() @ dense / math.sqrt(128)
    cached = proj.project(x)
    assert proj._cache is not None
    assert torch.allclose(cached.float(), expected, rtol=1e-4, atol=1e-3)
    monkeypatch.setattr(projection, "CACHE_LIMIT_ELEMENTS", 0)  # too big to keep: regenerated
    uncached = RademacherProjector(input_dim=70_000, dim=128, seed=1)
    assert torch.equal(uncached.project(x), cached) and uncached._cache is None
    other_seed = RademacherProjector(input_dim=70_000, dim=128, seed=2).project(x)
    assert not torch.allclose(other_seed, cached)


def test_proxy_baselines_refuse_to_run_without_a_proxy() -> None:
    for name in ("loss", "ifd", "grand", "el2n", "less"):
        with pytest.raises(ValueError, match="needs a proxy"):
            run_baseline(name, arithmetic_pool(2))
    with pytest.raises(ValueError, match="anchor"):
        run_baseline("less", arithmetic_pool(2), proxy=CharLM())


def test_deita_quality_comes_from_the_proxy(trained: CharLM) -> None:
    pool = [*arithmetic_pool(3, seed=14), qa(96, 1, 3, answer="q!! z## x~~.")]

    def distinct(texts: Sequence[str]) -> np.ndarray:  # orthogonal embeddings: nothing filtered
        return np.eye(len(texts))

    rows = run_baseline("deita", pool, proxy=trained, embedder=distinct).to_pylist()
    for row, sample in zip(rows, pool, strict=True):
        assert row["quality"] == pytest.approx(
            math.exp(-hand_loss(trained, sample).detach().item())
        )
        assert row["deita_score"] == pytest.approx(row["complexity"] * row["quality"])
        assert row["deita_kept"]
    assert max(rows, key=lambda r: r["rank"])["id"] == "q96"
