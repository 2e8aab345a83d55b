"""DigitMath pretraining: the per-cell reader's labels, the facts, a reader that stays frozen
through language-model alignment, and Protocol B's exact step count and schedule."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from ostselect.bench.config import mini_config
from ostselect.bench.pretrain import (
    BLANK,
    FACT_REPEATS,
    all_fact_samples,
    cell_labels,
    fact_category,
    fact_samples,
    pretrain_reader,
    tokenizer_extras,
)
from ostselect.bench.tasks import arithmetic_facts, extract_answer, true_answer
from ostselect.data.sample import Sample, Turn


def test_cell_labels_name_cell_and_content():
    s = Sample(id="c", turns=[Turn("user", "x")], extra={"answer": "47", "cells": [0, 2]})
    assert cell_labels(s) == [0 * 11 + 4, 1 * 11 + BLANK, 2 * 11 + 7]


def test_facts_cover_every_problem_once_and_are_right():
    facts = arithmetic_facts()
    assert len(facts) == 90 + 900 + 100 + 55 + 90 + 1000  # read 2/3 digits, add, sub, ...
    assert len({q for q, _, _ in facts}) == len(facts)
    for question, solution, answer in facts:
        assert extract_answer(solution) == answer
        assert solution.startswith(question.split(".")[0] + ".")  # same digits sentence
    assert true_answer("multi", (9, 9, 0)) == 18 and any("18 - 0 = 18" in f[1] for f in facts)
    assert any(f[1].endswith("The number is 407. Answer: 407") for f in facts)
    assert not any(f[2].startswith("0") and len(f[2]) > 1 for f in facts)  # no leading zero
    assert len(all_fact_samples()) == len(facts)
    per_round = sum(FACT_REPEATS[fact_category(q)] for q, _, _ in facts)
    mixed = fact_samples(per_round + 2, seed=0)
    assert len(mixed) == per_round + 2 and all(not s.images for s in mixed)
    # one round holds every fact FACT_REPEATS[category] times, then the next round starts
    one_round = Counter(s.turns[1].content for s in mixed[:per_round])
    assert len(one_round) == len(facts)
    assert all(one_round[sol] == FACT_REPEATS[fact_category(q)] for q, sol, _ in facts)
    # every other prompt leaves the digits to the solution's own digits sentence (image-like)
    with_digits = [s.turns[0].content.startswith("The digits are") for s in mixed]
    assert with_digits == [i % 2 == 0 for i in range(len(mixed))]
    for s in mixed[:50]:
        assert s.turns[1].content.startswith("The digits are")
        assert extract_answer(s.turns[1].content) == s.extra["answer"]
    assert [s.turns[0].content for s in fact_samples(20, 0)] == [
        s.turns[0].content for s in mixed[:20]
    ]


@pytest.fixture(scope="module")
def tiny_bench_model(tmp_path_factory):
    from ostselect.bench.data import make_digitmath
    from ostselect.bench.models import build_bench_model
    from ostselect.data import iter_samples

    root = tmp_path_factory.mktemp("pre")
    paths = make_digitmath(root / "data", n_pool=8, n_heldout=5, n_test=5, n_pretrain=24)
    captions = list(iter_samples(paths.pretrain))
    dims = mini_config().target
    corpus = [t.content for s in captions for t in s.turns] + tokenizer_extras()
    folder = build_bench_model(root / "m", text=dims.text(), vision=dims.vision(), corpus=corpus)
    return folder, captions, list(iter_samples(paths.pool))


def test_reader_stays_bit_identical_through_alignment(tiny_bench_model):
    from ostselect.bench.target import train_model
    from ostselect.proxy import load_proxy

    folder, captions, _ = tiny_bench_model
    model = load_proxy(folder, params="all")
    visual = model.hf_model.model.visual
    before_reader = {k: v.clone() for k, v in visual.state_dict().items()}
    result = pretrain_reader(model, captions[4:], captions[:4], epochs=1, batch_size=8)
    assert 0.0 <= result["heldout_cell_accuracy"] <= 1.0 and result["steps"] == 3
    frozen = {k: v.clone() for k, v in visual.state_dict().items()}
    assert any(not torch.equal(before_reader[k], frozen[k]) for k in frozen)  # it trained
    assert not any(p.requires_grad for p in visual.parameters())
    lm_before = {k: v.clone() for k, v in model.trainable_parameters().items()}
    run = train_model(model, [*captions, *fact_samples(8, 0)], lr=1e-2, batch_size=8, epochs=1)
    assert run.steps == 4
    for k, v in visual.state_dict().items():
        assert torch.equal(frozen[k], v), k
    assert any(not torch.equal(lm_before[k], v) for k, v in model.trainable_parameters().items())


def test_protocol_b_trains_exactly_its_steps_on_a_cosine_over_them(tiny_bench_model):
    from ostselect.bench.target import train_model
    from ostselect.proxy import load_proxy

    folder, _, pool = tiny_bench_model
    model = load_proxy(folder, params="all")
    per_epoch = math.ceil(len(pool) / 3)
    run = train_model(model, pool, lr=1e-3, batch_size=3, total_steps=per_epoch * 2 + 1)
    # three passes are needed, but the schedule spans exactly the asked steps, not 3 epochs
    assert run.steps == run.schedule_steps == per_epoch * 2 + 1
