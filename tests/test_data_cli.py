"""`ost validate` through Typer's CliRunner: summary, rejects file, exit codes, help."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ostselect.cli import app

runner = CliRunner()


@pytest.fixture
def mixed_pool(tmp_path, good_records, write_pool):
    pool = write_pool(good_records, "jsonl")
    with pool.open("ab") as fh:
        fh.write(b'{"id": "half", "messages": [{"role": "us\n')
        bad = {"id": "e", "messages": [{"role": "user", "content": "q"}]}
        fh.write(json.dumps(bad).encode() + b"\n")
    return pool


def test_validate_prints_summary_and_writes_rejects(tmp_path, mixed_pool):
    out = tmp_path / "out"
    result = runner.invoke(app, ["validate", str(mixed_pool), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "valid" in result.stdout and "bad_json" in result.stdout
    assert "empty_assistant" in result.stdout
    lines = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["code"]) for r in lines] == [(5, "bad_json"), (6, "empty_assistant")]
    assert all({"id", "file", "line", "reason", "code"} <= set(r) for r in lines)


def test_validate_json_summary(tmp_path, mixed_pool):
    out = tmp_path / "out"
    result = runner.invoke(app, ["validate", str(mixed_pool), "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["total"] == 6 and summary["valid"] == 4
    assert summary["rejected"] == {"bad_json": 1, "empty_assistant": 1}


def test_validate_clean_llava_array_with_image_root(tmp_path, make_png):
    make_png("imgs/a.png")
    pool = tmp_path / "data" / "llava.json"
    pool.parent.mkdir()
    record = {
        "id": "l1",
        "image": "a.png",
        "conversations": [
            {"from": "human", "value": "<image>\nWhat?"},
            {"from": "gpt", "value": "A square."},
        ],
    }
    pool.write_text(json.dumps([record], indent=2))
    args = ["validate", str(pool), "--out", str(tmp_path / "o"), "--image-root"]
    result = runner.invoke(app, [*args, str(tmp_path / "imgs"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["valid"] == 1
    result = runner.invoke(app, ["validate", str(pool), "--out", str(tmp_path / "o"), "--json"])
    assert json.loads(result.stdout)["rejected"] == {"missing_image": 1}


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda t: [str(t / "nope.jsonl")], "does not exist"),
        (lambda t: [str(t / "p.jsonl"), "--format", "csv"], "--format"),
        (lambda t: [str(t / "p.jsonl"), "--image-root", str(t / "none")], "--image-root"),
        (lambda t: [str(t / "obj.json")], "pretty-printed JSON object"),
        (lambda t: [str(t / "bad.parquet")], "Parquet"),
    ],
)
def test_unusable_arguments_exit_nonzero_with_a_fix(tmp_path, make_args, message):
    (tmp_path / "p.jsonl").write_text("")
    (tmp_path / "obj.json").write_text('{\n  "data": []\n}\n')
    (tmp_path / "bad.parquet").write_bytes(b"nope")
    result = runner.invoke(app, ["validate", *make_args(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0
    assert message in " ".join(result.output.split())


def test_help_says_what_it_reads_writes_and_shows_an_example():
    result = runner.invoke(app, ["validate", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "Reads POOL" in text and "Writes OUT/rejects.jsonl" in text and "Example:" in text
