"""The DigitMath protocol end to end: data -> pretraining -> warm-up -> scoring -> selection ->
target fine-tuning (Protocols A and B) -> evaluation, for every row and seed.

`run_benchmark(config, out_dir)` returns the results dict that `bench.results` writes as
`results.json`, a Markdown table and plots. Layout of `out_dir`:

    data/        the generated DigitMath splits (pool noise tags only in pool.noise.json)
    models/      proxy + target after pretraining, proxy warm-up checkpoints (and the target's,
                 warmed up as a proxy, when a variant scores with it)
    scores/      one scores table per scorer (OST modes, baselines, ablation checkpoints,
                 variants), scored through the engine and reused only under the same engine
                 fingerprint (in its provenance); the judge's reply cache
    anchors.jsonl

Scorers only ever receive the pool samples as `iter_samples` reads them from pool.jsonl (id,
messages, image, category); the hidden noise tags are read only by the evaluation code here.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ostselect.bench.config import PROXY_ROLES, BenchConfig, OSTVariant
from ostselect.bench.jobs import train_job
from ostselect.bench.metrics import mean_std, noise_auroc, noise_auroc_by_type, precision_at_k
from ostselect.bench.noise import CLEAN
from ostselect.data.sample import Sample

Log = Callable[[str], None]
SCORE_SHARD = 256  # samples per shard of the scoring runs (a multiple of every batch size used)


@dataclass
class Subset:
    """One row's training data: which samples, and what choosing them cost."""

    row: str  # e.g. "OST-exact 20%"
    method: str  # "full", "clean", "random", "ost-exact", "loss", ...
    fraction: float
    ids: list[str]
    selection_s: float = 0.0
    policy: str = "topk"  # "topk", "balanced" (by category) or "coverage" (anchor groups)


# The settings that determine a pretrained checkpoint; another run with the same values reuses it
# from the cache (`bench.cache`). The pool does not change it (the tokenizer is trained on
# captions, facts and the task wording, `pretrain.tokenizer_extras`): demo and full runs share it.
PRETRAIN_FIELDS = (
    "n_pretrain",
    "n_facts",
    "clutter",
    "data_seed",
    "vision_pretrain_epochs",
    "vision_pretrain_lr",
    "pretrain_epochs",
    "pretrain_lr",
    "pretrain_batch_size",
    "threads",
)
# The settings the generated splits depend on (a training job's result depends on them too).
DATA_FIELDS = ("n_pool", "n_heldout", "n_test", "noise_rate", "noise_mix", "clutter", "data_seed")
N_DIAG = 100  # held-out captions for the reader and caption-reading gates


def pretrain_key(config: BenchConfig, role: str) -> dict[str, Any]:
    """What a pretrained `role` model depends on, including the pretraining code's version."""
    from ostselect.bench.cache import MODELS_VERSION

    d = config.to_json()
    return {
        "role": role,
        "version": MODELS_VERSION,
        "dims": d[role],
        **{k: d[k] for k in PRETRAIN_FIELDS},
    }


def pct(fraction: float) -> str:
    return f"{round(fraction * 100):d}%"


def _timer() -> Callable[[], float]:
    start = time.perf_counter()
    return lambda: round(time.perf_counter() - start, 2)


def _load_split(path: Path) -> list[Sample]:
    from ostselect.data import iter_samples

    return list(iter_samples(path))


def noise_metrics(
    utilities: dict[str, float], noise: dict[str, str], fractions: Sequence[float]
) -> dict[str, Any]:
    """How well one scorer ranks clean samples above noisy ones (AUROC, by type, precision@k)."""
    return {
        "auroc": noise_auroc(utilities, noise),
        "auroc_by_type": noise_auroc_by_type(utilities, noise),
        "precision_at": {pct(f): precision_at_k(utilities, noise, f) for f in fractions},
    }


def _utilities(table: Any) -> dict[str, float]:
    ids = table.column("id").to_pylist()
    values = table.column("utility").to_pylist()
    return {str(i): (math.nan if v is None else float(v)) for i, v in zip(ids, values, strict=True)}


def _top_ids(
    scores_path: Path,
    pool: Sequence[Sample],
    fraction: float,
    balance_by: str | None = None,
    *,
    policy: str = "topk",
    normalize: str | None = None,
) -> list[str]:
    """The kept ids at `fraction`: plain top-k, "balanced" (top-k per category, the pool's
    proportions) or "coverage" (the coverage-aware policy over the per-anchor-group utilities)."""
    from ostselect.select import SelectionPolicy, select

    if policy == "balanced":
        balance_by = balance_by or "category"
    chosen = SelectionPolicy(
        top=pct(fraction),
        balance_by=balance_by,
        policy="coverage" if policy == "coverage" else "topk",
        normalize=normalize or "none",
    )
    return select(scores_path, pool, chosen).kept_ids


