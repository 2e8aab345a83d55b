"""DigitMath phase 2: the protocol end to end on a miniature configuration, and its bookkeeping.

The slow test runs every stage (data, pretraining, warm-up, anchors, OST in three modes, a baseline,
selection, Protocols A and B over two seeds, the warm-up ablation, the OST variants, results files)
on toy sizes; the accuracy it reaches is not meaningful, the plumbing and the invariants are.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ostselect.bench.config import BenchConfig, OSTVariant, full_config, mini_config
from ostselect.bench.results import aggregate_rows, markdown_table


def _run(row, protocol, seed, acc, method="ost-exact", fraction=0.2):
    return {
        "row": row,
        "method": method,
        "fraction": fraction,
        "protocol": protocol,
        "seed": seed,
        "n_train": 10,
        "noisy_share": 0.1,
        "accuracy": acc,
        "per_category": {"add": acc, "read": 1.0},
        "unanswered": 0.0,
        "steps": 5,
        "train_s": 2.0,
        "selection_s": 3.0,
    }


def test_aggregate_rows_mean_and_std_over_seeds():
    runs = [_run("OST 20%", "B", s, a) for s, a in enumerate((0.5, 0.7, 0.6))]
    runs.append(_run("OST 20%", "A", 0, 0.4))
    rows = {(r["row"], r["protocol"]): r for r in aggregate_rows(runs)}
    b = rows[("OST 20%", "B")]
    assert b["accuracy_mean"] == pytest.approx(0.6)
    assert b["accuracy_std"] == pytest.approx(0.1)  # sample std (ddof=1) of 0.5, 0.7, 0.6
    assert b["per_category"]["add"] == pytest.approx(0.6)
    assert b["compute_s"] == pytest.approx(5.0)  # selection + training
    assert rows[("OST 20%", "A")]["accuracy_std"] == 0.0


def test_markdown_table_shows_both_protocols_and_scorer_metrics():
    runs = [_run("OST-exact 20%", p, 0, a) for p, a in (("A", 0.25), ("B", 0.5))]
    results = {
        "rows": aggregate_rows(runs),
        "scorers": {
            "ost-exact": {
                "scoring_s": 1.0,
                "auroc": 0.8125,
                "auroc_by_type": {"misread": 0.7},
                "precision_at": {"20%": 0.95},
            }
        },
    }
    text = markdown_table(results)
    line = next(x for x in text.splitlines() if x.startswith("| OST-exact 20%"))
    assert "25.0 (1 seed)" in line and "50.0 (1 seed)" in line  # no fake "± 0.0" for one seed
    assert "0.812" in line and "0.95" in line
    two_seeds = aggregate_rows([_run("R", "B", seed, a) for seed, a in ((0, 0.2), (1, 0.4))])
    row = next(x for x in markdown_table({"rows": two_seeds}).splitlines() if x.startswith("| R"))
    assert "30.0 ± 14.1" in row


def test_configs_serialise_and_override():
    config = full_config()
    assert config.fractions == (0.2, 0.5) and "judge" in config.baselines
    assert config.policies == ("balanced", "coverage") and config.n_test >= 2000
    assert config.variants == ()
    mini = mini_config()
    saved = mini.to_json()
    assert saved["variants"][0] == {
        "name": "target as proxy",
        "eta": None,
        "proxy": "target",
        "balance_by": None,
        "normalize": None,
        "optimizer": None,
    }
    json.dumps(saved)
    assert mini.with_overrides(variants=(), eta=0.01).variants == ()
    assert BenchConfig().variants == ()
    with pytest.raises(ValueError, match="proxy"):
        OSTVariant("x", proxy="bigger")


def test_benchmark_scores_are_cached_under_the_engines_fingerprint(tmp_path):
    """The benchmark reuses a scores file only when the engine's fingerprint is equal: the proxy
    folder's content (not its path), anchors, pool, mode and settings."""
    import shutil
    from types import SimpleNamespace

    from ostselect.bench.protocol import BenchmarkRun, variant_method, variant_scorer
    from ostselect.data import write_samples
    from ostselect.proxy import build_tiny_proxy
    from ostselect.proxy.toy import word_samples

    config = mini_config()
    run = BenchmarkRun(config, tmp_path / "run", log=(logged := []).append)
    ckpt = build_tiny_proxy(tmp_path / "proxy", arch="qwen2-vl", seed=0)
    twin = Path(shutil.copytree(ckpt, tmp_path / "elsewhere" / "proxy"))
    other = build_tiny_proxy(tmp_path / "other", arch="qwen2-vl", seed=1)
    pool = tmp_path / "pool.jsonl"
    write_samples(list(word_samples(6, "p", 1)), pool)
    write_samples(list(word_samples(3, "a", 2)), run.anchors_path)
    run.paths = SimpleNamespace(pool=pool)

    def fp(folder, **kw):
        return run.ost_factory(folder, "exact", **kw).fingerprint(pool)

    assert fp(ckpt) == fp(ckpt, eta=config.eta) == fp(twin)  # content, not the folder's path
    assert fp(ckpt) != fp(other)
    assert fp(ckpt) != fp(ckpt, eta=config.eta * 2)
    assert fp(ckpt, optimizer="adamw") != fp(ckpt)
    assert fp(ckpt, optimizer=config.optimizer) == fp(ckpt)

    path, _, first = run._score_ost(ckpt, "first-order", "x")
    assert not any("reusing" in m for m in logged)
    _, _, again = run._score_ost(twin, "first-order", "x")  # same content: reused
    assert any("reusing" in m for m in logged) and again.equals(first)
    logged.clear()
    _, _, changed = run._score_ost(ckpt, "first-order", "x", eta=config.eta * 2)
    assert not any("reusing" in m for m in logged)  # a changed setting is scored again
    assert changed.column("utility").to_pylist() != first.column("utility").to_pylist()
    assert not Path(str(path) + ".shards").exists()  # the shards only served a resume

    assert variant_scorer(OSTVariant("b", balance_by="category"), config) == "ost-exact"
    assert variant_method(OSTVariant("b", balance_by="category"), config) != "ost-exact"
    assert variant_scorer(OSTVariant("e", eta=0.02), config) == "ost-exact-eta0.02"
    assert variant_scorer(OSTVariant("t", proxy="target"), config) == "ost-exact-target-proxy"
    # the paper's step: AdamW from the warm-up state, at its next lr (eta None) unless given
    adamw = OSTVariant("a", optimizer="adamw")
    assert variant_scorer(adamw, config) == "ost-exact-adamw"
    # group-z ranks the same scores differently: same scorer, its own method (own training key)
    z = OSTVariant("z", normalize="group-z")
    assert variant_scorer(z, config) == "ost-exact"
    assert variant_method(z, config) == "ost-exact-group-z"


