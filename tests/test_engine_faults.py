"""Numerical faults and bad samples inside a shard: marked or set aside, the run goes on."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from engine_kit import FINGERPRINT, TextScorer, TextScorerFactory, same_table, write_test_pool
from ostselect.data import Sample, Turn
from ostselect.engine import run_scoring, score_shard
from ostselect.engine.pool import Shard
from ostselect.engine.worker import guard_columns, score_batch_resilient


def _samples(n: int) -> list[Sample]:
    return [
        Sample(id=f"s{i}", turns=[Turn("user", f"q{i}"), Turn("assistant", f"a{i}")])
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_test_pool(tmp_path_factory.mktemp("pool"))


def _run(pool: Path, out: Path, factory: TextScorerFactory, batch_size: int = 4):
    return run_scoring(
        pool,
        factory,
        out,
        shard_size=8,
        batch_size=batch_size,
        fingerprint=FINGERPRINT,
        progress=False,
    )


def test_nan_and_inf_samples_are_marked_and_scoring_goes_on(pool, tmp_path):
    table = _run(pool, tmp_path / "scores.parquet", TextScorerFactory())
    rows = {r["id"]: r for r in table.to_pylist()}
    for sid in ("nan-7", "inf-11"):
        assert rows[sid]["status"] == "nonfinite"
        assert math.isnan(rows[sid]["utility"])  # +inf must not be ranked first
        assert rows[sid]["rank"] > table.num_rows - 2 and rows[sid]["toxic"] is False
    ok = [r for r in rows.values() if r["status"] == "ok"]
    assert len(ok) == 26 and all(math.isfinite(r["utility"]) for r in ok)
    assert sorted(r["rank"] for r in ok) == list(range(1, 27))


def test_bad_records_go_to_one_rejects_file_with_id_file_line_reason(pool, tmp_path):
    table = _run(pool, tmp_path / "scores.parquet", TextScorerFactory())
    lines = [json.loads(x) for x in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    by_code = {}
    for r in lines:
        by_code.setdefault(r["code"], []).append(r)
    assert sorted(by_code) == ["bad_image", "bad_json", "empty_assistant", "missing_image"]
    # The truncated PNGs pass the reader (the files exist) and are caught when the worker decodes.
    assert sorted(r["id"] for r in by_code["bad_image"]) == ["s21", "s9"]
    assert all(r["file"] == str(pool) and r["line"] for r in lines)
    assert by_code["bad_json"][0]["line"] == 6
    assert by_code["empty_assistant"][0]["id"] == "empty-answer"
    assert not {"s9", "s21", "no-image", "empty-answer"} & set(table.column("id").to_pylist())


def test_oom_halves_the_batch_down_to_one_and_marks_the_sample(pool, tmp_path):
    factory = TextScorerFactory(oom_above=2, oom_ids=("s5",))
    table = _run(pool, tmp_path / "scores.parquet", factory, batch_size=8)
    reference = _run(pool, tmp_path / "ref" / "scores.parquet", TextScorerFactory())
    rows = {r["id"]: r for r in table.to_pylist()}
    assert rows["s5"]["status"] == "oom" and math.isnan(rows["s5"]["utility"])
    # Every other sample has the value a run without memory trouble gives.
    ref_rows = {r["id"]: r for r in reference.to_pylist()}
    for sid, r in rows.items():
        if sid != "s5" and r["status"] == "ok":
            assert r["utility"] == ref_rows[sid]["utility"] and r["loss"] == ref_rows[sid]["loss"]
    assert rows["s4"]["status"] == "ok" and rows["s6"]["status"] == "ok"


def test_oom_retry_sequence_is_halving():
    scorer = TextScorer(TextScorerFactory(oom_above=2, oom_ids=("s5",)))
    cols = score_batch_resilient(scorer, _samples(8))
    # 8 fails, 4 fails, 2+2 fit; 4 fails, 2 (s4,s5) fails -> s4 alone ok, s5 alone fails; 2 fits.
    assert scorer.batch_sizes == [8, 4, 2, 2, 4, 2, 1, 1, 2]
    assert cols["id"] == [f"s{i}" for i in range(8)]
    assert cols["status"] == ["ok"] * 5 + ["oom"] + ["ok"] * 2
    assert cols["loss"][5] is None and cols["tokens"][4] is not None


def test_scorer_that_breaks_the_row_contract_is_an_error():
    with pytest.raises(ValueError, match="one row per sample, in input order"):
        guard_columns({"id": ["s1", "s0"], "utility": [1.0, 2.0]}, _samples(2))
    with pytest.raises(ValueError, match="column 'loss' has 1 values"):
        guard_columns({"id": ["s0", "s1"], "utility": [1.0, 2.0], "loss": [1.0]}, _samples(2))


def test_shard_result_does_not_depend_on_batch_size():
    scorer = TextScorer(TextScorerFactory())
    shard = Shard(3, _samples(7))
    a = score_shard(scorer, shard, batch_size=1)
    b = score_shard(scorer, shard, batch_size=5)
    assert a.columns == b.columns and a.index == 3 and a.ids_digest == b.ids_digest
    assert same_table(a.table(), b.table())


def test_empty_pool_and_all_rejected_pool_give_empty_tables(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    record = {
        "id": "a",
        "images": ["bad.png"],
        "messages": [
            {"role": "user", "content": "<image>x"},
            {"role": "assistant", "content": "y"},
        ],
    }
    (tmp_path / "rejected.jsonl").write_text(json.dumps(record) + "\n")
    (tmp_path / "empty.jsonl").write_text("")
    for name in ("rejected", "empty"):
        out = tmp_path / name / "scores.parquet"
        table = _run(tmp_path / f"{name}.jsonl", out, TextScorerFactory())
        assert table.num_rows == 0 and str(table.schema.field("utility").type) == "double"
        rejects = (out.parent / "rejects.jsonl").read_text().splitlines()
        expected = ["bad_image"] if name == "rejected" else []
        assert [json.loads(x)["code"] for x in rejects] == expected