def variant_scorer(variant: OSTVariant, config: BenchConfig) -> str:
    """The scores a variant ranks by: "ost-exact" unless its eta or proxy differs from the main."""
    parts = []
    if variant.eta is not None and variant.eta != config.eta:
        parts.append(f"eta{variant.eta:g}")
    if variant.proxy != "proxy":
        parts.append(f"{variant.proxy}-proxy")
    if variant.optimizer and variant.optimizer != config.optimizer:
        parts.append(variant.optimizer)
    return "-".join(["ost-exact", *parts])


def variant_method(variant: OSTVariant, config: BenchConfig) -> str:
    """The `method` of a variant's runs: its scorer plus the balancing, never plain "ost-exact"."""
    name = variant_scorer(variant, config)
    if variant.balance_by:
        name += f"-balanced-{variant.balance_by}"
    if variant.normalize:
        name += f"-{variant.normalize}"
    return name if name != "ost-exact" else "ost-exact-variant"


class PendingModel:
    """A pretrained model on its way: made by a pretraining job, or already in the cache.

    `get()` waits for the job, moves its output into the cache (atomically: a killed run never
    leaves a half-written entry) and returns (folder, pretraining record); later calls return
    the same. Waiting only when a model is needed lets the proxy's warm-up and scoring run while
    the larger target still pretrains.
    """

    def __init__(
        self,
        role: str,
        folder: Path,
        key: dict[str, Any],
        log: Log,
        *,
        job: Future | None = None,
        tmp: Path | None = None,
        record: dict[str, Any] | None = None,
    ) -> None:
        self.role, self.folder, self.key, self.log = role, folder, key, log
        self._job, self._tmp, self._record = job, tmp, record

    def get(self) -> tuple[Path, dict[str, Any]]:
        from ostselect.bench.cache import write_record

        if self._record is None:
            assert self._job is not None and self._tmp is not None
            result = self._job.result()
            write_record(self._tmp, self.key, result)
            if self.folder.exists():
                shutil.rmtree(self.folder)
            self._tmp.replace(self.folder)
            self._record = result
            self.log(
                f"pretrained {self.role} ({result['parameters']:,} params, "
                f"{result['wall_s']}s): reader {result['reader_cell_accuracy']:.1%} of cells, "
                f"reads {result['caption_accuracy']:.0%} of held-out captions, "
                f"{result['arithmetic_accuracy']:.0%} of arithmetic facts"
            )
        return self.folder, self._record


def start_pretraining(
    config: BenchConfig, roles: Sequence[str], pretrain_split: Path, jobs: Any, log: Log
) -> dict[str, PendingModel]:
    """role -> its `PendingModel`: each `roles` model reused from the cache when made under the
    same key (its record then carries `reused`, its folder), else pretrained on
    `pretrain_split` by a job started on `jobs` now (the roles in parallel).

    `ost bench run`, `ost demo` and `ost bench proxy` all come through here, so they share one
    cache entry per setting.
    """
    from ostselect.bench.cache import cache_root, cached_result, model_folder
    from ostselect.bench.jobs import pretrain_job

    root = cache_root(config.cache_dir)
    out: dict[str, PendingModel] = {}
    todo: list[tuple[str, dict[str, Any], Path, dict[str, Any]]] = []
    for role in roles:
        dims = getattr(config, role)
        key = pretrain_key(config, role)
        folder = model_folder(root, role, key)
        saved = cached_result(folder, key)
        if saved is not None:
            out[role] = PendingModel(
                role, folder, key, log, record={**saved, "reused": str(folder)}
            )
            log(f"pretrained {role}: reusing {folder} (same data, sizes and settings)")
            continue
        spec = {
            "role": role,
            "out": str(folder.with_name(folder.name + ".tmp")),
            "pretrain": str(pretrain_split),
            "text": dims.text(),
            "vision": dims.vision(),
            "seed": config.data_seed,
            "n_diag": N_DIAG,
            "n_facts": config.n_facts,
            "reader_epochs": config.vision_pretrain_epochs,
            "reader_lr": config.vision_pretrain_lr,
            "epochs": config.pretrain_epochs,
            "lr": config.pretrain_lr,
            "batch_size": config.pretrain_batch_size,
        }
        todo.append((role, spec, folder, key))
    if todo:
        log(f"pretraining {', '.join(t[0] for t in todo)} (cache: {root})")
    for role, spec, folder, key in todo:
        job = jobs.submit(pretrain_job, spec)
        out[role] = PendingModel(role, folder, key, log, job=job, tmp=Path(spec["out"]))
    return {role: out[role] for role in roles}


