"""`ost bench data` / `ost bench examples` through the real Typer app."""

from __future__ import annotations

from typer.testing import CliRunner

from ostselect.bench.data import noise_labels, read_manifest
from ostselect.cli import app

runner = CliRunner()


def test_bench_data_writes_the_set_and_prints_counts(tmp_path):
    out = tmp_path / "dm"
    png = tmp_path / "examples.png"
    args = ["bench", "data", str(out), "--n-pool", "60", "--n-heldout", "10", "--n-test", "10"]
    args += ["--n-pretrain", "10", "--noise-rate", "0.5", "--seed", "3", "--examples", str(png)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "DigitMath data" in result.output and "arith_slip" in result.output
    counts = read_manifest(out)["counts"]
    assert counts["pool"]["total"] == 60 and counts["pool"]["noise"]["clean"] == 30
    assert sum(v != "clean" for v in noise_labels(out / "pool.jsonl").values()) == 30
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_data_noise_mix_and_bad_input(tmp_path):
    out = tmp_path / "dm"
    args = ["bench", "data", str(out), "--n-pool", "20", "--n-heldout", "5", "--n-test", "5"]
    args += ["--n-pretrain", "5", "--noise-rate", "0.5", "--noise-mix", "truncated=1"]
    ok = runner.invoke(app, args)
    assert ok.exit_code == 0, ok.output
    assert set(noise_labels(out / "pool.jsonl").values()) == {"clean", "truncated"}
    bad = runner.invoke(app, ["bench", "data", str(out), "--noise-mix", "typo=1"])
    assert bad.exit_code == 2 and "unknown noise type" in bad.output
    bad = runner.invoke(app, ["bench", "data", str(out), "--noise-mix", "truncated"])
    assert bad.exit_code == 2 and "NAME=WEIGHT" in bad.output


def test_bench_examples_needs_a_data_folder(tmp_path):
    result = runner.invoke(app, ["bench", "examples", str(tmp_path)])
    assert result.exit_code == 2 and "ost bench data" in result.output
