"""Real handwritten digit scans, split into disjoint sets and composed into small problem images.

The scans are scikit-learn's bundled `load_digits` (1,797 real 8x8 scans, 0 = paper, 16 = ink), so
the benchmark needs no download. Every split (pretrain / pool / heldout / test) draws from its own
scans, so a model cannot score on the test split by having memorised a particular scan in training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

SPLITS = ("pretrain", "pool", "heldout", "test")
# Share of each digit's scans that goes to each split (the rest of the protocol only needs many
# distinct compositions per split, and those come from combining scans, not from more scans).
DEFAULT_SCAN_FRACTIONS: Mapping[str, float] = {
    "pretrain": 0.35,
    "pool": 0.35,
    "heldout": 0.10,
    "test": 0.20,
}
CANVAS = (84, 28)  # width, height: three 28-px cells; every problem image has this size
CELL = 28
N_CELLS = CANVAS[0] // CELL
DIGIT_SIZE = (18, 24)  # inclusive range of the upscaled digit's side, in pixels
JITTER = 2  # max offset of a digit from its cell centre, in pixels
SCAN_MAX = 16.0  # load_digits ink value at full darkness


@dataclass(frozen=True)
class DigitScans:
    """All scans: `images[i]` is an 8x8 float array in [0, 16], `labels[i]` its digit."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def load_scans() -> DigitScans:
    """The 1,797 real scans bundled with scikit-learn (no network)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return DigitScans(images=np.asarray(bunch.images, dtype=np.float64), labels=bunch.target.copy())


def split_scans(
    labels: np.ndarray,
    seed: int,
    fractions: Mapping[str, float] = DEFAULT_SCAN_FRACTIONS,
) -> dict[str, np.ndarray]:
    """Disjoint, digit-stratified scan indices per split (sorted), reproducible from `seed`.

    Each digit's scans are shuffled and cut by `fractions`; rounding leftovers go to the last split,
    so the splits partition all scans exactly.
    """
    names = list(fractions)
    total = sum(fractions.values())
    if total <= 0 or any(f < 0 for f in fractions.values()):
        raise ValueError(f"scan fractions must be non-negative and sum > 0, got {dict(fractions)}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5CA45]))
    out: dict[str, list[int]] = {name: [] for name in names}
    for digit in range(10):
        idx = np.flatnonzero(labels == digit)
        idx = idx[rng.permutation(len(idx))]
        start = 0
        for j, name in enumerate(names):
            stop = (
                len(idx)
                if j == len(names) - 1
                else start + round(len(idx) * fractions[name] / total)
            )
            chosen = idx[start:stop]
            if len(chosen) == 0:
                raise ValueError(
                    f"split {name!r} gets no scans of digit {digit}: raise its fraction"
                )
            out[name].extend(int(i) for i in chosen)
            start = stop
    return {name: np.array(sorted(v), dtype=np.int64) for name, v in out.items()}


class ScanBank:
    """The scans of one split, indexed by digit, to draw a random scan of a given digit."""

    def __init__(self, scans: DigitScans, indices: Sequence[int]):
        self.scans = scans
        self.indices = np.asarray(indices, dtype=np.int64)
        self.by_digit = {d: self.indices[scans.labels[self.indices] == d] for d in range(10)}
        missing = [d for d, v in self.by_digit.items() if len(v) == 0]
        if missing:
            raise ValueError(f"no scans of digit(s) {missing} in this split")

    def draw(self, digit: int, rng: np.random.Generator) -> int:
        """Index (into the full scan set) of a random scan of `digit` from this split."""
        pool = self.by_digit[digit]
        return int(pool[rng.integers(len(pool))])


def render_scan(scan: np.ndarray, size: int) -> np.ndarray:
    """An 8x8 scan as a `size` x `size` uint8 grayscale patch: dark ink on white, bilinear."""
    ink = np.clip(scan / SCAN_MAX, 0.0, 1.0)
    gray = Image.fromarray(np.round(255.0 * (1.0 - ink)).astype(np.uint8))
    return np.asarray(gray.resize((size, size), Image.Resampling.BILINEAR))


def _add_clutter(canvas: np.ndarray, rng: np.random.Generator) -> None:
    """Light distractors (a few gray dots, sometimes one faint stroke) that leave digits legible."""
    h, w = canvas.shape
    for _ in range(int(rng.integers(3, 9))):
        y, x = int(rng.integers(h)), int(rng.integers(w))
        canvas[y, x] = min(canvas[y, x], int(rng.integers(150, 215)))
    if rng.random() < 0.5:
        x0, x1 = sorted(int(v) for v in rng.integers(0, w, size=2))
        y0, y1 = (int(v) for v in rng.integers(0, h, size=2))
        n = max(x1 - x0, 1)
        shade = int(rng.integers(190, 225))
        for t in range(n + 1):
            x = x0 + t
            y = round(y0 + (y1 - y0) * t / n)
            if 0 <= x < w:
                canvas[y, x] = min(canvas[y, x], shade)


def draw_cells(n: int, rng: np.random.Generator) -> tuple[int, ...]:
    """Which of the `N_CELLS` cells hold the `n` digits, left to right (blank cells stay empty)."""
    if not 1 <= n <= N_CELLS:
        raise ValueError(f"can place 1..{N_CELLS} digits, got {n}")
    return tuple(sorted(int(c) for c in rng.choice(N_CELLS, size=n, replace=False)))


def compose_image(
    scans: Sequence[np.ndarray],
    rng: np.random.Generator,
    *,
    cells: Sequence[int] | None = None,
    clutter: bool = False,
) -> Image.Image:
    """Place 1-3 scans on a white `CANVAS`, one per 28-px cell, resized and jittered; RGB output.

    Every digit lies entirely inside its own cell (`cells`, ascending; default: the leftmost
    ones), because a merged image token of the benchmark VLMs sees exactly one cell: a digit that
    straddled two cells would be half-seen by two tokens and read by neither.
    """
    width, height = CANVAS
    n = len(scans)
    cells = tuple(range(n)) if cells is None else tuple(int(c) for c in cells)
    if not 1 <= n <= N_CELLS or len(cells) != n:
        raise ValueError(f"can place 1..{N_CELLS} digits, one per cell; got {n} for cells {cells}")
    if list(cells) != sorted(set(cells)) or not all(0 <= c < N_CELLS for c in cells):
        raise ValueError(f"cells must be distinct, ascending and in 0..{N_CELLS - 1}, got {cells}")
    canvas = np.full((height, width), 255, dtype=np.uint8)
    for cell, scan in zip(cells, scans, strict=True):
        size = int(rng.integers(DIGIT_SIZE[0], DIGIT_SIZE[1] + 1))
        patch = render_scan(scan, size)
        left = cell * CELL
        x = left + (CELL - size) // 2 + int(rng.integers(-JITTER, JITTER + 1))
        y = (height - size) // 2 + int(rng.integers(-JITTER, JITTER + 1))
        x = min(max(x, left), left + CELL - size)
        y = min(max(y, 0), height - size)
        region = canvas[y : y + size, x : x + size]
        np.minimum(region, patch, out=region)
    if clutter:
        _add_clutter(canvas, rng)
    return Image.fromarray(canvas).convert("RGB")
