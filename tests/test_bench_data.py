"""The written DigitMath data set: disjoint scans, determinism, hidden noise, honest noise."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image

from ostselect.bench.data import (
    DigitMathPaths,
    load_records,
    make_digitmath,
    noise_labels,
    pool_truth,
    read_manifest,
)
from ostselect.bench.digits import CANVAS, SPLITS, load_scans
from ostselect.bench.noise import CLEAN, NOISE_TYPES
from ostselect.bench.tasks import CATEGORIES, extract_answer, extract_digits, true_answer

SIZES = {"n_pool": 150, "n_heldout": 30, "n_test": 30, "n_pretrain": 40}


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> DigitMathPaths:
    return make_digitmath(tmp_path_factory.mktemp("dm") / "data", seed=7, **SIZES)


def test_every_split_is_written_with_relative_images(dataset):
    for split in SPLITS:
        records = load_records(dataset.split(split))
        assert len(records) == SIZES[f"n_{split}"]
        assert len({r["id"] for r in records}) == len(records)
        for r in records:
            (image,) = r["images"]
            assert not Path(image).is_absolute()
            with Image.open(dataset.root / image) as im:
                assert im.size == CANVAS and im.mode == "RGB"
            user, assistant = r["messages"]
            assert user["role"] == "user" and user["content"].startswith("<image>")
            assert assistant["role"] == "assistant" and assistant["content"]


def test_splits_use_disjoint_scans(dataset):
    manifest = read_manifest(dataset.root)
    per_split = {s: set(manifest["scans"][s]) for s in SPLITS}
    for a in SPLITS:
        for b in SPLITS:
            if a < b:
                assert not per_split[a] & per_split[b], (a, b)
    hidden = json.loads(dataset.pool_noise.read_text())
    labels = load_scans().labels
    for split in SPLITS:
        for r in load_records(dataset.split(split)):
            scans = hidden[r["id"]]["scans"] if split == "pool" else r["scans"]
            assert set(scans) <= per_split[split], (split, r["id"])
            if split != "pool":  # the recorded scans are the digits of the answer
                digits = tuple(int(labels[s]) for s in scans)
                assert extract_digits(r["messages"][1]["content"]) == digits


def test_scorer_visible_pool_has_no_hidden_fields(dataset):
    for r in load_records(dataset.pool):
        assert set(r) == {"id", "messages", "images", "category"}
    raw = dataset.pool.read_text()
    assert '"noise"' not in raw and '"answer"' not in raw and '"scans"' not in raw
    labels = noise_labels(dataset.pool)
    assert set(labels) == {r["id"] for r in load_records(dataset.pool)}
    assert set(labels.values()) <= {CLEAN, *NOISE_TYPES}


def test_pool_noise_matches_rate_and_each_tag_is_honest(dataset):
    labels = noise_labels(dataset.pool)
    truth = pool_truth(dataset.pool)
    hidden = json.loads(dataset.pool_noise.read_text())
    assert sum(v != CLEAN for v in labels.values()) == round(0.35 * SIZES["n_pool"])
    assert {v for v in labels.values()} == {CLEAN, *NOISE_TYPES}
    by_id = {r["id"]: r for r in load_records(dataset.pool)}
    for pid, kind in labels.items():
        text = by_id[pid]["messages"][1]["content"]
        digits = tuple(hidden[pid]["digits"])
        answer = extract_answer(text)
        assert truth[pid] == str(true_answer(by_id[pid]["category"], digits))
        if kind == CLEAN:
            assert answer == truth[pid] and extract_digits(text) == digits
        elif kind == "arith_slip":
            assert answer not in (None, truth[pid]) and extract_digits(text) == digits
        elif kind in ("misread", "swapped_image"):
            assert extract_digits(text) == tuple(hidden[pid]["shown_digits"]) != digits
            assert answer not in (None, truth[pid])
        else:  # truncated, repetition
            assert answer is None
    for pid, kind in labels.items():
        if kind == "swapped_image":  # the text is another pool image's clean conversation
            donor = hidden[pid]["donor"]
            assert by_id[donor]["category"] == by_id[pid]["category"]
            assert tuple(hidden[donor]["digits"]) == tuple(hidden[pid]["shown_digits"])


def test_heldout_test_and_pretrain_are_clean(dataset):
    for split in ("heldout", "test"):
        records = load_records(dataset.split(split))
        assert {r["category"] for r in records} == set(CATEGORIES)
        for r in records:
            assert extract_answer(r["messages"][1]["content"]) == r["answer"]
    for r in load_records(dataset.pretrain):
        assert r["category"] == "caption"
        digits = extract_digits(r["messages"][1]["content"])
        assert "".join(map(str, digits)) == r["answer"]


def test_same_seed_gives_byte_identical_files(dataset, tmp_path):
    again = make_digitmath(tmp_path / "again", seed=7, **SIZES)
    assert _tree_digest(again.root) == _tree_digest(dataset.root)
    other = make_digitmath(tmp_path / "other", seed=8, **SIZES)
    assert _tree_digest(other.root) != _tree_digest(dataset.root)


def test_rerun_into_the_same_folder_replaces_stale_images(tmp_path):
    root = tmp_path / "dm"
    make_digitmath(root, n_pool=20, n_heldout=5, n_test=5, n_pretrain=5, seed=1)
    paths = make_digitmath(root, n_pool=10, n_heldout=5, n_test=5, n_pretrain=5, seed=1)
    assert len(list(paths.images.glob("pool-*.png"))) == 10


def test_refuses_to_clear_a_foreign_images_folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "mine.png").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="not from a DigitMath run"):
        make_digitmath(tmp_path, n_pool=5, n_heldout=5, n_test=5, n_pretrain=5)
    assert (tmp_path / "images" / "mine.png").exists()


def test_noise_rate_zero_gives_a_clean_pool(tmp_path):
    paths = make_digitmath(tmp_path, n_pool=30, n_heldout=5, n_test=5, n_pretrain=5, noise_rate=0)
    assert set(noise_labels(paths.pool).values()) == {CLEAN}


def test_the_library_reader_reads_every_split_without_rejects(dataset):
    from ostselect.data import iter_samples  # the real pool reader

    for split in SPLITS:
        samples = list(iter_samples(dataset.split(split), decode_images=True))
        assert len(samples) == SIZES[f"n_{split}"], split
        assert all(s.images[0].open().size == CANVAS for s in samples[:5])
        if split == "pool":  # what a scorer gets: no hidden field anywhere in the sample
            assert all(set(s.extra) == {"category"} for s in samples)
