"""Realistic synthetic-data noise for the DigitMath pool, one generator per failure mode.

The modes mirror what the OST paper finds in model-written CoT data:

- `arith_slip`: reads the digits right, slips in the last step, so the final answer is wrong.
- `misread`: reasons correctly about digits not in the image (a look-alike digit, e.g. 3 -> 8).
- `swapped_image`: the conversation belongs to another image of the same category.
- `truncated`: the reasoning stops mid-way and never reaches an answer.
- `repetition`: degenerate looping on one step, no answer.

Which mode a pool sample got is recorded only in the pool's sidecar file (see `bench.data`), never
in the records scorers read. Counts are exact (rate x pool size, split by the mix with largest
remainders), so two seeds differ in *which* samples are noisy, not in how many.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ostselect.bench.tasks import (
    digits_sentence,
    reasoning_steps,
    solution_text,
    true_answer,
)

CLEAN = "clean"
NOISE_TYPES = ("arith_slip", "misread", "swapped_image", "truncated", "repetition")
DEFAULT_NOISE_RATE = 0.35
# Subtle errors (a wrong number, a misread digit) are the most common in practice; gross ones
# (truncation, loops) are rarer but present. They are also the ones that hurt a competent
# target: with 30% slips and 15% each of truncation and loops, Full-SFT trailed Clean-only by
# only 4.7 points (docs/benchmark.md, "Seed spread").
DEFAULT_NOISE_MIX: Mapping[str, float] = {
    "arith_slip": 0.40,
    "misread": 0.25,
    "swapped_image": 0.15,
    "truncated": 0.10,
    "repetition": 0.10,
}
# Handwritten look-alikes, for realistic misreads.
CONFUSABLE: Mapping[int, tuple[int, ...]] = {
    0: (6, 8, 9),
    1: (7, 4),
    2: (7, 3),
    3: (8, 5, 9),
    4: (9, 1),
    5: (6, 3, 8),
    6: (5, 0, 8),
    7: (1, 2),
    8: (3, 0, 6, 9),
    9: (4, 8, 3),
}


def normalized_mix(mix: Mapping[str, float] | None) -> dict[str, float]:
    """Validate a noise mix and scale it to sum to 1 (None -> the default mix)."""
    mix = dict(DEFAULT_NOISE_MIX if mix is None else mix)
    unknown = sorted(set(mix) - set(NOISE_TYPES))
    if unknown:
        raise ValueError(f"unknown noise type(s) {unknown}; expected some of {NOISE_TYPES}")
    if any(w < 0 for w in mix.values()) or sum(mix.values()) <= 0:
        raise ValueError(f"noise mix weights must be >= 0 with a positive sum, got {mix}")
    total = sum(mix.values())
    return {k: mix[k] / total for k in NOISE_TYPES if k in mix}


def noise_counts(n: int, rate: float, mix: Mapping[str, float] | None = None) -> dict[str, int]:
    """Exact number of samples per noise type (and `clean`) for a pool of `n`."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"noise rate must be in [0, 1], got {rate}")
    weights = normalized_mix(mix)
    n_noisy = round(n * rate)
    raw = {k: n_noisy * w for k, w in weights.items()}
    counts = {k: int(np.floor(v)) for k, v in raw.items()}
    # Largest remainder, ties in NOISE_TYPES order, so the counts sum to n_noisy exactly.
    leftovers = sorted(weights, key=lambda k: (-(raw[k] - counts[k]), NOISE_TYPES.index(k)))
    for k in leftovers[: n_noisy - sum(counts.values())]:
        counts[k] += 1
    return {CLEAN: n - n_noisy, **counts}


def assign_noise(
    n: int, rate: float, mix: Mapping[str, float] | None, rng: np.random.Generator
) -> list[str]:
    """A noise tag per pool position: exact counts (see `noise_counts`), random positions."""
    tags = [kind for kind, c in noise_counts(n, rate, mix).items() for _ in range(c)]
    return [tags[i] for i in rng.permutation(n)]


def slipped_result(category: str, digits: Sequence[int], rng: np.random.Generator) -> int:
    """A plausible wrong final result: off by 1-3 for arithmetic, a transposition or off-by-one
    digit when reading, the smaller digit when comparing."""
    truth = true_answer(category, digits)
    if category == "compare":
        return min(digits)
    if category == "read":
        s = [str(d) for d in digits]
        i = int(rng.integers(len(s) - 1))
        if s[i] != s[i + 1] and not (i == 0 and s[i + 1] == "0"):
            s[i], s[i + 1] = s[i + 1], s[i]
            return int("".join(s))
        j = int(rng.integers(1, len(s)))  # never touch the leading digit
        s[j] = str((int(s[j]) + (1 if rng.random() < 0.5 else 9)) % 10)
        return int("".join(s))
    delta = int(rng.integers(1, 4)) * (1 if rng.random() < 0.5 else -1)
    if category in ("add", "sub") and truth + delta < 0:  # these answers are never negative
        delta = -delta
    return truth + delta


def arith_slip(category: str, digits: Sequence[int], rng: np.random.Generator) -> str:
    """Right digits, right earlier steps, wrong final result carried into 'Answer:'."""
    return solution_text(category, digits, slipped_result(category, digits, rng))


def misread_digits(
    category: str, digits: Sequence[int], rng: np.random.Generator, max_tries: int = 100
) -> tuple[int, ...]:
    """Digits with one (rarely two) replaced by a look-alike, such that the problem stays well
    posed and its answer changes (otherwise the 'noise' would be harmless)."""
    truth = true_answer(category, digits)
    for attempt in range(max_tries):
        seen = list(digits)
        n_changes = 1 if attempt < max_tries // 2 else 2
        for i in rng.choice(len(seen), size=min(n_changes, len(seen)), replace=False):
            options = CONFUSABLE[seen[int(i)]]
            seen[int(i)] = int(options[int(rng.integers(len(options)))])
        if category == "read" and seen[0] == 0:
            continue
        if category == "compare" and seen[0] == seen[1]:
            continue
        if true_answer(category, seen) != truth:
            return tuple(seen)
    raise RuntimeError(f"no misread of {tuple(digits)} changes the {category} answer")


def misread(category: str, digits: Sequence[int], rng: np.random.Generator) -> str:
    """A self-consistent solution for digits that are not the ones in the image."""
    return solution_text(category, misread_digits(category, digits, rng))


def truncated(text: str, rng: np.random.Generator) -> str:
    """`text` cut at a random word boundary after the digits sentence and before 'Answer:'.

    The digits sentence ("The digits are 3, 5 and 2.") is always kept whole: a cut inside it would
    make a misread-like sample rather than an unfinished one.
    """
    body = text.split(" Answer:")[0]
    words = body.split(" ")
    end = body.find(". ")
    first = len(body[: end + 1].split(" ")) if end >= 0 else len(words)
    cut = int(rng.integers(first, len(words))) if len(words) > first else first
    return " ".join(words[:cut])


def repetition(category: str, digits: Sequence[int], rng: np.random.Generator) -> str:
    """A decoding loop: the first step repeated until the length budget, no answer."""
    step = reasoning_steps(category, digits)[0]
    n = int(rng.integers(4, 8))
    tail = step.split(" ")
    partial = " ".join(tail[: int(rng.integers(1, len(tail)))]) if len(tail) > 1 else ""
    return " ".join([digits_sentence(digits), *([step] * n), partial]).rstrip()
