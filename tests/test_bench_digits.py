"""DigitMath scans: disjoint stratified splits and legible composed images."""

from __future__ import annotations

import numpy as np
import pytest

from ostselect.bench.digits import (
    CANVAS,
    CELL,
    N_CELLS,
    SPLITS,
    ScanBank,
    compose_image,
    draw_cells,
    load_scans,
    render_scan,
    split_scans,
)


@pytest.fixture(scope="module")
def scans():
    return load_scans()


def test_load_scans_is_the_real_sklearn_set(scans):
    assert len(scans) == 1797
    assert scans.images.shape == (1797, 8, 8)
    assert set(np.unique(scans.labels)) == set(range(10))


def test_splits_partition_the_scans_disjointly_and_by_digit(scans):
    splits = split_scans(scans.labels, seed=3)
    assert tuple(splits) == SPLITS
    seen = np.concatenate(list(splits.values()))
    assert len(seen) == len(np.unique(seen)) == len(scans)  # disjoint and complete
    for name, idx in splits.items():
        counts = np.bincount(scans.labels[idx], minlength=10)
        assert counts.min() > 0, name
        # stratified: each digit's share in the split is its share of the whole set (+-1 scan)
        expected = np.bincount(scans.labels, minlength=10) * len(idx) / len(scans)
        assert np.all(np.abs(counts - expected) <= 2), (name, counts, expected)


def test_splits_depend_on_the_seed_only(scans):
    a = split_scans(scans.labels, seed=1)
    b = split_scans(scans.labels, seed=1)
    c = split_scans(scans.labels, seed=2)
    assert all(np.array_equal(a[k], b[k]) for k in SPLITS)
    assert not np.array_equal(a["test"], c["test"])


def test_bank_draws_only_its_own_scans_of_the_right_digit(scans):
    splits = split_scans(scans.labels, seed=0)
    bank = ScanBank(scans, splits["heldout"])
    rng = np.random.default_rng(0)
    allowed = set(splits["heldout"].tolist())
    for digit in range(10):
        for _ in range(20):
            i = bank.draw(digit, rng)
            assert i in allowed and scans.labels[i] == digit


def test_render_scan_keeps_ink_dark_and_paper_white(scans):
    patch = render_scan(scans.images[0], 20)
    assert patch.shape == (20, 20) and patch.dtype == np.uint8
    assert patch.min() < 60 and patch.max() == 255


@pytest.mark.parametrize("cells", [(0,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_digit_lies_inside_its_own_cell(scans, cells, seed):
    """One merged image token sees exactly one 28-px cell, so every digit's ink must stay in its
    cell and a blank cell must stay blank (checked on the pixels, without clutter)."""
    rng = np.random.default_rng(seed)
    im = compose_image([scans.images[i] for i in range(len(cells))], rng, cells=cells)
    assert im.size == CANVAS and im.mode == "RGB"
    gray = np.asarray(im)[:, :, 0]
    for cell in range(N_CELLS):
        block = gray[:, cell * CELL : (cell + 1) * CELL]
        if cell in cells:
            assert (block < 100).any(), f"no ink in occupied cell {cell}"
        else:
            assert block.min() == 255, f"ink in blank cell {cell}"
    for cell in cells:  # the digit alone, drawn on a blank canvas, stays in its cell
        solo = compose_image([scans.images[0]], np.random.default_rng(seed), cells=(cell,))
        ink = np.flatnonzero((np.asarray(solo)[:, :, 0] < 255).any(axis=0))
        assert cell * CELL <= ink.min() and ink.max() < (cell + 1) * CELL


def test_draw_cells_are_ascending_and_distinct():
    rng = np.random.default_rng(0)
    seen = {draw_cells(2, rng) for _ in range(100)}
    assert seen == {(0, 1), (0, 2), (1, 2)}
    assert draw_cells(3, rng) == (0, 1, 2)


def test_compose_rejects_too_many_digits(scans):
    with pytest.raises(ValueError, match="digits"):
        compose_image([scans.images[0]] * 4, np.random.default_rng(0))
