"""Writers: subsets come back in the pool's own format with every kept record unchanged."""

from __future__ import annotations

import json

import pytest

from conftest import png_bytes
from ostselect.data import (
    ImageRef,
    Sample,
    Turn,
    iter_samples,
    pool_fingerprint,
    read_pool,
    write_samples,
    write_subset,
)


def text_records(n: int) -> list[dict]:
    """Text-only records with varied fields, unicode and key orders (a writer must not reorder)."""
    return [
        {
            "messages": [
                {"role": "user", "content": f"Frage {i}: ¿cuánto es {i} + 1? 数学"},
                {"role": "assistant", "content": str(i + 1)},
            ],
            "id": f"r{i}",
            "weight": i / 3,
            "tags": ["t", str(i)],
        }
        for i in range(n)
    ]


KEEP = ["r4", "r0", "r2", "not-in-pool"]  # order of keep_ids must not matter: pool order wins


def test_jsonl_subset_lines_are_byte_identical(tmp_path):
    pool = tmp_path / "pool.jsonl"
    lines = [
        json.dumps(r, ensure_ascii=False, separators=(",", ":")).encode() for r in text_records(6)
    ]
    lines[2] = lines[2].replace(b'"id"', b'  "id"')  # odd spacing must survive too
    lines[4] = lines[4] + b"\r"  # and a CRLF line ending
    pool.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "sub.jsonl"
    assert write_subset(pool, KEEP, out) == 3
    assert out.read_bytes().split(b"\n")[:-1] == [lines[0], lines[2], lines[4]]


@pytest.mark.parametrize("indent", [None, 2, 4])
def test_json_array_subset_keeps_each_record_text(tmp_path, indent):
    records = text_records(6)
    pool = tmp_path / "pool.json"
    pool.write_text(json.dumps(records, indent=indent, ensure_ascii=False) + "\n", encoding="utf-8")
    out = tmp_path / "sub.json"
    assert write_subset(pool, KEEP, out) == 3
    kept = [records[0], records[2], records[4]]
    assert json.loads(out.read_text(encoding="utf-8")) == kept
    # Record text and layout are copied, so the file equals a fresh dump with the same settings.
    expected = json.dumps(kept, indent=indent, ensure_ascii=False) + "\n"
    assert out.read_text(encoding="utf-8") == expected


def test_parquet_subset_keeps_schema_and_rows(tmp_path, write_pool):
    import pyarrow.parquet as pq

    records = text_records(600)  # more than one reading batch
    records[1]["images"] = [{"bytes": png_bytes(), "path": "a.png"}]
    pool = write_pool(records, "parquet")
    out = tmp_path / "sub.parquet"
    keep = [f"r{i}" for i in range(0, 600, 7)]
    assert write_subset(pool, keep, out) == len(keep)
    src, dst = pq.read_table(pool), pq.read_table(out)
    assert dst.schema.equals(src.schema, check_metadata=True)
    assert dst.to_pylist() == [src.to_pylist()[i] for i in range(0, 600, 7)]


def test_hf_subset_selects_rows_and_keeps_features(tmp_path, write_pool):
    import datasets

    records = [
        {
            "id": f"h{i}",
            "messages": [
                {"role": "user", "content": "<image>q"},
                {"role": "assistant", "content": "a"},
            ],
            "images": [{"bytes": png_bytes(color=(i, 0, 0)), "path": None}],
        }
        for i in range(5)
    ]
    pool = write_pool(records, "hf", image_feature=True)
    out = tmp_path / "sub_hf"
    assert write_subset(pool, ["h3", "h1"], out) == 2
    src, dst = datasets.load_from_disk(str(pool)), datasets.load_from_disk(str(out))
    assert dst.features == src.features
    raw = dst.with_format("arrow")[:].to_pylist()
    assert raw == [src.with_format("arrow")[i : i + 1].to_pylist()[0] for i in (1, 3)]
    assert [s.id for s in iter_samples(out, decode_images=True)] == ["h1", "h3"]


def test_subset_of_records_without_ids_uses_derived_ids(tmp_path, good_records, write_pool):
    pool = write_pool(good_records, "jsonl")
    ids = [s.id for s in iter_samples(pool)]
    out = tmp_path / "sub.jsonl"
    assert write_subset(pool, ids[3:], out) == 1
    assert out.read_text() == pool.read_text().splitlines(keepends=True)[3]


def test_duplicate_ids_keep_the_first_record_only(tmp_path):
    pool = tmp_path / "dup.jsonl"
    recs = [*text_records(2), {**text_records(1)[0], "weight": 99}]
    pool.write_text("".join(json.dumps(r) + "\n" for r in recs))
    out = tmp_path / "sub.jsonl"
    assert write_subset(pool, ["r0"], out) == 1
    assert json.loads(out.read_text())["weight"] == 0


def test_subset_refuses_to_overwrite_its_pool(tmp_path):
    pool = tmp_path / "pool.jsonl"
    pool.write_text(json.dumps(text_records(1)[0]) + "\n")
    with pytest.raises(ValueError, match="overwrite"):
        write_subset(pool, ["r0"], pool)
    assert json.loads(pool.read_text())["id"] == "r0"


@pytest.mark.parametrize(("fmt", "name"), [("messages", "new.jsonl"), ("llava", "new.json")])
def test_write_samples_round_trips_through_the_reader(tmp_path, make_png, fmt, name):
    path = make_png("src/a.png", color=(1, 2, 3))
    samples = [
        Sample(
            id="w1",
            turns=[Turn("user", "<image><image>Two?"), Turn("assistant", "Yes.")],
            images=[ImageRef(path=path), ImageRef(data=png_bytes(color=(9, 9, 9)))],
            extra={"difficulty": 3},
        ),
        Sample(id="w2", turns=[Turn("user", "Hi"), Turn("assistant", "Hello")]),
    ]
    out = tmp_path / "out" / name
    assert write_samples(samples, out, format=fmt) == 2
    back = list(iter_samples(out, decode_images=True))
    assert [(s.id, s.turns, s.extra) for s in back] == [(s.id, s.turns, s.extra) for s in samples]
    assert [im.read_bytes() for im in back[0].images] == [
        im.read_bytes() for im in samples[0].images
    ]
    stored = out.read_text()
    assert str(tmp_path) not in stored  # image paths are relative to the output's folder


def test_pool_fingerprint_follows_bytes(tmp_path, write_pool, good_records):
    a = write_pool(good_records, "jsonl", name="a.jsonl")
    b = write_pool(good_records, "jsonl", name="b.jsonl")
    assert pool_fingerprint(a) == pool_fingerprint(b)
    b.write_bytes(b.read_bytes() + b"\n")
    assert pool_fingerprint(a) != pool_fingerprint(b)
    folder = write_pool(good_records[2:], "hf")
    assert len(pool_fingerprint(folder)) == 64
    assert pool_fingerprint(folder) == pool_fingerprint(folder)
    assert sum(1 for _ in read_pool(folder)) == 2
