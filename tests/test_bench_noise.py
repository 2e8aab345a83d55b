"""Each DigitMath noise type breaks a solution exactly the way it claims to."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ostselect.bench import noise
from ostselect.bench.tasks import (
    CATEGORIES,
    digits_sentence,
    draw_digits,
    extract_answer,
    extract_digits,
    reasoning_steps,
    solution_text,
    true_answer,
)

problems = st.tuples(st.sampled_from(CATEGORIES), st.integers(0, 2**32 - 1))


def _problem(category, seed):
    rng = np.random.default_rng(seed)
    return draw_digits(category, rng), rng


@given(problems)
def test_arith_slip_keeps_digits_and_earlier_steps_but_not_the_answer(problem):
    category, seed = problem
    digits, rng = _problem(category, seed)
    text = noise.arith_slip(category, digits, rng)
    assert extract_digits(text) == digits
    assert extract_answer(text) is not None
    assert extract_answer(text) != str(true_answer(category, digits))
    clean_steps = reasoning_steps(category, digits)
    for step in clean_steps[:-1]:  # everything before the last step is still right
        assert step in text
    if category in ("add", "sub"):
        assert int(extract_answer(text)) >= 0


@given(problems)
def test_misread_is_self_consistent_about_other_digits(problem):
    category, seed = problem
    digits, rng = _problem(category, seed)
    text = noise.misread(category, digits, rng)
    seen = extract_digits(text)
    assert seen is not None and seen != digits and len(seen) == len(digits)
    assert text == solution_text(category, seen)  # correct reasoning about the misread digits
    assert extract_answer(text) != str(true_answer(category, digits))
    changed = [(a, b) for a, b in zip(digits, seen, strict=True) if a != b]
    assert all(b in noise.CONFUSABLE[a] for a, b in changed)  # look-alikes only


@given(problems)
def test_truncated_has_no_answer_and_is_a_prefix(problem):
    category, seed = problem
    digits, rng = _problem(category, seed)
    clean = solution_text(category, digits)
    text = noise.truncated(clean, rng)
    assert extract_answer(text) is None
    assert clean.startswith(text) and len(text) < len(clean)
    assert text.startswith(digits_sentence(digits))  # the digits sentence is never cut


@given(problems)
def test_repetition_loops_on_a_step_without_an_answer(problem):
    category, seed = problem
    digits, rng = _problem(category, seed)
    text = noise.repetition(category, digits, rng)
    assert extract_answer(text) is None
    assert text.count(reasoning_steps(category, digits)[0]) >= 4


@pytest.mark.parametrize(("n", "rate"), [(0, 0.35), (1, 0.35), (7, 0.5), (1000, 0.35), (10, 1.0)])
def test_noise_counts_are_exact(n, rate):
    counts = noise.noise_counts(n, rate)
    assert sum(counts.values()) == n
    assert n - counts[noise.CLEAN] == round(n * rate)


def test_noise_counts_follow_the_mix():
    counts = noise.noise_counts(1000, 0.4, {"arith_slip": 3, "truncated": 1})
    assert counts == {"clean": 600, "arith_slip": 300, "truncated": 100}


def test_assign_noise_permutes_exact_counts():
    tags = noise.assign_noise(200, 0.3, None, np.random.default_rng(0))
    assert len(tags) == 200 and tags.count(noise.CLEAN) == 140
    assert tags != sorted(tags)


@pytest.mark.parametrize(
    ("rate", "mix", "match"),
    [(1.5, None, "rate"), (0.3, {"typo": 1.0}, "unknown noise"), (0.3, {"misread": 0}, "positive")],
)
def test_bad_noise_settings_are_rejected(rate, mix, match):
    with pytest.raises(ValueError, match=match):
        noise.noise_counts(10, rate, mix)
