"""The baseline registry and the engine path of `ost baseline`.

- A method registered from this module (no other edit) runs through `ost baseline`, the engine and
  `run_baseline`, and disappears again when unregistered.
- The CLI, `make_baseline`, the benchmark's rows and docs/baselines.md's table read the registry.
- `ost baseline` (engine: shards, resume, pool pass) gives exactly `run_baseline`'s rows, and a
  SIGKILLed run resumed with --resume gives exactly the uninterrupted table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import Field, field_validator
from typer.testing import CliRunner

from engine_kit import same_table
from ostselect.baselines import get_registry, run_baseline
from ostselect.baselines.base import Baseline
from ostselect.baselines.registry import (
    BaselineOptions,
    baselines_table,
    register_baseline,
    unregister_baseline,
)
from ostselect.cli import app
from ostselect.data import iter_samples
from ostselect.data.sample import Sample
from ostselect.scores import Status, read_scores, validate_provenance
from test_baselines_cli import write_pool

runner = CliRunner()
DOCS = Path(__file__).resolve().parents[1] / "docs" / "baselines.md"


# -- a new method, registered from a test module -------------------------------------------------
@pytest.fixture
def toy() -> Iterator[str]:
    """`toy-length`: utility = answer length x --scale; answers with "nan" are non-finite."""

    class ToyOptions(BaselineOptions):
        scale: float = Field(1.0, description="Multiply every answer length by this.")

        @field_validator("scale")
        @classmethod
        def _positive(cls, value: float) -> float:
            if value <= 0:
                raise ValueError(f"--scale {value} is not usable: pass a positive number")
            return value

    @register_baseline(
        "toy-length",
        options=ToyOptions,
        summary="Toy: the answer's length in characters, times --scale.",
        example="ost baseline toy-length --pool pool.jsonl --out scores.toy.parquet",
        utility="answer length x scale",
        direction="long kept",
        cost=("forward_passes",),
        in_benchmark=False,
    )
    class ToyLength(Baseline):
        def __init__(self, scale: float = 1.0) -> None:
            super().__init__()
            self.scale = scale

        def _score(self, samples: list[Sample]) -> dict[str, list[Any]]:
            self.cost.forward_passes += len(samples)
            u = [
                float("nan") if "nan" in s.assistant_text else self.scale * len(s.assistant_text)
                for s in samples
            ]
            return {"id": [s.id for s in samples], "utility": u}

        def _settings(self) -> dict[str, Any]:
            return {"scale": self.scale}

    yield "toy-length"
    unregister_baseline("toy-length")


def test_a_registered_method_runs_everywhere_without_other_edits(toy: str, tmp_path: Path):
    import ostselect.baselines as baselines

    assert toy in baselines.BASELINE_NAMES
    help_text = runner.invoke(app, ["baseline", toy, "--help"]).output
    assert "--scale" in help_text and "Example" in help_text
    pool = write_pool(tmp_path / "pool.jsonl", 5, bad_line=True)
    out = tmp_path / "toy.parquet"
    args = ["baseline", toy, "--pool", str(pool), "--out", str(out), "--scale", "2"]
    result = runner.invoke(app, [*args, "--shard-size", "2"])
    assert result.exit_code == 0, result.output
    scores = read_scores(out)
    direct = run_baseline(toy, list(iter_samples(pool)), scale=2.0)
    assert same_table(scores.table, direct)
    assert scores.provenance["settings"]["scale"] == 2.0 and scores.provenance["mode"] == toy
    assert scores.provenance["cost"]["forward_passes"] == 5  # summed over 3 shards
    assert scores.provenance["engine"]["shards"] == 3
    refused = runner.invoke(app, [*args[:-1], "0"])
    assert refused.exit_code != 0 and "--scale 0.0 is not usable" in refused.output
    unregister_baseline(toy)
    assert toy not in baselines.BASELINE_NAMES
    assert runner.invoke(app, ["baseline", toy, "--help"]).exit_code != 0


def test_the_engine_guard_marks_non_finite_rows_of_any_method(toy: str, tmp_path: Path):
    pool = tmp_path / "pool.jsonl"
    rows = [("a", "fine"), ("b", "nan here"), ("c", "ok")]
    pool.write_text(
        "".join(
            json.dumps(
                {
                    "id": i,
                    "messages": [
                        {"role": "user", "content": "q"},
                        {"role": "assistant", "content": text},
                    ],
                }
            )
            + "\n"
            for i, text in rows
        )
    )
    table = run_baseline(toy, list(iter_samples(pool)))
    assert table.column("status").to_pylist() == [Status.OK, Status.NONFINITE, Status.OK]
    assert np.isnan(table.column("utility").to_pylist()[1])


# -- everything reads the registry ---------------------------------------------------------------
def test_docs_table_is_the_registry_table():
    assert baselines_table() in DOCS.read_text(encoding="utf-8"), (
        "docs/baselines.md's table differs from ostselect.baselines.registry.baselines_table()"
    )


def test_commands_benchmark_rows_and_make_baseline_come_from_the_registry():
    import click
    import typer

    from ostselect.baselines import NEEDS_ANCHORS, NEEDS_PROXY, make_baseline
    from ostselect.bench.config import ALL_BASELINES

    registry = get_registry()
    group = typer.main.get_command(app).commands["baseline"]  # type: ignore[attr-defined]
    ctx = click.Context(group)
    assert group.list_commands(ctx) == list(registry)  # built from the registry when asked
    for name, spec in registry.items():
        flags = {o for p in group.get_command(ctx, name).params for o in p.opts}
        for field in spec.options.model_fields:
            assert "--" + field.replace("_", "-") in flags, (name, field)
        assert ("--proxy" in flags) == (spec.proxy != "none")
        assert ("--anchors" in flags) == spec.anchors
        assert {"--resume", "--shard-size", "--backend"} <= flags
    assert tuple(n for n, s in registry.items() if s.in_benchmark) == ALL_BASELINES
    assert {"loss", "ifd", "grand", "el2n", "less"} == NEEDS_PROXY and {"less"} == NEEDS_ANCHORS
    assert make_baseline("random", seed=3).mode == "random"
    with pytest.raises(ValueError, match="unknown baseline 'nope'"):
        make_baseline("nope")


def test_a_second_method_under_a_taken_name_is_refused():
    with pytest.raises(ValueError, match="already registered"):

        @register_baseline("loss", summary="", example="", utility="", direction="")
        class Impostor(Baseline):
            pass


# -- the engine path equals run_baseline ---------------------------------------------------------
def test_engine_rows_equal_run_baseline(tmp_path: Path):
    from ostselect.proxy import build_tiny_proxy

    proxy = build_tiny_proxy(tmp_path / "proxy", arch="qwen2-vl")
    pool = write_pool(tmp_path / "pool.jsonl", 6, images=True)
    samples = list(iter_samples(pool))
    cases: dict[str, tuple[list[str], dict[str, Any]]] = {
        "random": (["--seed", "4"], {"seed": 4}),
        "loss": (["--proxy", str(proxy), "--batch-size", "4"], {"batch_size": 4}),
        "deita": (["--threshold", "0.95"], {"threshold": 0.95}),
    }
    for name, (flags, kwargs) in cases.items():
        out = tmp_path / f"{name}.parquet"
        args = ["baseline", name, "--pool", str(pool), "--out", str(out), *flags]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        from ostselect.proxy import load_proxy

        model = load_proxy(proxy, params=None) if name == "loss" else None
        direct = run_baseline(name, samples, proxy=model, **kwargs)
        assert same_table(read_scores(out).table, direct), name
        assert not (tmp_path / f"{name}.parquet.shards").exists()  # removed once written


def hashed_embedder(texts: Sequence[str]) -> np.ndarray:
    """Deterministic unit vectors; two samples share one when their text's first word matches."""
    out = []
    for text in texts:
        rng = np.random.default_rng(sum(text.split()[0].encode()))
        v = rng.normal(size=8)
        out.append(v / np.linalg.norm(v))
    return np.asarray(out)


