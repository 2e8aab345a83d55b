"""Every rejection reason, from fixtures made here; bad records never stop the run."""

from __future__ import annotations

import json

import pytest

from ostselect.data import (
    DATA_REJECT_CODES,
    Reject,
    RejectsWriter,
    Sample,
    Turn,
    check_sample,
    iter_samples,
    read_rejects,
    validate_pool,
)


def msg(user="<image>What?", answer="Red.", **fields) -> dict:
    return {
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}],
        **fields,
    }


@pytest.fixture
def bad_pool(tmp_path, make_png):
    """One good record, then one record per rejection reason (line numbers 1..12)."""
    make_png("ok.png")
    make_png("trunc.png", size=(32, 32), truncated=True)
    good = json.dumps(msg(id="good", images=["ok.png"]))
    lines = [
        good.encode(),
        good[: len(good) // 2].encode(),  # 2: a JSON line cut in half
        json.dumps(msg(id="latin")).encode().replace(b"What", b"Wh\xe9t"),  # 3: non-UTF-8
        b"[1, 2, 3]",  # 4: not an object
        json.dumps({"id": "noconv", "text": "hi"}).encode(),  # 5: no conversation
        json.dumps(
            {"id": "nouser", "messages": [{"role": "assistant", "content": "A"}]}
        ).encode(),  # 6: no user turn
        json.dumps(msg("Q", "  ", id="empty")).encode(),  # 7: empty assistant turn
        json.dumps(msg("<image><image>Q", id="count", images=["ok.png"])).encode(),  # 8
        json.dumps(msg(id="missing", images=["nowhere.png"])).encode(),  # 9: missing image
        json.dumps(msg(id="trunc", images=["trunc.png"])).encode(),  # 10: truncated PNG
        json.dumps(msg(id="good", images=["ok.png"])).encode(),  # 11: duplicate id
        json.dumps(msg("Q" * 500, id="long")).encode(),  # 12: over-long (with a max)
    ]
    pool = tmp_path / "bad.jsonl"
    pool.write_bytes(b"\n".join(lines) + b"\n")
    return pool


EXPECTED = {  # line -> (id, code)
    2: (None, "bad_json"),
    3: ("latin", "non_utf8"),
    4: ("bad.jsonl:4", "bad_record"),  # no id of its own: the derived one
    5: ("noconv", "bad_record"),
    6: ("nouser", "no_user_turn"),
    7: ("empty", "empty_assistant"),
    8: ("count", "image_count_mismatch"),
    9: ("missing", "missing_image"),
    10: ("trunc", "bad_image"),
    11: ("good", "duplicate_id"),
    12: ("long", "too_long"),
}


def test_each_reason_is_rejected_with_id_file_line_and_code(bad_pool, tmp_path):
    out = tmp_path / "out"
    summary = validate_pool(bad_pool, out, max_chars=300)
    assert (summary.total, summary.valid) == (12, 1)
    rejects = read_rejects(out)
    got = {r.line: (r.id, r.code) for r in rejects}
    assert got == EXPECTED
    assert all(r.file == str(bad_pool) and r.reason for r in rejects)
    assert set(summary.rejected) == set(DATA_REJECT_CODES)  # every data code exercised
    assert summary.rejected["bad_record"] == 2 and summary.n_rejected == 11
    assert summary.rejects_path == out / "rejects.jsonl"
    by_line = {r.line: r for r in rejects}
    assert "cut off" in by_line[2].reason
    assert "2 <image> placeholder(s) but 1 image(s)" in by_line[8].reason
    assert "nowhere.png" in by_line[9].reason


def test_without_a_maximum_long_samples_pass(bad_pool, tmp_path):
    summary = validate_pool(bad_pool, tmp_path / "out")
    assert "too_long" not in summary.rejected and summary.valid == 2


def test_validation_starts_the_rejects_file_afresh(bad_pool, tmp_path):
    validate_pool(bad_pool, tmp_path / "out")
    validate_pool(bad_pool, tmp_path / "out")
    assert len(read_rejects(tmp_path / "out")) == 10


def test_iter_samples_yields_valid_only_and_skips_decoding_unless_asked(bad_pool, tmp_path):
    with RejectsWriter(tmp_path / "r.jsonl") as writer:
        ids = [s.id for s in iter_samples(bad_pool, rejects=writer)]
    # Without decoding, the truncated PNG passes (it exists); everything else is rejected.
    assert ids == ["good", "trunc", "long"]
    assert writer.counts["bad_image"] == 0 and writer.total == 9
    assert [s.id for s in iter_samples(bad_pool, decode_images=True)] == ["good", "long"]


def test_rejects_writer_appends_flushes_and_counts(tmp_path):
    path = tmp_path / "run"
    r = Reject("a", "f.jsonl", 3, "the assistant turn is empty", "empty_assistant")
    with RejectsWriter(path, stage="score") as w:
        w.add(r)
        # flushed per record: readable while the writer is still open
        assert json.loads((path / "rejects.jsonl").read_text())["stage"] == "score"
    with RejectsWriter(path) as w:
        w.add(r)
        w.add(Reject(None, "f.jsonl", None, "x", "bad_json"))
    assert w.counts == {"empty_assistant": 1, "bad_json": 1}
    assert read_rejects(path) == [r, r, Reject(None, "f.jsonl", None, "x", "bad_json")]
    assert "f.jsonl:3" in str(r) and "'a'" in str(r)


def test_check_sample_reasons():
    ok = Sample(id="x", turns=[Turn("user", "q"), Turn("assistant", "a")])
    assert check_sample(ok) is None
    no_answer = Sample(id="y", turns=[Turn("user", "q")])
    assert "no assistant turn" in (check_sample(no_answer) or "")
    assert check_sample(ok, max_chars=1) is not None


def test_remote_image_urls_are_rejected_with_the_fix(tmp_path):
    pool = tmp_path / "remote.jsonl"
    pool.write_text(json.dumps(msg(id="r", images=["https://example.com/a.png"])) + "\n")
    summary = validate_pool(pool, tmp_path / "out")
    (rej,) = read_rejects(tmp_path / "out")
    assert summary.valid == 0 and rej.code == "missing_image" and "download" in rej.reason


def test_parquet_rejects_name_the_row(tmp_path, write_pool):
    rows = [msg("Q", id="p0", images=[]), msg("Q", "", id="p1", images=[])]
    pool = write_pool(rows, "parquet")
    summary = validate_pool(pool, tmp_path / "out")
    (rej,) = read_rejects(tmp_path / "out")
    assert summary.valid == 1 and rej.id == "p1" and rej.line is None
    assert rej.reason.startswith("row 1:")
