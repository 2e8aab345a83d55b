"""Small deterministic multimodal samples (random-noise PNGs + short conversations) for tests,
smoke runs and benchmarks, generated in memory so nothing depends on files."""

from __future__ import annotations

import io
import random
from collections.abc import Iterator

from ostselect.data.sample import IMAGE_PLACEHOLDER, ImageRef, Sample, Turn

_QUESTIONS = [
    ("What is shown in the picture?", "A red circle above a blue square."),
    ("What is 2 + 3?", "The answer is 5."),
    ("How many triangles are there?", "Counting them one by one, there are 4 triangles."),
    ("Describe the image.", "The image shows a cat sitting on a wooden table."),
    ("What is the slope of y = 2x + 1?", "The slope is 2."),
    ("Solve 2x + 6 = 14.", "Subtract 6 from both sides to get 2x = 8, so x = 4."),
]


def noise_png(seed: int, size: tuple[int, int] = (40, 48)) -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = (rng.random((size[1], size[0], 3)) * 255).astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def toy_samples(n: int, seed: int = 0, *, multi_turn_every: int = 3) -> list[Sample]:
    """`n` one-image samples; every `multi_turn_every`-th has a system prompt and two rounds."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        q, a = _QUESTIONS[rng.randrange(len(_QUESTIONS))]
        turns = [Turn("user", f"{IMAGE_PLACEHOLDER}\n{q}"), Turn("assistant", a)]
        if multi_turn_every and i % multi_turn_every == multi_turn_every - 1:
            q2, a2 = _QUESTIONS[rng.randrange(len(_QUESTIONS))]
            turns = [
                Turn("system", "Answer briefly."),
                *turns,
                Turn("user", q2),
                Turn("assistant", a2),
            ]
        images = [ImageRef(data=noise_png(seed * 100_003 + i))]
        out.append(Sample(id=f"toy-{seed}-{i}", turns=turns, images=images))
    return out


WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "a",
    "mat",
    "with",
    "two",
    "red",
    "dots",
    "and",
    "one",
    "blue",
    "line",
    "near",
    "three",
    "green",
    "squares",
]


def word_samples(
    n: int,
    prefix: str,
    seed: int,
    *,
    image_px: int = 56,
    question_words: tuple[int, int] = (4, 12),
    answer_words: tuple[int, int] = (3, 20),
    groups: tuple[str, ...] = (),
) -> Iterator[Sample]:
    """`n` samples of random words over random-noise images, generated one at a time (nothing
    held), for benchmarks and exactness tests; word counts are drawn from [low, high)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for i in range(n):
        question = " ".join(rng.choice(WORDS, int(rng.integers(*question_words))))
        answer = " ".join(rng.choice(WORDS, int(rng.integers(*answer_words))))
        yield Sample(
            id=f"{prefix}{i}",
            turns=[Turn("user", f"{IMAGE_PLACEHOLDER} {question}"), Turn("assistant", answer)],
            images=[ImageRef(data=noise_png(seed * 100_000 + i, (image_px, image_px)))],
            extra={"topic": groups[i % len(groups)]} if groups else {},
        )