def test_the_pool_pass_sees_the_whole_sharded_table(tmp_path: Path):
    """DEITA's diversity filter over 2-sample shards equals the filter over the pool at once."""
    from ostselect.baselines.factory import BaselineFactory, score_baseline_pool

    pool = write_pool(tmp_path / "pool.jsonl", 7)
    options = {"embedder": hashed_embedder, "threshold": 0.9}
    factory = BaselineFactory("deita", options=options)
    table = score_baseline_pool(pool, factory, tmp_path / "deita.parquet", shard_size=2)
    direct = run_baseline("deita", list(iter_samples(pool)), **options)
    assert same_table(table, direct)
    assert 0 < sum(table.column("deita_kept").to_pylist()) < 7  # the filter skipped someone
    assert "_deita_embedding" not in table.column_names


# -- kill and resume -----------------------------------------------------------------------------
KILLER = """
import os, signal, sys
from pathlib import Path
real_replace = os.replace
def replace(src, dst, *a, **kw):
    if Path(dst).name == sys.argv[1]:
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace(src, dst, *a, **kw)
os.replace = replace
from ostselect.cli import app
app(sys.argv[2:])
"""


@pytest.mark.parametrize("name", ["random", "deita"])
def test_a_killed_baseline_run_resumes_to_the_uninterrupted_table(name: str, tmp_path: Path):
    pool = write_pool(tmp_path / "pool.jsonl", 7, bad_line=True)

    def args(out: Path) -> list[str]:
        return ["baseline", name, "--pool", str(pool), "--out", str(out), "--shard-size", "2"]

    reference = tmp_path / "ref" / "scores.parquet"
    assert runner.invoke(app, args(reference)).exit_code == 0
    out = tmp_path / "run" / "scores.parquet"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", KILLER, "shard-000002.parquet", *args(out)]
    killed = subprocess.run(command, env=env, capture_output=True, timeout=300)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    assert len(list(Path(f"{out}.shards").glob("shard-*.parquet"))) == 2
    assert runner.invoke(app, args(out)).exit_code != 0  # no silent restart over kept shards
    result = runner.invoke(app, [*args(out), "--resume"])
    assert result.exit_code == 0, result.output
    resumed = read_scores(out)
    assert same_table(resumed.table, read_scores(reference).table)
    assert resumed.provenance["engine"]["shards_resumed"] == 2
    assert (out.parent / "rejects.jsonl").read_bytes() == (
        reference.parent / "rejects.jsonl"
    ).read_bytes()


