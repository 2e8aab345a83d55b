"""Issue 14 acceptance, parametrised over the family registry: for every family with a tiny build,
a float64 proxy warmed up two AdamW steps (so it carries optimizer state) scores exact == naive
for SGD and AdamW, supervises only the assistant answer and its end-of-turn token, and computes
the same per-sample losses and gradients in a batch of three as one sample at a time.

(Tiny build, `ost proxy info` and the plain-transformers reload are in tests/test_families.py.)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ostselect.proxy import build_tiny_proxy, load_proxy
from ostselect.proxy.collate import IGNORE_INDEX
from ostselect.proxy.families import buildable_names, get_family
from ostselect.proxy.toy import word_samples
from ostselect.scoring import ScoreConfig, score
from proxy_kit import warmed_copy

FAMILIES = buildable_names()
POOL = list(word_samples(3, "p", 1, answer_words=(2, 8)))
ANCHORS = list(word_samples(4, "a", 2, answer_words=(2, 8)))
ETA = {"sgd": 1e-2, "adamw": 1e-3}
# measured |exact - naive| / max|utility| <= 6e-14 for every family and optimizer (float64)
EXACT_REL = 1e-12


@pytest.fixture(scope="module")
def warm_folders(tmp_path_factory):
    """Per family: a tiny proxy (seed 0) after two float64 AdamW steps, saved with their state."""
    root = tmp_path_factory.mktemp("families-warm")
    out = {}
    for name in FAMILIES:
        base = build_tiny_proxy(root / name, arch=name, seed=0)
        out[name] = warmed_copy(base, root / f"{name}-warm", word_samples(4, "w", 3))
    return out


@pytest.fixture(scope="module")
def proxies(warm_folders):
    """`proxies(name)`: the family's warmed proxy in float64, loaded once for the module."""
    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = load_proxy(warm_folders[name], dtype="float64")
        return cache[name]

    return get


def _utilities(table) -> np.ndarray:
    return table.column("utility").to_numpy(zero_copy_only=False)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
@pytest.mark.parametrize("name", FAMILIES)
def test_exact_equals_naive_in_float64(proxies, name, optimizer):
    proxy = proxies(name)
    assert proxy.hf_model.config._attn_implementation == "sdpa"  # float64 attention
    state = proxy.optimizer_state()
    assert state is not None and state.step == 2  # AdamW steps from the saved moments
    cfg = dict(optimizer=optimizer, eta=ETA[optimizer], anchor_batch_size=3)
    exact = _utilities(score(POOL, ANCHORS, proxy, ScoreConfig(mode="exact", batch_size=3, **cfg)))
    naive = _utilities(score(POOL, ANCHORS, proxy, ScoreConfig(mode="naive", **cfg)))
    scale = np.abs(naive).max()
    assert scale > 1e-6  # the step matters
    assert np.abs(exact - naive).max() <= EXACT_REL * scale, np.abs(exact - naive).max() / scale


@pytest.mark.parametrize("name", FAMILIES)
def test_only_the_answer_and_its_end_of_turn_are_supervised(proxies, name):
    proxy = proxies(name)
    tok = proxy.processor.tokenizer
    eot = tok.convert_tokens_to_ids(get_family(name).tiny.eos)
    samples = list(word_samples(3, "m", 5, answer_words=(2, 8)))
    expected = []
    for sample in samples:
        answer = sample.turns[-1].content
        labels = proxy.collate([sample]).labels[0]
        targets = labels[labels != IGNORE_INDEX].tolist()
        # the answer's own tokens (LLaVA's "ASSISTANT: x" puts the space in the answer) + eot
        alone = [tok(t, add_special_tokens=False).input_ids for t in (answer, " " + answer)]
        assert targets[:-1] in alone and targets[-1] == eot, tok.decode(targets)
        assert tok.decode(targets[:-1]).strip() == answer
        expected.append(len(targets))
    prepared = proxy.prepare(samples)  # a padded batch counts the same tokens per sample
    assert proxy.supervised_token_counts(prepared).tolist() == expected


@pytest.mark.parametrize("name", FAMILIES)
def test_batched_losses_and_gradients_equal_one_sample_at_a_time(proxies, name):
    proxy = proxies(name)
    samples = list(word_samples(3, "b", 7, answer_words=(2, 12)))
    theta = {k: v.detach().clone() for k, v in proxy.trainable_parameters().items()}
    mask = proxy.collate(samples).inputs["attention_mask"]
    assert mask.sum(1).unique().numel() > 1  # really padded
    prepared = proxy.prepare(samples)
    with torch.no_grad():
        tail = proxy.per_sample_loss(prepared)  # the live weights
        evaluated = proxy.per_sample_loss(prepared, theta)  # the evaluation path
    losses, grads = proxy.per_sample_gradients(prepared, theta)
    for i, sample in enumerate(samples):
        one = proxy.prepare([sample])
        with torch.no_grad():
            alone = proxy.per_sample_loss(one)
            alone_eval = proxy.per_sample_loss(one, theta)
        loss_1, grads_1 = proxy.per_sample_gradients(one, theta)
        for got in (tail[i], evaluated[i], losses[i], alone_eval[0], loss_1[0]):
            assert float(got) == pytest.approx(float(alone[0]), rel=1e-12, abs=1e-14)
        for k, g in grads_1.items():  # measured <= 2e-14 relative to the tensor's largest
            scale = float(g[0].abs().max())
            assert float((grads[k][i] - g[0]).abs().max()) <= 1e-12 * scale + 1e-15, k
    assert any(float(g.abs().max()) > 0 for g in grads.values())
