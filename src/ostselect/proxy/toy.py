"""Small deterministic multimodal samples (random-noise PNGs + short conversations) for tests,
smoke runs and benchmarks, generated in memory so nothing depends on files."""

from __future__ import annotations

import io
import random

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
