"""`ost select` end to end on pool files: subset in the pool format, selection.json, refusals."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from ostselect.cli import app
from ostselect.data import iter_samples, pool_fingerprint, write_samples
from ostselect.data.sample import Sample, Turn
from ostselect.scores import build_scores_table, write_scores
from ostselect.select import ProvenanceMismatchError, SelectionPolicy, select


def flat(res) -> str:
    return " ".join(res.output.split())


def make_pool(tmp_path, n=10):
    samples = [
        Sample(
            id=f"s{i}",
            turns=[Turn("user", f"question {i}"), Turn("assistant", f"answer {i}")],
            extra={"category": "AB"[i % 2]},
        )
        for i in range(n)
    ]
    path = tmp_path / "pool.jsonl"
    write_samples(samples, path)
    return path


def make_scores(tmp_path, pool_path, utility, fingerprint=None, ids=None):
    ids = ids or [f"s{i}" for i in range(len(utility))]
    table = build_scores_table(ids, utility, "exact")
    fp = fingerprint if fingerprint is not None else pool_fingerprint(pool_path)
    return write_scores(
        table,
        tmp_path / "scores.parquet",
        {"pool_fingerprint": fp, "scorer": "test", "cost": {"wall_s": 0.0}},
    )


UTIL = [0.5, 0.3, 0.3, -0.1, 0.9, 0.0, -0.5, 0.2, 0.3, 0.1]


def test_select_writes_subset_in_pool_format_and_summary(tmp_path):
    pool = make_pool(tmp_path)
    scores = make_scores(tmp_path, pool, UTIL)
    out = tmp_path / "out"
    args = ["select", "--pool", str(pool), "--scores", str(scores), "--out", str(out)]
    res = CliRunner().invoke(app, [*args, "--top", "30%", "--drop-toxic"])
    assert res.exit_code == 0, res.output
    subset = out / "pool.jsonl"
    kept_lines = subset.read_text().splitlines()
    pool_lines = pool.read_text().splitlines()
    # Records unchanged, in pool order: s0, s1, s4.
    assert kept_lines == [pool_lines[0], pool_lines[1], pool_lines[4]]
    summary = json.loads((out / "selection.json").read_text())
    assert summary["kept_ids"] == ["s4", "s0", "s1"]
    assert summary["drop_counts"] == {"toxic": 2, "below top-k cutoff": 5}
    assert summary["pool_fingerprint"] == pool_fingerprint(pool)
    assert summary["scores_provenance"]["pool_fingerprint"] == pool_fingerprint(pool)
    assert "kept 3 of 10 samples" in flat(res)


def test_select_parquet_pool_keeps_parquet(tmp_path):
    rows = [
        {"id": f"s{i}", "messages": [{"role": "user", "content": f"q{i}"},
                                     {"role": "assistant", "content": f"a{i}"}]}
        for i in range(4)
    ]  # fmt: skip
    pool = tmp_path / "pool.parquet"
    pq.write_table(pa.Table.from_pylist(rows), pool)
    scores = make_scores(tmp_path, pool, [0.1, 0.4, 0.3, 0.2])
    out = tmp_path / "o"
    res = CliRunner().invoke(
        app,
        ["select", "--pool", str(pool), "--scores", str(scores), "--out", str(out), "--top", "2"],
    )
    assert res.exit_code == 0, res.output
    assert pq.read_table(out / "pool.parquet").column("id").to_pylist() == ["s1", "s2"]


def test_select_refuses_other_pool_unless_forced(tmp_path):
    pool = make_pool(tmp_path)
    scores = make_scores(tmp_path, pool, UTIL, fingerprint="0" * 64)
    out = tmp_path / "out"
    args = ["select", "--pool", str(pool), "--scores", str(scores), "--out", str(out), "--top", "2"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2
    squashed = "".join(res.output.split())  # Rich may wrap a long path anywhere
    assert f"scores{scores}donotmatchthepool{pool}" in squashed and "--force" in flat(res)
    assert "0" * 64 not in flat(res) and "force=True" not in flat(res)
    assert not (out / "pool.jsonl").exists()
    res = CliRunner().invoke(app, [*args, "--force"])
    assert res.exit_code == 0, res.output
    assert "warning" in flat(res)
    assert json.loads((out / "selection.json").read_text())["warnings"]


def test_select_api_refuses_missing_ids_on_a_pool_file(tmp_path):
    pool = make_pool(tmp_path, n=3)
    scores = make_scores(tmp_path, pool, [0.1, 0.2, 0.3, 0.4], ids=["s0", "s1", "s2", "zz"])
    with pytest.raises(ProvenanceMismatchError, match="zz"):
        select(scores, pool, SelectionPolicy())
    assert select(scores, pool, SelectionPolicy(), force=True).kept_ids == ["s2", "s1", "s0"]


def test_select_bad_pool_records_go_to_rejects(tmp_path):
    pool = make_pool(tmp_path, n=4)
    with pool.open("a") as f:
        f.write("{not json\n")
    scores = make_scores(tmp_path, pool, [0.1, 0.2, 0.3, 0.4])
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app, ["select", "--pool", str(pool), "--scores", str(scores), "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == 1 and rejects[0]["line"] == 5 and rejects[0]["stage"] == "select"
    assert [s.id for s in iter_samples(out / "pool.jsonl")] == ["s0", "s1", "s2", "s3"]


def test_select_balance_and_budget_from_cli(tmp_path):
    pool = make_pool(tmp_path)
    scores = make_scores(tmp_path, pool, [1.0 - 0.05 * i for i in range(10)])
    out = tmp_path / "out"
    args = ["select", "--pool", str(pool), "--scores", str(scores), "--out", str(out)]
    res = CliRunner().invoke(app, [*args, "--top", "4", "--balance-by", "category"])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "selection.json").read_text())
    assert summary["kept_ids"] == ["s0", "s1", "s2", "s3"]
    assert {k: v["kept"] for k, v in summary["strata"].items()} == {"A": 2, "B": 2}
    res = CliRunner().invoke(app, [*args, "--budget-tokens", "6"])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "selection.json").read_text())
    # Fallback tokens: ceil(len("answer N") / 4) = 2 each -> 3 samples.
    assert summary["kept_ids"] == ["s0", "s1", "s2"] and summary["tokens_kept"] == 6


def test_select_cli_rejects_bad_options(tmp_path):
    pool = make_pool(tmp_path)
    scores = make_scores(tmp_path, pool, UTIL)
    base = ["select", "--pool", str(pool), "--scores", str(scores)]
    res = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "o"), "--top", "lots"])
    assert res.exit_code == 2 and "percentage" in flat(res)
    res = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "o"), "--dedup", "fuzzy"])
    assert res.exit_code == 2 and "dedup" in flat(res)
    res = CliRunner().invoke(app, [*base, "--out", str(tmp_path)])
    assert res.exit_code == 2 and "overwrite the pool" in flat(res)
