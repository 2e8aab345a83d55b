"""`ost proxy init` / `ost proxy info` from the command line."""

from __future__ import annotations

from typer.testing import CliRunner

from ostselect.cli import app


def test_init_then_info(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("The area of the square is 16.\nWhat is shown in the image?\n" * 20)
    runner = CliRunner()
    out = tmp_path / "p"
    result = runner.invoke(
        app, ["proxy", "init", str(out), "--arch", "llava", "--corpus", str(corpus)]
    )
    assert result.exit_code == 0, result.output
    assert (out / "config.json").is_file() and (out / "ostselect.json").is_file()
    result = runner.invoke(app, ["proxy", "info", str(out), "--params", "lora"])
    assert result.exit_code == 0, result.output
    assert "arch: llava" in result.output
    assert "trainable" in result.output and "vision tower" in result.output


def test_init_rejects_unknown_arch(tmp_path):
    result = CliRunner().invoke(app, ["proxy", "init", str(tmp_path / "x"), "--arch", "gpt2"])
    assert result.exit_code == 2
    assert "--arch must be one of" in result.output