def pretrained_models(
    config: BenchConfig, roles: Sequence[str], pretrain_split: Path, jobs: Any, log: Log
) -> dict[str, tuple[Path, dict[str, Any]]]:
    """role -> (cached model folder, its pretraining record), waiting for every role (see
    `start_pretraining`)."""
    pending = start_pretraining(config, roles, pretrain_split, jobs, log)
    return {role: p.get() for role, p in pending.items()}


class BenchmarkRun:
    """State of one run; each method is one protocol stage (see the module docstring)."""

    def __init__(self, config: BenchConfig, out_dir: str | Path, log: Log | None = None) -> None:
        self.config = config
        self.out = Path(out_dir)
        self.log = log or (lambda msg: None)
        self.timings: dict[str, float] = {}
        self.results: dict[str, Any] = {"config": config.to_json()}
        self.target_proxy: tuple[Path, float] | None = None  # (checkpoint, warm-up s), if used
        self.anchors_path = self.out / "anchors.jsonl"
        from ostselect.bench.jobs import JobRunner

        self.jobs = JobRunner(1, config.threads)  # inline; `run_all` opens the worker pool

    def run_all(self) -> dict[str, Any]:
        """Every stage in order; the results dict (rows aggregated over seeds)."""
        import torch

        from ostselect.bench.results import aggregate_rows

        torch.set_num_threads(self.config.threads)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # one "Loading weights" bar per row drowns the log
        self.out.mkdir(parents=True, exist_ok=True)
        total = _timer()
        stages = (
            ("data", self.make_data),
            ("pretrain", lambda: self.pretrain_models(wait=("proxy",))),
            ("warmup", self.warm_up),
            ("anchors", self.draw_anchors),
            ("scoring", self.score_candidates),
            ("target", self.collect_pretrained),  # the wait for the target, if any is left
            ("rows", self.run_rows),
            ("policies", self.policies),
            ("ablation", self.ablation),
            ("variants", self.variants),
        )
        from ostselect.bench.jobs import JobRunner

        self.jobs = JobRunner(self.config.workers, self.config.threads)
        try:
            for name, stage in stages:
                t = _timer()
                stage()
                self.timings[f"stage_{name}_s"] = t()
        finally:
            self.jobs.close()
        results = self.results
        results["scorers"] = self.scorers
        results["rows"] = aggregate_rows(results["runs"])
        t = _timer()
        self.report()  # after the rows: it opens with the gates
        self.timings["stage_report_s"] = t()
        self.timings["total_s"] = total()
        results["timings"] = self.timings
        return results

    # ---- stages ------------------------------------------------------------------------------
    def make_data(self) -> None:
        from ostselect.bench.data import make_digitmath, noise_labels, read_manifest

        c = self.config
        t = _timer()
        self.paths = make_digitmath(
            self.out / "data",
            n_pool=c.n_pool,
            n_heldout=c.n_heldout,
            n_test=c.n_test,
            n_pretrain=c.n_pretrain,
            noise_rate=c.noise_rate,
            noise_mix=c.noise_mix,
            seed=c.data_seed,
            clutter=c.clutter,
        )
        self.pretrain = _load_split(self.paths.pretrain)
        # The pipeline's first step on any pool: check every record (and show that it is clean).
        from ostselect.data import validate_pool

        checked = validate_pool(self.paths.pool, self.out / "validation")
        self.results["validation"] = checked.as_dict()
        self.pool = _load_split(self.paths.pool)
        self.heldout = _load_split(self.paths.heldout)
        self.test = _load_split(self.paths.test)
        self.noise = noise_labels(self.paths.pool)  # evaluation only, never given to a scorer
        self.timings["data_s"] = t()
        self.results["data"] = read_manifest(self.paths.root)["counts"]
        self.log(f"data: pool {len(self.pool)}, test {len(self.test)} ({self.timings['data_s']}s)")

    def pretrain_models(self, wait: Sequence[str] = PROXY_ROLES) -> None:
        """Pretrain the proxy and the target (frozen digit reader, then the language model on
        captions + arithmetic facts), or reuse them from the cache; wait for the `wait` roles
        (`run_all` waits for the proxy only, then warms it up and scores while the target,
        the long pole, still pretrains; `collect_pretrained` waits for the rest)."""
        # in the roles' order, whichever finishes first
        self.results["pretrain"] = dict.fromkeys(PROXY_ROLES)
        self._pending = start_pretraining(
            self.config, PROXY_ROLES, self.paths.pretrain, self.jobs, self.log
        )
        for role in wait:
            self._collect(role)

    def collect_pretrained(self) -> None:
        """Wait for every model `pretrain_models` started and has not waited for yet."""
        for role in PROXY_ROLES:
            self._collect(role)

    def _collect(self, role: str) -> None:
        folder, result = self._pending[role].get()
        setattr(self, f"{role}_dir", folder)
        self.results["pretrain"][role] = result

    def _warm(self, pretrained: Path, frac: float, name: str) -> tuple[Path, float]:
        """(checkpoint, seconds): `pretrained` after `frac` of one pool epoch of the benchmark's
        warm-up (AdamW + cosine, its lr, batch and seed), saved as models/<name>-warm<frac>."""
        from ostselect.proxy import load_proxy
        from ostselect.proxy.warmup import WarmupConfig, warmup

        if frac == 0:
            return pretrained, 0.0
        c = self.config
        t = _timer()
        cfg = WarmupConfig(
            fraction=frac,
            lr=c.warmup_lr,
            batch_size=c.warmup_batch_size,
            epochs=1,
            seed=c.data_seed,
            warmup_ratio=c.warmup_ramp,
        )
        model = load_proxy(pretrained, params="all")
        folder, run = warmup(model, self.pool, self.out / "models" / f"{name}-warm{pct(frac)}", cfg)
        self.results.setdefault("warmup", {})[f"{name} {pct(frac)}"] = {
            "steps": run.steps,
            "ramp_steps": run.ramp_steps,
            "steps_after_ramp": max(0, run.steps - run.ramp_steps),
            "schedule_steps": run.schedule_steps,
            "first_loss": run.losses[0] if run.losses else None,
            "last_loss": run.losses[-1] if run.losses else None,
        }
        if run.steps <= run.ramp_steps:
            self.log(
                f"warning: warm-up {pct(frac)} ran {run.steps} steps, all inside the "
                f"{run.ramp_steps}-step lr ramp: the proxy is barely trained"
            )
        return folder, t()

    def warm_up(self) -> None:
        """Proxy checkpoints after each warm-up share of one pool epoch (0% = just pretrained)."""
        c = self.config
        self.checkpoints: dict[float, tuple[Path, float]] = {}
        for frac in sorted({c.warmup_fraction, *c.ablation_fractions}):
            self.checkpoints[frac] = self._warm(self.proxy_dir, frac, "proxy")
            if frac:
                self.log(f"warm-up {pct(frac)}: {self.checkpoints[frac][1]}s")
        self.timings["warmup_s"] = self.checkpoints[c.warmup_fraction][1]

    def draw_anchors(self) -> None:
        from ostselect.proxy.anchors import build_anchor_set, write_anchor_set

        c = self.config
        anchor_set = build_anchor_set(
            self.heldout, c.n_anchors, stratify_by="category", seed=c.data_seed
        )
        self.anchors = anchor_set.samples
        write_anchor_set(anchor_set, self.anchors_path)
        self.results["anchors"] = {"size": len(self.anchors), "strata": anchor_set.strata}

    def _score_ost(
        self,
        checkpoint: Path,
        mode: str,
        name: str,
        *,
        eta: float | None = None,
        optimizer: str | None = None,
    ) -> tuple[Path, float, Any]:
        """Score the pool with OST `mode` from `checkpoint` (a warm-up of a pretrained model).

        `optimizer` defaults to the config's; with it, `eta` defaults to the config's too,
        with another optimizer (AdamW) to the warm-up's next learning rate (eta None)."""
        from ostselect.bench.jobs import score_job

        factory = self.ost_factory(checkpoint, mode, eta=eta, optimizer=optimizer)
        spec = self._score_spec(name, "ost", factory)
        return self._scored(spec, score_job(spec))

    def ost_factory(
        self,
        checkpoint: Path,
        mode: str,
        *,
        eta: float | None = None,
        optimizer: str | None = None,
    ) -> Any:
        """The engine's recipe for OST scores of the pool from `checkpoint`."""
        from ostselect.scoring import ScoreConfig
        from ostselect.scoring.driver import OSTScorerFactory

        c = self.config
        optimizer = optimizer or c.optimizer
        if eta is None and optimizer == c.optimizer:
            eta = c.eta
        config = ScoreConfig(
            mode=mode,
            optimizer=optimizer,
            eta=eta,
            batch_size=c.score_batch_size,
            cutoff=min(c.fractions),
            group_field="category",
            seed=c.data_seed,
            device="cpu",
        )
        return OSTScorerFactory(checkpoint, self.anchors_path, config, params="all")

    def _score_spec(self, name: str, kind: str, factory: Any, **extra: Any) -> dict[str, Any]:
        """A `score_job` spec: `scores/<name>.parquet` from the pool with `factory` (kind "ost":
        an `OSTScorerFactory`, "baseline": a `BaselineFactory`)."""
        return {
            "name": name,
            "kind": kind,
            "factory": factory,
            "pool": str(self.paths.pool),
            "path": str(self.out / "scores" / f"{name}.parquet"),
            "shard_size": SCORE_SHARD,
            **extra,
        }

    def _scored(self, spec: dict[str, Any], result: dict[str, Any]) -> tuple[Path, float, Any]:
        """(path, seconds, table) of a finished `score_job`."""
        import pyarrow.parquet as pq

        path = Path(spec["path"])
        if result["reused"]:
            self.log(f"scores {spec['name']}: reusing {path} (same proxy, anchors and settings)")
        return path, result["wall_s"], pq.read_table(path)

    def _rel(self, path: Path) -> str:
        """`path` relative to the work folder, or the cache entry's name (it has the key hash)."""
        return str(path.relative_to(self.out)) if path.is_relative_to(self.out) else path.name

    def score_candidates(self) -> None:
        """OST in every mode, then every baseline, all on the warmed-up proxy.

        The scorers do not depend on each other, so they run as jobs (two at a time on two
        workers), the LLM judge first: it is the slowest by far, and started last it would run
        alone at the end. Results are recorded in the config's order whatever finished first."""
        from ostselect.baselines import get_baseline, run_baseline
        from ostselect.baselines.factory import BaselineFactory
        from ostselect.bench.jobs import score_job
        from ostselect.scores import read_provenance, write_scores

        c = self.config
        main_ckpt, warm_s = self.checkpoints[c.warmup_fraction]
        self.scorers: dict[str, dict[str, Any]] = {}
        self.score_paths: dict[str, Path] = {}
        specs = [
            self._score_spec(f"ost-{m}", "ost", self.ost_factory(main_ckpt, m)) for m in c.modes
        ]
        for name in c.baselines:
            entry = get_baseline(name)
            options: dict[str, Any] = {}
            if name == "judge":  # a rerun answers every sample from the reply cache
                (self.out / "scores").mkdir(parents=True, exist_ok=True)
                options["cache_path"] = str(self.out / "scores" / "judge-cache.jsonl")
            factory = BaselineFactory(
                name,
                proxy_dir=main_ckpt if entry.uses_proxy else None,
                anchors_path=self.anchors_path if entry.anchors else None,
                params="all",
                options=options,
            )
            # keep_going: a broken baseline costs its row, not the run
            specs.append(
                self._score_spec(
                    name, "baseline", factory, keep_going=True, uses_proxy=entry.uses_proxy
                )
            )
        order = sorted(range(len(specs)), key=lambda i: specs[i]["name"] != "judge")
        submitted = [specs[i] for i in order]

        def done(j: int, result: dict[str, Any]) -> None:  # live progress in the log
            state = "failed" if "error" in result else f"{result['wall_s']:.0f}s"
            self.log(f"scores {submitted[j]['name']}: finished ({state})")

        results = self.jobs.map(score_job, submitted, done)
        for i, result in sorted(zip(order, results, strict=True)):
            spec = specs[i]
            name = spec["name"]
            if "error" in result:
                self.scorers[name] = {"error": result["error"]}
                self.log(f"baseline {name} failed: {result['error']}")
                continue
            path, wall, table = self._scored(spec, result)
            uses_proxy = spec["kind"] == "ost" or spec["uses_proxy"]  # its warm-up is a cost
            self._record_scorer(name, path, wall, warm_s if uses_proxy else 0.0, table)
            if name == "ost-exact":
                by_kind: dict[str, list[float]] = {}
                for sid, u in _utilities(table).items():
                    by_kind.setdefault(self.noise[sid], []).append(u)
                self.results["utility_by_noise"] = by_kind
        for seed in c.seeds:
            table = run_baseline("random", self.pool, seed=seed)
            path = write_scores(
                table, self.out / "scores" / f"random-seed{seed}.parquet", read_provenance(table)
            )
            self._record_scorer(f"random-seed{seed}", path, 0.0, 0.0, table)

    def _record_scorer(self, name: str, path: Path, wall: float, warm: float, table: Any) -> None:
        metrics = noise_metrics(_utilities(table), self.noise, self.config.fractions)
        self.scorers[name] = {"scoring_s": wall, "warmup_s": warm, **metrics}
        self.score_paths[name] = path
        self.log(
            f"scored {name}: {wall}s, noise AUROC {metrics['auroc']:.3f}, "
            + ", ".join(f"P@{k} {v:.2f}" for k, v in metrics["precision_at"].items())
        )

    def subsets(self, seed: int) -> list[Subset]:
        """Every row's data for one seed (only Random-k depends on the seed)."""
        c = self.config
        all_ids = [s.id for s in self.pool]
        clean = [i for i in all_ids if self.noise[i] == CLEAN]
        rows = [
            Subset("Full-SFT", "full", 1.0, all_ids),
            Subset("Clean-only (oracle)", "clean", len(clean) / len(all_ids), clean),
        ]
        for f in c.fractions:
            rand = self.score_paths[f"random-seed{seed}"]
            rows.append(Subset(f"Random {pct(f)}", "random", f, _top_ids(rand, self.pool, f)))
            for name in (*(f"ost-{m}" for m in c.modes), *c.baselines):
                if name not in self.score_paths:
                    continue
                info = self.scorers[name]
                label = f"OST-{name[4:]}" if name.startswith("ost-") else name
                rows.append(
                    Subset(
                        f"{label} {pct(f)}",
                        name,
                        f,
                        _top_ids(self.score_paths[name], self.pool, f),
                        selection_s=round(info["scoring_s"] + info["warmup_s"], 2),
                    )
                )
        return rows

    def _job(self, subset: Subset, protocol: str, seed: int) -> dict[str, Any]:
        c = self.config
        return {
            "target": str(self.target_dir),
            "pool": str(self.paths.pool),
            "test": str(self.paths.test),
            "ids": list(subset.ids),
            "protocol": protocol,
            "seed": seed,
            "lr": c.finetune_lr,
            "batch_size": c.finetune_batch_size,
            "epochs_a": c.epochs_a,
            "steps_b": self.steps_b,
            "max_new_tokens": c.max_new_tokens,
            "eval_batch_size": c.eval_batch_size,
        }

    def _run_record(self, subset: Subset, protocol: str, seed: int, r: dict[str, Any]) -> dict:
        kept: dict[str, int] = {}
        for i in subset.ids:
            cat = str(self.pool_by_id[i].extra.get("category"))
            kept[cat] = kept.get(cat, 0) + 1
        return {
            "row": subset.row,
            "method": subset.method,
            "policy": subset.policy,
            "fraction": subset.fraction,
            "protocol": protocol,
            "seed": seed,
            "n_train": len(subset.ids),
            "noisy_share": sum(self.noise[i] != CLEAN for i in subset.ids) / len(subset.ids),
            "kept_per_category": dict(sorted(kept.items())),
            "selection_s": subset.selection_s,
            **r,
        }

    def train_many(self, work: Sequence[tuple[Subset, str, int]]) -> list[dict[str, Any]]:
        """Fine-tune and grade every (subset, protocol, seed), in parallel jobs.

        A subset this seed already trained under the same schedule (hybrid often picks exact's
        subset; Full-SFT under B is Full-SFT under A) is not trained again: training is
        deterministic, so that run is this row's run too, relabelled. Each finished job is
        saved under `jobs/` keyed by everything it depends on, so a killed run resumes there.
        """
        fresh: dict[tuple, tuple[Subset, str, int]] = {}
        for subset, protocol, seed in work:
            key = self._train_key(subset, protocol, seed)
            if key not in self.trained and key not in fresh:
                fresh[key] = (subset, protocol, seed)
        todo: list[tuple[tuple, dict[str, Any], Path]] = []
        for key, w in fresh.items():
            spec = self._job(*w)
            path = self._job_path(spec)
            if path.is_file():
                self.trained[key] = self._run_record(*w, json.loads(path.read_text()))
            else:
                todo.append((key, spec, path))
        if len(todo) < len(fresh):
            self.log(f"reusing {len(fresh) - len(todo)} finished training jobs from {self.out}")
        done = 0

        def on_done(i: int, r: dict[str, Any]) -> None:
            nonlocal done
            done += 1
            key, _, path = todo[i]
            subset, protocol, seed = fresh[key]
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(r))
            tmp.replace(path)
            self.log(
                f"[{done}/{len(todo)}] seed {seed} {protocol} {subset.row}: acc "
                f"{r['accuracy']:.3f} ({r['steps']} steps, {r['train_s']}s train, "
                f"{r['eval_s']}s eval)"
            )

        results = self.jobs.map(train_job, [spec for _, spec, _ in todo], on_done)
        for (key, _, _), r in zip(todo, results, strict=True):
            self.trained[key] = self._run_record(*fresh[key], r)
        runs = []
        for subset, protocol, seed in work:
            same = self.trained[self._train_key(subset, protocol, seed)]
            run = {**same, **self._run_record(subset, protocol, seed, {})}
            if same["row"] != subset.row or same["protocol"] != protocol:
                run["same_subset_as"] = f"{same['row']} ({same['protocol']})"
            runs.append(run)
        return runs

    def _job_path(self, spec: dict[str, Any]) -> Path:
        """Where a training job's result is kept: a hash of the job and the data it reads."""
        from ostselect.bench.cache import key_hash

        data = {k: self.config.to_json()[k] for k in DATA_FIELDS}
        return self.out / "jobs" / f"{key_hash({'spec': spec, 'data': data})}.json"

    def _train_key(self, subset: Subset, protocol: str, seed: int) -> tuple:
        # Full-SFT trains the same steps under A and B (steps_b is defined that way).
        per_epoch = math.ceil(len(subset.ids) / self.config.finetune_batch_size)
        same_steps = self.config.epochs_a * per_epoch == self.steps_b
        return (seed, "AB" if same_steps else protocol, tuple(subset.ids))

    def run_rows(self) -> None:
        c = self.config
        self.pool_by_id = {s.id: s for s in self.pool}
        self.steps_b = c.epochs_a * math.ceil(len(self.pool) / c.finetune_batch_size)
        self.trained: dict[tuple, dict[str, Any]] = {}
        work = []
        for seed in c.seeds:
            for subset in self.subsets(seed):
                is_baseline = subset.method in c.baselines
                for protocol in c.protocols:
                    if is_baseline and protocol not in c.baseline_protocols:
                        continue
                    work.append((subset, protocol, seed))
        self.results["runs"] = self.train_many(work)
        self.results["protocol_b_steps"] = self.steps_b
        self.results["test"] = {
            "n": len(self.test),
            "categories": [str(s.extra.get("category", "")) for s in self.test],
        }

    def policies(self) -> None:
        """Set-level policies at min(fractions) for OST-exact and the best baseline (by its top-k
        accuracy under Protocol B), trained under B on every seed beside their top-k rows."""
        from ostselect.bench.results import aggregate_rows

        c = self.config
        self.results["policies"] = {}
        if not c.policies or "ost-exact" not in self.score_paths:
            return
        f = min(c.fractions)
        rows = {r["row"]: r for r in aggregate_rows(self.results["runs"]) if r["protocol"] == "B"}
        ranked = sorted(
            (b for b in c.baselines if f"{b} {pct(f)}" in rows),
            key=lambda b: -rows[f"{b} {pct(f)}"]["accuracy_mean"],
        )
        scorers = ["ost-exact", *ranked[:1]]
        self.results["policies"] = {"best_baseline": ranked[0] if ranked else None, "skipped": {}}
        work = []
        for name in scorers:
            info = self.scorers[name]
            label = f"OST-{name[4:]}" if name.startswith("ost-") else name
            for policy in c.policies:
                try:
                    ids = _top_ids(self.score_paths[name], self.pool, f, policy=policy)
                except ValueError as err:  # e.g. coverage on a table without per-group scores
                    self.results["policies"]["skipped"][f"{label} ({policy})"] = str(err)
                    self.log(f"policy {policy} for {label}: not applicable ({err})")
                    continue
                subset = Subset(
                    f"{label} {pct(f)} ({policy})",
                    name,
                    f,
                    ids,
                    selection_s=round(info["scoring_s"] + info["warmup_s"], 2),
                    policy=policy,
                )
                work += [(subset, "B", seed) for seed in c.seeds]
        self.results["runs"] += self.train_many(work)

    def ablation(self) -> None:
        """OST-exact at each warm-up checkpoint: noise AUROC and the OST-k% target under B."""
        c = self.config
        if not c.ablation_fractions:
            self.results["ablation"] = []
            return
        fraction = min(c.fractions)
        seeds = list(c.seeds[: max(1, c.ablation_seeds)])
        rows = []
        for frac in c.ablation_fractions:
            ckpt, warm_s = self.checkpoints[frac]
            if frac == c.warmup_fraction and "exact" in c.modes:
                name = "ost-exact"
            else:
                name = f"ost-exact-warm{pct(frac)}"
                path, wall, table = self._score_ost(ckpt, "exact", name)
                self._record_scorer(name, path, wall, warm_s, table)
            info = self.scorers[name]
            ids = _top_ids(self.score_paths[name], self.pool, fraction)
            subset = Subset(f"OST-exact {pct(fraction)} (warm-up {pct(frac)})", name, fraction, ids)
            # a checkpoint whose top-k equals a trained row's is not trained again (train_many)
            accs = [r["accuracy"] for r in self.train_many([(subset, "B", s) for s in seeds])]
            mean, std = mean_std(accs)
            rows.append(
                {
                    "warmup": frac,
                    "checkpoint": self._rel(ckpt),
                    "auroc": info["auroc"],
                    "precision": info["precision_at"][pct(fraction)],
                    "accuracy_mean": mean,
                    "accuracy_std": std,
                    "seeds": seeds,
                    "fraction": fraction,
                }
            )
            self.log(f"ablation warm-up {pct(frac)}: AUROC {info['auroc']:.3f}, acc {mean:.3f}")
        self.results["ablation"] = rows

    def _warm_target_as_proxy(self) -> tuple[Path, float]:
        """The pretrained target, warmed up exactly like the proxy (same share, lr, batch, seed)."""
        if self.target_proxy is None:
            frac = self.config.warmup_fraction
            self.target_proxy = self._warm(self.target_dir, frac, "target-as-proxy")
            self.log(f"warm-up of the target as proxy {pct(frac)}: {self.target_proxy[1]}s")
        return self.target_proxy

    def variants(self) -> None:
        """Each `config.variants` entry: OST-exact scores (another eta, or the target as proxy),
        its top min(fractions) (balanced if asked), the target under Protocol B on every seed."""
        c = self.config
        self.results["variants"] = []
        if not c.variants:
            return
        fraction = min(c.fractions)
        rows = []
        for v in c.variants:
            t = _timer()
            scorer = variant_scorer(v, c)
            optimizer = v.optimizer or c.optimizer
            eta = v.eta if v.eta is not None else (c.eta if optimizer == c.optimizer else None)
            if v.proxy == "target":
                ckpt, warm_s = self._warm_target_as_proxy()
            else:
                ckpt, warm_s = self.checkpoints[c.warmup_fraction]
            if scorer not in self.score_paths:  # the main ost-exact scores are reused as they are
                path, wall, table = self._score_ost(
                    ckpt, "exact", scorer, eta=eta, optimizer=optimizer
                )
                self._record_scorer(scorer, path, wall, warm_s, table)
            info = self.scorers[scorer]
            ids = _top_ids(
                self.score_paths[scorer], self.pool, fraction, v.balance_by, normalize=v.normalize
            )
            method = variant_method(v, c)
            row = f"OST-exact {pct(fraction)} ({v.name})"
            subset = Subset(
                row, method, fraction, ids, selection_s=round(info["scoring_s"] + warm_s, 2)
            )
            accs = []
            for r in self.train_many([(subset, "B", seed) for seed in c.seeds]):
                r["variant"] = v.name
                self.results["runs"].append(r)
                accs.append(r["accuracy"])
            mean, std = mean_std(accs)
            kept_per_category: dict[str, int] = {}
            for i in ids:
                cat = str(self.pool_by_id[i].extra.get("category"))
                kept_per_category[cat] = kept_per_category.get(cat, 0) + 1
            rows.append(
                {
                    "name": v.name,
                    "scorer": scorer,
                    "method": method,
                    "row": row,
                    "eta": eta,
                    "optimizer": optimizer,
                    "proxy": v.proxy,
                    "checkpoint": self._rel(ckpt),
                    "balance_by": v.balance_by,
                    "normalize": v.normalize,
                    "warmup_s": warm_s,
                    "scoring_s": info["scoring_s"],
                    "auroc": info["auroc"],
                    "precision": info["precision_at"][pct(fraction)],
                    "noisy_share": sum(self.noise[i] != CLEAN for i in ids) / len(ids),
                    "kept_per_category": dict(sorted(kept_per_category.items())),
                    "accuracy_mean": mean,
                    "accuracy_std": std,
                    "accuracy_seeds": accs,
                    "seeds": list(c.seeds),
                    "fraction": fraction,
                    "wall_s": t(),
                }
            )
            self.log(f"variant {v.name}: AUROC {info['auroc']:.3f}, acc {mean:.3f}")
        self.results["variants"] = rows

    def report(self) -> None:
        if not self.config.report or "ost-exact" not in self.score_paths:
            return
        from ostselect.bench.gates import (
            competence_gates,
            failed_gates,
            fmt_gate_threshold,
            fmt_gate_value,
        )
        from ostselect.report.build import build_report

        alerts = [
            f"Competence gate failed: {g['name']} is {fmt_gate_value(g)} "
            f"(needs {fmt_gate_threshold(g)}): the comparisons are not meaningful."
            for g in failed_gates(competence_gates(self.results))
        ]
        try:
            path = build_report(
                self.score_paths["ost-exact"],
                self.pool,
                self.out / "report.html",
                cutoff=pct(min(self.config.fractions)),
                hidden_tags=self.noise,
                hidden_label="noise (hidden from scorers; benchmark only)",
                alerts=alerts,
            )
            self.results["report"] = str(path.relative_to(self.out))
        except Exception as err:  # the numbers matter more than the page
            self.results["report_error"] = f"{type(err).__name__}: {err}"
            self.log(f"report failed: {type(err).__name__}: {err}")


def run_benchmark(config: BenchConfig, out_dir: str | Path, *, log: Log | None = None) -> dict:
    """Run every stage and return the results (rows aggregated over seeds, see `bench.results`)."""
    return BenchmarkRun(config, out_dir, log).run_all()