@pytest.mark.slow
def test_mini_benchmark_end_to_end(tmp_path):
    from ostselect.bench.demo import run_and_write
    from ostselect.bench.noise import CLEAN
    from ostselect.bench.protocol import BenchmarkRun

    # Two workers: the target pretrains in one while the proxy warms up and scores in the other.
    config = mini_config().with_overrides(cache_dir=str(tmp_path / "cache"), workers=2)
    out = tmp_path / "results"
    results, paths = run_and_write(config, out, work_dir=tmp_path / "work", command="test")
    assert list(results["pretrain"]) == ["proxy", "target"]
    assert {"stage_pretrain_s", "stage_scoring_s", "stage_target_s"} <= set(results["timings"])

    for key in ("json", "markdown", "accuracy_vs_fraction", "pareto", "utility_by_noise"):
        assert paths[key].exists() and paths[key].stat().st_size > 0, key
    saved = json.loads(paths["json"].read_text())
    assert saved["config"]["n_pool"] == config.n_pool
    assert {g["name"] for g in saved["gates"]} >= {"clean-only (Protocol B)"}
    assert saved["interpretation"] and "comparisons" in saved

    rows = {(r["row"], r["protocol"]): r for r in results["rows"]}
    expected = ["Full-SFT", "Clean-only (oracle)", "Random 50%", "OST-exact 50%"]
    expected += ["OST-first-order 50%", "OST-hybrid 50%"]
    for row, protocol in [(r, p) for r in expected for p in ("A", "B")] + [("loss 50%", "B")]:
        r = rows[(row, protocol)]
        assert 0.0 <= r["accuracy_mean"] <= 1.0
        assert len(r["seeds"]) == len(config.seeds)
    assert ("loss 50%", "A") not in rows  # baselines train under `baseline_protocols` only
    n_pool = config.n_pool
    assert rows[("Clean-only (oracle)", "B")]["noisy_share"] == 0.0
    assert rows[("Full-SFT", "A")]["noisy_share"] == pytest.approx(config.noise_rate, abs=0.02)
    assert rows[("OST-exact 50%", "A")]["n_train"] == n_pool // 2
    # Protocol B: every row trains Full-SFT's step count; A: fewer steps for a smaller subset.
    full_steps = rows[("Full-SFT", "A")]["steps"]
    assert results["protocol_b_steps"] == full_steps
    assert rows[("OST-exact 50%", "B")]["steps"] == full_steps
    assert rows[("OST-exact 50%", "A")]["steps"] < full_steps
    # Paired statistics: every run graded every test item, on the same seeds.
    assert results["test"]["n"] == config.n_test
    assert all(len(r["correct"]) == config.n_test for r in results["runs"])
    assert all(r["schedule_steps"] == full_steps for r in results["runs"] if r["protocol"] == "B")
    # every trained job is kept on disk, so a killed run resumes without retraining
    # (a subset trained twice under the same schedule, e.g. Full-SFT under A and B, is one job)
    jobs = list((tmp_path / "work" / "jobs").glob("*.json"))
    assert 0 < len(jobs) < len(results["runs"])

    for name in ("ost-exact", "ost-first-order", "ost-hybrid", "loss"):
        s = results["scorers"][name]
        assert 0.0 <= s["auroc"] <= 1.0 and not math.isnan(s["auroc"])
        assert set(s["precision_at"]) == {"50%"}
    assert [a["warmup"] for a in results["ablation"]] == list(config.ablation_fractions)

    # Policy rows: OST-exact and the best baseline, balanced and coverage-aware, every seed;
    # coverage needs per-anchor-group scores, which the loss baseline has not: skipped, said why.
    k = round(config.n_pool * min(config.fractions))
    for row in ("OST-exact 50% (balanced)", "OST-exact 50% (coverage)", "loss 50% (balanced)"):
        r = rows[(row, "B")]
        assert r["seeds"] == list(config.seeds) and sum(r["kept_per_category"].values()) == k
    assert "per-anchor-group" in results["policies"]["skipped"]["loss (coverage)"]
    balanced = rows[("OST-exact 50% (balanced)", "B")]["kept_per_category"]
    assert max(balanced.values()) - min(balanced.values()) <= 1  # the pool is evenly spread

    # The OST variants stage: every variant trained on every seed, with its own table.
    variants = {v["name"]: v for v in results["variants"]}
    assert list(variants) == [v.name for v in config.variants]
    bigger = variants["target as proxy"]
    assert bigger["scorer"] == "ost-exact-target-proxy"
    assert bigger["checkpoint"].startswith("models/target-as-proxy-warm")
    assert len(bigger["accuracy_seeds"]) == len(config.seeds)
    assert sum(len(v) for v in results["utility_by_noise"].values()) == n_pool
    assert results["validation"]["valid"] == results["validation"]["total"] == n_pool
    warm = results["warmup"][f"proxy {round(100 * config.warmup_fraction)}%"]
    assert warm["steps"] == math.ceil(config.warmup_fraction * n_pool / config.warmup_batch_size)

    # The scorers' view of the pool carries no noise tag, answer or scan id.
    run = BenchmarkRun(config, tmp_path / "again")
    run.make_data()
    assert all(set(s.extra) == {"category"} for s in run.pool)
    assert {run.noise[s.id] for s in run.pool} > {CLEAN}
    # Splits use disjoint digit scans and ids.
    scans = [set(s.extra["scans"]) for s in (*run.heldout, *run.test)]
    held = set().union(*scans[: len(run.heldout)])
    test = set().union(*scans[len(run.heldout) :])
    assert not held & test
    assert not {s.id for s in run.pool} & {s.id for s in run.test}


