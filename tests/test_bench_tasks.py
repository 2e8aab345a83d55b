"""DigitMath tasks: well-posed digits, fixed-style answers, answer extraction."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ostselect.bench.tasks import (
    CAPTION,
    CATEGORIES,
    draw_digits,
    extract_answer,
    extract_digits,
    question,
    solution_text,
    true_answer,
)


@pytest.mark.parametrize(
    ("category", "digits", "text"),
    [
        ("read", (3, 0, 7), "The digits are 3, 0 and 7. The number is 307. Answer: 307"),
        ("add", (3, 5), "The digits are 3 and 5. 3 + 5 = 8. Answer: 8"),
        ("sub", (9, 4), "The digits are 9 and 4. 9 - 4 = 5. Answer: 5"),
        ("compare", (2, 6), "The digits are 2 and 6. 6 > 2. Answer: 6"),
        ("multi", (1, 2, 8), "The digits are 1, 2 and 8. 1 + 2 = 3. 3 - 8 = -5. Answer: -5"),
        (CAPTION, (4, 4), "The digits are 4 and 4."),
    ],
)
def test_solution_text_has_the_fixed_style(category, digits, text):
    assert solution_text(category, digits) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The digits are 3 and 5. 3 + 5 = 8. Answer: 8", "8"),
        ("... Answer: -5", "-5"),
        ("Answer:  012.", "12"),
        ("Answer: 3 ... wait. Answer: 4", "4"),  # last one wins
        ("The digits are 3 and 5. 3 + 5 =", None),
        ("answer: 8", None),  # the fixed style is case-sensitive
        ("", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@given(st.sampled_from(CATEGORIES), st.integers(0, 2**32 - 1))
def test_drawn_problems_are_well_posed_and_self_graded(category, seed):
    rng = np.random.default_rng(seed)
    digits = draw_digits(category, rng)
    assert all(0 <= d <= 9 for d in digits)
    if category == "read":
        assert 2 <= len(digits) <= 3 and digits[0] != 0
    if category == "sub":
        assert digits[0] >= digits[1]
    if category == "compare":
        assert digits[0] != digits[1]
    text = solution_text(category, digits)
    assert extract_answer(text) == str(true_answer(category, digits))
    assert extract_digits(text) == digits
    assert question(category, rng)


def test_unknown_category_is_rejected():
    with pytest.raises(ValueError, match="unknown category"):
        draw_digits("divide", np.random.default_rng(0))
