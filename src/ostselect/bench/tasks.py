"""DigitMath task categories: questions, fixed-style chain-of-thought answers, answer extraction.

Categories grow in difficulty: `read` (read a 2-3 digit number), `add`, `sub`, `compare` (which
digit is larger), `multi` (a + b - c, two steps). Every answer has the same shape,
"The digits are 3 and 5. 3 + 5 = 8. Answer: 8", so one regex grades every model output and the noise
generators can rewrite one part (a step, the answer) while keeping the rest.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

import numpy as np

CATEGORIES = ("read", "add", "sub", "compare", "multi")
CAPTION = "caption"  # the pretraining task: name the digits, no reasoning
N_DIGITS = {"add": 2, "sub": 2, "compare": 2, "multi": 3}  # `read` and `caption` use 2 or 3

QUESTIONS: dict[str, tuple[str, ...]] = {
    "read": ("What number is written in the image?", "Read the number shown in the image."),
    "add": (
        "What is the sum of the two digits in the image?",
        "Add the two digits shown in the image.",
    ),
    "sub": (
        "What is the left digit minus the right digit in the image?",
        "Subtract the right digit from the left digit in the image.",
    ),
    "compare": (
        "Which of the two digits in the image is larger?",
        "Which digit in the image is the larger one?",
    ),
    "multi": (
        "The image shows digits a, b, c from left to right. What is a + b - c?",
        "Compute a + b - c for the digits a, b, c shown from left to right in the image.",
    ),
    CAPTION: ("Read the digits in the image.", "What digits are in the image?"),
}

_ANSWER_RE = re.compile(r"Answer:\s*(-?\d+)")


def draw_digits(category: str, rng: np.random.Generator) -> tuple[int, ...]:
    """Digits for one problem, with the constraints that keep each category well posed."""
    if category in ("read", CAPTION):
        n = int(rng.integers(2, 4))
        digits = [int(d) for d in rng.integers(0, 10, size=n)]
        if category == "read" and digits[0] == 0:  # a number has no leading zero
            digits[0] = int(rng.integers(1, 10))
        return tuple(digits)
    if category == "sub":  # left >= right keeps answers non-negative
        a, b = sorted((int(d) for d in rng.integers(0, 10, size=2)), reverse=True)
        return (a, b)
    if category == "compare":  # distinct digits: "which is larger" has one answer
        a, b = (int(d) for d in rng.choice(10, size=2, replace=False))
        return (a, b)
    if category in N_DIGITS:
        return tuple(int(d) for d in rng.integers(0, 10, size=N_DIGITS[category]))
    raise ValueError(f"unknown category {category!r}; expected one of {(*CATEGORIES, CAPTION)}")


def question(category: str, rng: np.random.Generator) -> str:
    """One of the category's question phrasings (without the image placeholder)."""
    options = QUESTIONS[category]
    return options[int(rng.integers(len(options)))]


def true_answer(category: str, digits: Sequence[int]) -> int:
    """The ground-truth final answer."""
    if category == "read":
        return int("".join(str(d) for d in digits))
    if category == "add":
        return digits[0] + digits[1]
    if category == "sub":
        return digits[0] - digits[1]
    if category == "compare":
        return max(digits[0], digits[1])
    if category == "multi":
        return digits[0] + digits[1] - digits[2]
    raise ValueError(f"category {category!r} has no numeric answer")


def digits_sentence(digits: Sequence[int]) -> str:
    """'The digits are 3 and 5.' / 'The digits are 3, 5 and 2.'"""
    names = [str(d) for d in digits]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"The digits are {listed}."


def reasoning_steps(category: str, digits: Sequence[int], result: int | None = None) -> list[str]:
    """The worked steps after the digits sentence, ending in `result` (default: the true answer).

    Passing a wrong `result` gives a slip in the last step only, with the earlier steps correct.
    """
    r = true_answer(category, digits) if result is None else result
    if category == "read":
        return [f"The number is {r}."]
    if category == "add":
        return [f"{digits[0]} + {digits[1]} = {r}."]
    if category == "sub":
        return [f"{digits[0]} - {digits[1]} = {r}."]
    if category == "compare":
        other = digits[1] if r == digits[0] else digits[0]
        return [f"{r} > {other}."]
    if category == "multi":
        s = digits[0] + digits[1]
        return [f"{digits[0]} + {digits[1]} = {s}.", f"{s} - {digits[2]} = {r}."]
    raise ValueError(f"category {category!r} has no reasoning steps")


def solution_text(category: str, digits: Sequence[int], result: int | None = None) -> str:
    """The full assistant answer: digits sentence, steps, 'Answer: n' (captions: digits only)."""
    if category == CAPTION:
        return digits_sentence(digits)
    r = true_answer(category, digits) if result is None else result
    return " ".join(
        [digits_sentence(digits), *reasoning_steps(category, digits, r), f"Answer: {r}"]
    )


def caption_answer(digits: Sequence[int]) -> str:
    """Ground truth of a caption sample: the digits in reading order, e.g. '352'."""
    return "".join(str(d) for d in digits)


def extract_answer(text: str) -> str | None:
    """The final answer in a model output ('Answer: n', last wins), normalised; None if absent."""
    found = _ANSWER_RE.findall(text)
    return str(int(found[-1])) if found else None


_DIGITS_RE = re.compile(r"The digits are ([0-9](?:, [0-9])*(?: and [0-9])?)\.")


def extract_digits(text: str) -> tuple[int, ...] | None:
    """The digits a solution claims to see (from its first digits sentence); None if absent."""
    m = _DIGITS_RE.search(text)
    if m is None:
        return None
    return tuple(int(d) for d in re.findall(r"[0-9]", m.group(1)))


FACT = "fact"  # text-only arithmetic problems, mixed into language-model pretraining
TEXT_QUESTIONS = {
    "read": "What number do they form?",
    "add": "What is their sum?",
    "sub": "What is the first minus the second?",
    "compare": "Which is larger?",
    "multi": "Call them a, b and c. What is a + b - c?",
}


def arithmetic_facts() -> list[tuple[str, str, str]]:
    """Every step DigitMath asks for, with the digits given as text: (question, solution,
    answer), e.g. ("The digits are 6 and 1. What is their sum?", "The digits are 6 and 1.
    6 + 1 = 7. Answer: 7", "7").

    A pretrained VLM already does arithmetic in text; our random language models do not, and a
    few hundred fine-tuning steps cannot teach reading, arithmetic and the answer format at once.
    The solutions are written exactly like the image problems' (after the digits sentence), so
    the arithmetic is learned in the context it is used in: a prototype that learned bare facts
    ("What is 6 + 1?") did them perfectly in text and slipped on them after images. `read`'s
    step (digits -> number) is a fact too: without it the fine-tune had to learn it from ~200
    pool samples, and whether it did tipped from seed to seed (docs/benchmark.md, "Seed spread").
    All combinations: read 990 (no leading zero), add 100, sub 55 (left >= right), compare 90,
    multi 1,000.
    """
    out: list[tuple[str, str, str]] = []
    shapes = (("read", 2), ("read", 3), ("add", 2), ("sub", 2), ("compare", 2), ("multi", 3))
    for category, n in shapes:
        for digits in itertools.product(range(10), repeat=n):
            if category == "read" and digits[0] == 0:
                continue
            if category == "sub" and digits[0] < digits[1]:
                continue
            if category == "compare" and digits[0] == digits[1]:
                continue
            out.append(
                (
                    f"{digits_sentence(digits)} {TEXT_QUESTIONS[category]}",
                    solution_text(category, digits),
                    str(true_answer(category, digits)),
                )
            )
    return out