@pytest.mark.slow
def test_training_is_deterministic_and_pretraining_cached(tmp_path):
    """Same checkpoint, subset and seed -> the same steps and generated text; a second run with
    the same settings reuses the cached pretrained models, a changed setting does not."""
    from ostselect.bench.jobs import JobRunner, train_job
    from ostselect.bench.protocol import BenchmarkRun

    config = mini_config().with_overrides(cache_dir=str(tmp_path / "cache"))
    run = BenchmarkRun(config, tmp_path / "a")
    run.jobs = JobRunner(1)
    run.make_data()
    run.pretrain_models()
    assert "reused" not in run.results["pretrain"]["target"]
    for role in ("proxy", "target"):
        for gate in ("reader_cell_accuracy", "caption_accuracy", "arithmetic_accuracy"):
            assert 0.0 <= run.results["pretrain"][role][gate] <= 1.0
    spec = {
        "target": str(run.target_dir),
        "pool": str(run.paths.pool),
        "test": str(run.paths.test),
        "ids": [s.id for s in run.pool[:10]],
        "protocol": "B",
        "seed": 3,
        "lr": 2e-3,
        "batch_size": 4,
        "epochs_a": 1,
        "steps_b": 5,  # more than one pass over 10 samples at batch 4: the data repeat
        "max_new_tokens": 8,
        "eval_batch_size": 5,
    }
    first, second = train_job(spec), train_job(spec)
    assert first["steps"] == first["schedule_steps"] == 5
    for key in ("accuracy", "correct", "example_output", "unanswered", "last_loss"):
        assert first[key] == second[key], key

    again = BenchmarkRun(config.with_overrides(n_pool=40, noise_rate=0.5), tmp_path / "b")
    again.jobs = JobRunner(1)
    again.make_data()
    again.pretrain_models()  # another pool, same pretraining data: the cache entry is reused
    assert again.results["pretrain"]["target"]["reused"] == str(run.target_dir)
    changed = BenchmarkRun(config.with_overrides(pretrain_lr=5e-4), tmp_path / "c")
    changed.jobs = JobRunner(1)
    changed.make_data()
    changed.pretrain_models()
    assert "reused" not in changed.results["pretrain"]["target"]
    assert changed.target_dir != run.target_dir
