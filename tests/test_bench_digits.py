"""DigitMath scans: disjoint stratified splits and legible composed images."""

from __future__ import annotations

import numpy as np
import pytest

from ostselect.bench.digits import (
    CANVAS,
    SPLITS,
    ScanBank,
    compose_image,
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


@pytest.mark.parametrize("n_digits", [1, 2, 3])
def test_composed_image_is_small_rgb_with_ink_in_each_cell(scans, n_digits):
    rng = np.random.default_rng(0)
    im = compose_image([scans.images[i] for i in range(n_digits)], rng, clutter=True)
    assert im.size == CANVAS and im.mode == "RGB"
    gray = np.asarray(im)[:, :, 0]
    dark_columns = np.flatnonzero((gray < 100).any(axis=0))
    # digits are placed left to right around the centre: ink spans about n_digits cells
    assert dark_columns.max() - dark_columns.min() >= max(5, 28 * (n_digits - 1))


def test_compose_rejects_too_many_digits(scans):
    with pytest.raises(ValueError, match="digits"):
        compose_image([scans.images[0]] * 4, np.random.default_rng(0))
