"""Each format's reader: what becomes of ids, turns, images and the other fields."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from conftest import png_bytes
from ostselect.data import (
    PoolError,
    Reject,
    Sample,
    detect_format,
    iter_samples,
    read_pool,
)
from ostselect.data.jsontext import JsonArrayReader


def samples_of(path: Path, **kw) -> list[Sample]:
    items = list(read_pool(path, **kw))
    assert all(isinstance(i, Sample) for i in items), [i for i in items if isinstance(i, Reject)]
    return items  # type: ignore[return-value]


def test_messages_jsonl_reads_turns_images_ids_and_extra(tmp_path, good_records, write_pool):
    pool = write_pool(good_records, "jsonl")
    s1, s2, s3, s4 = samples_of(pool)
    assert detect_format(pool) == "messages"
    assert [s.id for s in (s1, s2, s3)] == ["s1", "s2", "s3"]
    assert s4.id == "pool_jsonl.jsonl:4"  # no id: derived from file name and line
    assert s1.turns[0].role == "user" and s1.turns[0].content == "<image>What colour is this?"
    assert s1.images[0].path == tmp_path / "images/a.png"
    assert s1.extra == {"source": "synthetic"}
    assert [t.role for t in s2.turns] == ["system", "user", "assistant"]
    assert s2.turns[1].content == "<image>\nAnd this one?"
    assert s2.turns[2].content == "Green."
    assert s2.images[0].open().getpixel((0, 0)) == (0, 255, 0)
    assert s3.images == [] and s3.source is not None and s3.source.line == 3
    assert s1.raw == pool.read_text().splitlines()[0]


def test_derived_ids_are_stable_across_reads(good_records, write_pool):
    pool = write_pool(good_records, "json")
    first = [s.id for s in samples_of(pool)]
    assert first == [s.id for s in samples_of(pool)]
    assert first[3] == "pool_json.json#3"


def test_image_root_overrides_the_pool_folder(tmp_path, good_records, write_pool, make_png):
    make_png("elsewhere/images/a.png")
    pool = write_pool(good_records[:1], "jsonl")
    (s,) = samples_of(pool, image_root=tmp_path / "elsewhere")
    assert s.images[0].path == tmp_path / "elsewhere/images/a.png"


def test_llava_json_and_jsonl(tmp_path, make_png, write_pool):
    make_png("x.png")
    records = [
        {
            "id": 7,
            "image": "x.png",
            "conversations": [
                {"from": "human", "value": "<image>\nWhat is shown?"},
                {"from": "gpt", "value": "A red square."},
            ],
        },
        {
            "id": "two",
            "image": ["x.png", "x.png"],
            "system": "You are a tutor.",
            "conversations": [
                {"from": "human", "value": "<image><image>Same?"},
                {"from": "gpt", "value": "Yes."},
            ],
            "meta": {"k": [1, 2]},
        },
    ]
    for kind in ("json", "jsonl"):
        pool = write_pool(records, kind, name=f"llava.{kind}")
        assert detect_format(pool) == "llava"
        a, b = samples_of(pool)
        assert a.id == "7" and len(a.images) == 1
        assert [t.role for t in a.turns] == ["user", "assistant"]
        assert [t.role for t in b.turns] == ["system", "user", "assistant"]
        assert len(b.images) == 2 and b.extra == {"meta": {"k": [1, 2]}}
        assert len(list(iter_samples(pool))) == 2


def test_openai_image_url_parts_carry_their_own_images(tmp_path, make_png, write_pool):
    path = make_png("inline.png")
    data_url = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
    record = {
        "id": "oa",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": data_url}},
                    {"type": "text", "text": "Compare with"},
                    {"type": "image_url", "image_url": {"url": f"file://{path}"}},
                ],
            },
            {"role": "assistant", "content": "Same colour."},
        ],
    }
    (s,) = samples_of(write_pool([record], "jsonl"))
    assert s.images[0].data == png_bytes() and s.images[1].path == path
    assert s.turns[0].content.count("<image>") == 2
    assert list(iter_samples(write_pool([record], "jsonl", name="again.jsonl"))) != []


def test_parquet_with_image_bytes_and_paths(tmp_path, make_png, write_pool):
    make_png("p.png")
    records = [
        {
            "id": "b",
            "messages": [
                {"role": "user", "content": "<image>Q"},
                {"role": "assistant", "content": "A"},
            ],
            "images": [{"bytes": png_bytes(), "path": "ignored.png"}],
            "score": 0.5,
        },
        {
            "id": "p",
            "messages": [
                {"role": "user", "content": "<image>Q"},
                {"role": "assistant", "content": "A"},
            ],
            "images": [{"bytes": None, "path": "p.png"}],
            "score": 1.5,
        },
    ]
    pool = write_pool(records, "parquet")
    assert detect_format(pool) == "parquet"
    b, p = samples_of(pool)
    assert b.images[0].data == png_bytes()
    assert p.images[0].path == tmp_path / "p.png"
    assert b.extra == {"score": 0.5} and b.source is not None and b.source.index == 0
    assert [s.id for s in iter_samples(pool, decode_images=True)] == ["b", "p"]


def test_hf_folder_with_image_feature(write_pool):
    records = [
        {
            "id": f"h{i}",
            "conversations": [
                {"from": "human", "value": "<image>Q"},
                {"from": "gpt", "value": "A"},
            ],
            "images": [{"bytes": png_bytes(color=(i, i, i)), "path": None}],
        }
        for i in range(3)
    ]
    pool = write_pool(records, "hf", image_feature=True)
    assert detect_format(pool) == "hf"
    samples = samples_of(pool)
    assert [s.id for s in samples] == ["h0", "h1", "h2"]
    assert samples[2].images[0].open().getpixel((0, 0)) == (2, 2, 2)


def test_hf_dataset_dict_needs_one_split(tmp_path):
    import datasets

    datasets.disable_progress_bars()
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list([{"id": "a"}])})
    dd.save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(PoolError, match="train"):
        list(read_pool(tmp_path / "dd"))


def test_json_array_streams_with_tiny_buffer_and_tracks_lines(tmp_path, good_records):
    """A 7-character buffer forces every element to span many refills and compactions."""
    pool = tmp_path / "pool.json"
    pool.write_text(json.dumps(good_records, indent=2), encoding="utf-8")
    text = pool.read_text()
    got = list(JsonArrayReader(pool, chunk_chars=7))
    assert [json.loads(r.text) for r in got] == good_records
    for rec in got:  # each element's text sits in the file at its reported line
        assert rec.text is not None and rec.loc.line is not None
        start = text.index(rec.text)
        assert text.count("\n", 0, start) + 1 == rec.loc.line


def test_json_array_cut_off_keeps_records_before_the_break(tmp_path, good_records):
    pool = tmp_path / "cut.json"
    text = json.dumps(good_records, indent=2)
    pool.write_text(text[: text.index('"s3"')], encoding="utf-8")
    items = list(read_pool(pool))
    assert [i.id for i in items if isinstance(i, Sample)] == ["s1", "s2"]
    (rej,) = [i for i in items if isinstance(i, Reject)]
    assert rej.code == "bad_json" and "rest of the file" in rej.reason and rej.line is not None


def test_json_array_rejects_name_the_record_index_not_line_one(tmp_path, good_records):
    """`json.dump` writes an array on one line: every record would say line 1."""
    lost = {**good_records[0], "id": "lost", "images": ["images/absent.png"]}
    mute = {"id": "mute", "messages": [{"role": "assistant", "content": "hi"}]}
    pool = tmp_path / "pool.json"
    pool.write_text(json.dumps([good_records[2], lost, mute]), encoding="utf-8")
    seen: list[Sample | Reject] = []
    kept = list(iter_samples(pool, on_record=seen.append))
    rejects = [r for r in seen if isinstance(r, Reject)]
    assert [s.id for s in kept] == ["s3"] and str(kept[0].source) == f"{pool}[0]"
    assert [(r.id, r.line, r.reason.split(":")[0]) for r in rejects] == [
        ("lost", None, "row 1"),
        ("mute", None, "row 2"),
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{\n  "id": "x"\n}\n', "pretty-printed JSON object"),
        (None, "does not exist"),
    ],
)
def test_unreadable_pools_raise_pool_error(tmp_path, content, message):
    pool = tmp_path / "pool.json"
    if content is not None:
        pool.write_text(content)
    with pytest.raises(PoolError, match=message):
        list(read_pool(pool))


def test_corrupt_parquet_is_a_pool_error(tmp_path):
    pool = tmp_path / "bad.parquet"
    pool.write_bytes(b"not parquet at all")
    with pytest.raises(PoolError, match="Parquet"):
        list(read_pool(pool))


def test_forced_schema_rejects_the_other_schema_with_a_hint(tmp_path, write_pool):
    rec = {"id": "l", "conversations": [{"from": "human", "value": "q"}]}
    (rej,) = list(read_pool(write_pool([rec], "jsonl"), format="messages"))
    assert isinstance(rej, Reject) and rej.code == "bad_record" and "--format llava" in rej.reason


@pytest.mark.parametrize("kind", ["jsonl", "json"])
def test_count_records_gives_json_pools_a_total(kind, good_records, write_pool):
    """Progress bars need a total for an ETA, JSON arrays included (they are parsed to count)."""
    from ostselect.data import count_records

    pool = write_pool(good_records, kind)
    assert count_records(pool) == len(good_records)
