"""Is a parsed sample usable for SFT scoring? One function, one stable code per reason.

Checks run cheapest first (turns, placeholders, file existence) so a pool's bad records are found
before any image is decoded; decoding (Pillow `verify` then a full `load`) catches truncated files.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from ostselect.data.rejects import (
    BAD_IMAGE,
    EMPTY_ASSISTANT,
    IMAGE_COUNT_MISMATCH,
    MISSING_IMAGE,
    NO_USER_TURN,
    TOO_LONG,
)
from ostselect.data.sample import IMAGE_PLACEHOLDER, ImageRef, Sample


@dataclass(frozen=True)
class Problem:
    """Why a sample is unusable: a stable reject `code` and a one-line `reason`."""

    code: str
    reason: str


def diagnose(
    sample: Sample, *, decode_images: bool = True, max_chars: int | None = None
) -> Problem | None:
    """The first problem that makes `sample` unusable, or None when it is fine."""
    roles = [t.role for t in sample.turns]
    if "user" not in roles:
        return Problem(NO_USER_TURN, "no user turn: the conversation needs a question")
    answers = [t.content for t in sample.turns if t.role == "assistant"]
    if not answers:
        return Problem(EMPTY_ASSISTANT, "no assistant turn: there is no answer to train on")
    if not any(a.strip() for a in answers):
        return Problem(EMPTY_ASSISTANT, "the assistant turn is empty")
    placeholders = sum(t.content.count(IMAGE_PLACEHOLDER) for t in sample.turns)
    if placeholders != len(sample.images):
        return Problem(
            IMAGE_COUNT_MISMATCH,
            f"{placeholders} {IMAGE_PLACEHOLDER} placeholder(s) but {len(sample.images)} image(s)",
        )
    if max_chars is not None:
        n = sum(len(t.content) for t in sample.turns)
        if n > max_chars:
            return Problem(TOO_LONG, f"{n} characters, over the maximum of {max_chars}")
    for i, image in enumerate(sample.images):
        if image.data is None and (image.path is None or not image.path.is_file()):
            return Problem(MISSING_IMAGE, f"image {i} not found: {image.describe()}")
    if decode_images:
        for i, image in enumerate(sample.images):
            error = image_error(image)
            if error is not None:
                return Problem(
                    BAD_IMAGE, f"image {i} ({image.describe()}) does not decode: {error}"
                )
    return None


def check_sample(
    sample: Sample, *, decode_images: bool = True, max_chars: int | None = None
) -> str | None:
    """The reason `sample` is unusable, or None (see `diagnose` for the reason's code)."""
    problem = diagnose(sample, decode_images=decode_images, max_chars=max_chars)
    return None if problem is None else problem.reason


def image_error(image: ImageRef) -> str | None:
    """None if the image decodes fully; otherwise a short description of what went wrong."""
    import warnings

    from PIL import Image

    try:
        data = image.read_bytes()
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                im.verify()  # structure and checksums, without decoding pixels
            with Image.open(io.BytesIO(data)) as im:
                im.load()  # decode every pixel: catches truncated data verify() can miss
    except Exception as e:  # Pillow raises many types (OSError, SyntaxError, ValueError, ...)
        return f"{type(e).__name__}: {str(e)[:120]}"
    return None
