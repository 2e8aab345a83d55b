"""Refusals a new user meets in the first hour: one line naming the file, the flag and the fix.

A folder that is not a model; a finished warm-up schedule (next lr 0) or a zero --eta; a pool whose
every record is rejected; scores whose utilities rank nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ostselect.cli import app
from ostselect.data import write_samples
from ostselect.proxy.folder import NOT_A_MODEL_FOLDER
from ostselect.scores import build_scores_table, write_scores
from test_scoring_proxies import samples

runner = CliRunner()


def squash(res) -> str:
    """The output without whitespace: Rich wraps long paths anywhere."""
    return "".join(res.output.split())


def one_line_error(res) -> str:
    """The error, printed once and last, as a message rather than a traceback."""
    assert res.exit_code == 2, res.output
    assert isinstance(res.exception, SystemExit) and "Traceback" not in res.output
    text = " ".join(res.output.split())
    assert text.count("error: ") == 1, res.output
    return "error: " + text.split("error: ")[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """A random tiny proxy, a 6-sample pool and 3 anchors (messages JSONL, images beside)."""
    from ostselect.proxy import build_tiny_proxy

    root = tmp_path_factory.mktemp("tiny")
    pool, anchors = root / "pool.jsonl", root / "anchors.jsonl"
    write_samples(samples(6, "p", 1), pool)
    write_samples(samples(3, "a", 2), anchors)
    return {
        "proxy": build_tiny_proxy(root / "proxy", arch="qwen2-vl"),
        "pool": pool,
        "anchors": anchors,
    }


def test_a_folder_without_a_model_gets_one_line_from_every_command(tmp_path, tiny):
    from ostselect.proxy import load_proxy
    from ostselect.proxy.folder import NotAModelFolderError

    folder = tmp_path / "data"  # exists, but holds a pool, not a model
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"hidden_size": 8}))  # no model_type
    with pytest.raises(NotAModelFolderError, match=r"no config\.json with model_type"):
        load_proxy(folder)
    pool, anchors, out = str(tiny["pool"]), str(tiny["anchors"]), str(tmp_path / "out")
    commands = [
        ["proxy", "info", str(folder)],
        ["warmup", "--proxy", str(folder), "--pool", pool, "--out", out],
        ["score", "--proxy", str(folder), "--pool", pool, "--anchors", anchors, "--out", out],
        ["baseline", "loss", "--proxy", str(folder), "--pool", pool, "--out", out + ".parquet"],
    ]
    for args in commands:
        text = one_line_error(runner.invoke(app, args))
        assert f"{folder}: {NOT_A_MODEL_FOLDER}" in text, args
        assert "Unrecognized" not in text and "ValueError" not in text


def _warm_to_the_end(tiny, out: Path) -> None:
    """--fraction 1.0: the cosine schedule runs out, the saved next lr is 0."""
    args = ["warmup", "--proxy", str(tiny["proxy"]), "--pool", str(tiny["pool"]), "--out", str(out)]
    res = runner.invoke(app, [*args, "--fraction", "1.0", "--batch-size", "3", "--lr", "1e-3"])
    assert res.exit_code == 0, res.output
    assert "next lr 0" in res.output and "--fraction < 1" in " ".join(res.output.split())


def test_score_refuses_a_zero_step_size_with_the_fix(tmp_path, tiny):
    warm = tmp_path / "warm"
    _warm_to_the_end(tiny, warm)
    out = tmp_path / "scores.parquet"
    args = ["score", "--proxy", str(warm), "--pool", str(tiny["pool"])]
    args += ["--anchors", str(tiny["anchors"]), "--out", str(out), "--device", "cpu"]
    text = one_line_error(runner.invoke(app, args))
    assert text == (
        "error: the proxy's saved learning rate for the next step is 0 (its warm-up schedule "
        "finished): pass --eta 0.005 or warm up with --fraction < 1"
    )
    assert not out.exists()
    for eta in ("0", "nan", "inf"):
        text = one_line_error(runner.invoke(app, [*args, "--eta", eta]))
        assert f"--eta {eta} is not a usable step size" in text and "lr:" not in text
    res = runner.invoke(app, [*args, "--eta", "0.005"])  # the fix named works
    assert res.exit_code == 0, res.output
    assert "warning" not in res.output


def test_library_scorer_refuses_a_finished_schedule(tmp_path, tiny):
    from ostselect.proxy import OptimizerState, load_proxy
    from ostselect.scoring import ScoreConfig, score
    from ostselect.scoring.updates import StepSizeError

    proxy = load_proxy(tiny["proxy"])
    zeros = {k: v.detach() * 0 for k, v in proxy.trainable_parameters().items()}
    done = OptimizerState(step=4, lr=0.0, exp_avg=zeros, exp_avg_sq=dict(zeros))
    proxy = load_proxy(proxy.save(tmp_path / "done", optimizer_state=done))
    with pytest.raises(StepSizeError, match="warm-up schedule finished"):
        score(samples(2, "p", 1), samples(2, "a", 2), proxy, ScoreConfig())


def test_warmup_reads_images_elsewhere_and_a_json_array(tmp_path, tiny):
    """LLaVA JSON array, images in another folder: one line naming --image-root, then it works."""
    images = tmp_path / "images"
    images.mkdir()
    records = []
    for s in samples(4, "v", 5):
        name = f"{s.id}.png"
        (images / name).write_bytes(s.images[0].data)
        question = s.turns[0].content.replace("<image> ", "")
        records.append(
            {
                "id": s.id,
                "image": name,
                "conversations": [
                    {"from": "human", "value": "<image>\n" + question},
                    {"from": "gpt", "value": s.turns[1].content},
                ],
            }
        )
    pool = tmp_path / "data" / "train.json"
    pool.parent.mkdir()
    pool.write_text(json.dumps(records))  # one line, as json.dump writes it
    out = tmp_path / "warm"
    args = ["warmup", "--proxy", str(tiny["proxy"]), "--pool", str(pool), "--out", str(out)]
    text = one_line_error(runner.invoke(app, args))
    assert "holds no usable sample: all 4 records were rejected" in text
    assert "pass --image-root" in text
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["reason"][:6]) for r in rejects] == [
        (None, f"row {i}:") for i in range(4)
    ]
    res = runner.invoke(
        app, [*args, "--image-root", str(images), "--format", "llava", "--batch-size", "2"]
    )
    assert res.exit_code == 0, res.output
    assert "warmed up" in res.output
    bad = runner.invoke(app, [*args, "--format", "csv"])
    assert "--format 'csv' is not known" in one_line_error(bad)


def test_score_summary_flags_utilities_that_rank_nothing(tmp_path, tiny, monkeypatch):
    """All-zero utilities (a step that moved nothing) are flagged, not presented as a ranking."""
    import ostselect.scoring.driver as driver

    def fake_score_pool(pool, factory, out, **_):
        ids = [f"p{i}" for i in range(6)]
        table = build_scores_table(ids, [0.0] * 6, "exact")
        write_scores(table, out, {"scorer": "ost", "cost": {"wall_s": 0.0}})

    monkeypatch.setattr(driver, "score_pool", fake_score_pool)
    out = tmp_path / "scores.parquet"
    args = ["score", "--proxy", str(tiny["proxy"]), "--pool", str(tiny["pool"])]
    res = runner.invoke(app, [*args, "--anchors", str(tiny["anchors"]), "--out", str(out)])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "warning: every one of the 6 scored samples has utility 0" in text