# -- one schema: status values and cost counters -------------------------------------------------
def test_ost_and_baseline_tables_share_status_values_and_cost_names(tmp_path: Path):
    from ostselect.baselines.factory import BaselineFactory, score_baseline_pool
    from ostselect.proxy import build_tiny_proxy
    from ostselect.scoring import ScoreConfig
    from ostselect.scoring.driver import OSTScorerFactory, score_pool

    proxy = build_tiny_proxy(tmp_path / "proxy", arch="qwen2-vl")
    pool = write_pool(tmp_path / "pool.jsonl", 5)
    anchors = write_pool(tmp_path / "anchors.jsonl", 2)
    config = ScoreConfig(mode="first-order", optimizer="sgd", device="cpu", batch_size=2)
    ost = OSTScorerFactory(str(proxy), str(anchors), config, params="lora")
    tables = {
        "ost": score_pool(pool, ost, tmp_path / "ost.parquet", shard_size=2),
        "loss": score_baseline_pool(
            pool,
            BaselineFactory("loss", proxy_dir=str(proxy)),
            tmp_path / "l.parquet",
            shard_size=2,
        ),
    }
    for name, table in tables.items():
        prov = read_scores(tmp_path / ("ost.parquet" if name == "ost" else "l.parquet")).provenance
        assert set(table.column("status").to_pylist()) <= {s.value for s in Status}, name
        assert prov["cost"]["forward_passes"] >= 5 and prov["cost"]["wall_s"] > 0, name
        assert set(prov["cost"]) >= {"forward_passes", "backward_passes", "wall_s"}, name
        assert validate_provenance(prov)["scorer"] == name, name  # the shared schema
    ost_cost = read_scores(tmp_path / "ost.parquet").provenance["cost"]
    assert ost_cost["backward_passes"] == 5 + 2  # one per candidate, plus the 2 anchors' gradient
