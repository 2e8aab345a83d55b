"""The loss convention: only assistant tokens are supervised, and the per-sample loss is the mean
token cross-entropy over them, checked against a hand computation from the logits."""

from __future__ import annotations

import math

import pytest
import torch

from ostselect.data.sample import Sample, Turn
from ostselect.proxy import build_tiny_proxy, load_proxy
from ostselect.proxy.collate import IGNORE_INDEX, CollateError
from ostselect.proxy.families import buildable_names
from ostselect.proxy.prefix import image_token_id
from ostselect.proxy.toy import toy_samples


@pytest.fixture(scope="module", params=buildable_names())
def proxy(request, tmp_path_factory):
    folder = build_tiny_proxy(tmp_path_factory.mktemp(request.param), arch=request.param)
    return load_proxy(folder, dtype="float64")


def _with_turn(sample: Sample, index: int, content: str) -> Sample:
    turns = list(sample.turns)
    turns[index] = Turn(turns[index].role, content)
    return Sample(sample.id, turns, sample.images)


def _supervised(proxy, sample):
    batch = proxy.collate([sample])
    labels = batch.labels[0]
    positions = (labels != IGNORE_INDEX).nonzero().flatten().tolist()
    return positions, labels[positions].tolist(), batch


def test_only_assistant_text_is_supervised(proxy):
    sample = toy_samples(3, seed=0)[2]  # system + two user/assistant rounds
    _, targets, batch = _supervised(proxy, sample)
    tok = proxy.processor.tokenizer
    decoded = tok.decode(targets)
    for turn in sample.turns:
        if turn.role == "assistant":
            assert turn.content in decoded
        else:
            assert turn.content.replace("<image>", "").strip() not in decoded
    image_id = image_token_id(proxy.hf_model)
    ids = batch.inputs["input_ids"][0]
    assert image_id not in targets and (ids == image_id).any()
    assert tok.eos_token_id in targets  # the end-of-turn token is learned


def test_user_edit_keeps_targets_assistant_edit_changes_them(proxy):
    sample = toy_samples(1, seed=5)[0]
    pos0, tgt0, _ = _supervised(proxy, sample)
    user_i = next(i for i, t in enumerate(sample.turns) if t.role == "user")
    user_edit = _with_turn(sample, user_i, sample.turns[user_i].content.replace("?", "!") + "x")
    pos1, tgt1, _ = _supervised(proxy, user_edit)
    offset = pos1[0] - pos0[0]
    assert [p - offset for p in pos1] == pos0 and tgt1 == tgt0
    asst_i = next(i for i, t in enumerate(sample.turns) if t.role == "assistant")
    asst_edit = _with_turn(sample, asst_i, "Sure. " + sample.turns[asst_i].content)
    _, tgt2, _ = _supervised(proxy, asst_edit)
    assert tgt2 != tgt0


def test_loss_equals_hand_computation(proxy):
    samples = toy_samples(3, seed=7)
    batch = proxy.collate(samples)
    with torch.no_grad():
        logits = proxy.model(**batch.inputs, use_cache=False).logits
    expected = []
    for b in range(len(samples)):
        terms = []
        for t in range(1, logits.shape[1]):
            target = int(batch.labels[b, t])
            if target == IGNORE_INDEX:
                continue
            row = logits[b, t - 1]
            terms.append(float(torch.logsumexp(row, 0) - row[target]))
        expected.append(math.fsum(terms) / len(terms))
    expected_t = torch.tensor(expected, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(
            proxy.per_sample_loss_reference(samples), expected_t, rtol=0, atol=1e-10
        )
        torch.testing.assert_close(
            proxy.per_sample_loss(proxy.prepare(samples)), expected_t, rtol=0, atol=1e-10
        )
    counts = proxy.supervised_token_counts(proxy.prepare(samples))
    assert counts.tolist() == [
        int((batch.labels[b] != IGNORE_INDEX).sum()) for b in range(len(samples))
    ]


def test_padding_does_not_change_a_sample_loss(proxy):
    """A sample's loss is the same alone and in a batch with a longer one (right padding masked)."""
    short, long_ = toy_samples(2, seed=11, multi_turn_every=2)
    with torch.no_grad():
        alone = proxy.per_sample_loss(proxy.prepare([short]))
        together = proxy.per_sample_loss(proxy.prepare([short, long_]))
    torch.testing.assert_close(together[:1], alone, rtol=0, atol=1e-10)


def test_bad_samples_name_the_sample(proxy):
    no_answer = Sample("s-1", [Turn("user", "hello")])
    with pytest.raises(CollateError, match=r"s-1.*no assistant"):
        proxy.collate([no_answer])
    wrong_images = Sample("s-2", [Turn("user", "<image> hi"), Turn("assistant", "yes")])
    with pytest.raises(CollateError, match=r"s-2.*1 <image> placeholders but 0 images"):
        proxy.collate([wrong_images])
