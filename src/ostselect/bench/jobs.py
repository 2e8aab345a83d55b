"""The benchmark's expensive, independent units of work, runnable in parallel worker processes.

Target fine-tuning runs (one per row, protocol and seed), the two pretraining stages and the
scorers do not depend on each other, and each uses one torch thread: on a 2-core machine two
worker processes halve the wall time. Every job is a plain function of a spec (paths, ids,
settings; a scorer's picklable factory) and returns a JSON-able dict, so the result is the same
whichever process ran it (seeds fixed, one thread each). `JobRunner(workers=1)` runs them inline,
in order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

_SPLITS: dict[str, list[Any]] = {}  # per-process cache of split files read by jobs


def _init_worker(threads: int) -> None:
    import os

    # Before tqdm is imported: libraries that call tqdm directly (transformers' GGUF loader,
    # when the judge loads in a worker) would otherwise draw bars into the run's log.
    os.environ["TQDM_DISABLE"] = "1"
    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(threads)
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _split(path: str) -> list[Any]:
    if path not in _SPLITS:
        from ostselect.data import iter_samples

        _SPLITS[path] = list(iter_samples(Path(path)))
    return _SPLITS[path]


def train_job(spec: dict[str, Any]) -> dict[str, Any]:
    """Fine-tune a fresh copy of the pretrained target on `spec["ids"]` and grade it on test.

    Protocol A: `epochs_a` passes over the subset. Protocol B: exactly `steps_b` optimizer steps
    with the cosine schedule spanning exactly those steps, whatever the subset size.
    """
    import time

    from ostselect.bench.target import evaluate, train_model
    from ostselect.proxy import load_proxy

    by_id = {s.id: s for s in _split(spec["pool"])}
    samples = [by_id[i] for i in spec["ids"]]
    test = _split(spec["test"])
    target = load_proxy(spec["target"], params="all")  # the digit reader stays frozen
    if spec["protocol"] == "A":
        schedule: dict[str, Any] = {"epochs": spec["epochs_a"]}
    else:
        schedule = {"total_steps": spec["steps_b"]}
    run = train_model(
        target,
        samples,
        lr=spec["lr"],
        batch_size=spec["batch_size"],
        seed=spec["seed"],
        **schedule,
    )
    start = time.perf_counter()
    acc, outputs = evaluate(
        target, test, max_new_tokens=spec["max_new_tokens"], batch_size=spec["eval_batch_size"]
    )
    return {
        "accuracy": acc.overall,
        "per_category": acc.per_category,
        "unanswered": acc.n_unanswered / acc.n,
        "correct": list(acc.correct),
        "steps": run.steps,
        "schedule_steps": run.schedule_steps,
        "train_s": round(run.wall_s, 2),
        "eval_s": round(time.perf_counter() - start, 2),
        "first_loss": run.first_loss,
        "last_loss": run.last_loss,
        "example_output": outputs[0] if outputs else "",
    }


def engine_scores(
    path: Path, fingerprint: dict[str, Any], run: Callable[[Path, bool], Any]
) -> tuple[float, bool]:
    """(seconds, reused) of the scores table at `path`, made by `run(out, resume)` through the
    engine, or reused when it was made under the same engine fingerprint (the proxy folder's
    content hash, anchors, pool, method and settings): the engine's identity is the cache key,
    so a changed setting or checkpoint is never served stale scores, and a killed run continues
    its shards."""
    import shutil

    import pyarrow.parquet as pq

    from ostselect.engine import StoreError, fingerprint_differences, store_path_for
    from ostselect.scores import read_provenance

    if path.is_file():
        provenance = read_provenance(pq.read_schema(path))
        made_under = provenance.get("fingerprint")
        if made_under is not None and not fingerprint_differences(made_under, fingerprint):
            return float(provenance["engine"]["wall_s"]), True
    try:
        run(path, True)  # continues the shards of a killed run with this fingerprint
    except StoreError:  # shards made under another fingerprint: they are this run's own
        shutil.rmtree(store_path_for(path), ignore_errors=True)
        run(path, False)
    provenance = read_provenance(pq.read_schema(path))
    shutil.rmtree(store_path_for(path), ignore_errors=True)  # only a resume needs them
    return float(provenance["engine"]["wall_s"]), False


def score_job(spec: dict[str, Any]) -> dict[str, Any]:
    """Score the pool with one scorer through the engine (`engine_scores`): an OST mode (kind
    "ost", an `OSTScorerFactory`) or a baseline (kind "baseline", a `BaselineFactory`). The
    factories are picklable (they travel to Ray workers the same way). With `keep_going`, an
    error is returned as `{"error": ...}` instead of raised: a broken baseline costs its row."""
    pool, factory = Path(spec["pool"]), spec["factory"]
    if spec["kind"] == "ost":
        from ostselect.scoring.driver import score_pool

        def run(out: Path, resume: bool) -> Any:
            return score_pool(pool, factory, out, resume=resume, shard_size=spec["shard_size"])
    else:
        from ostselect.baselines.factory import score_baseline_pool

        def run(out: Path, resume: bool) -> Any:
            return score_baseline_pool(pool, factory, out, resume=resume, keep_shards=True)

    try:
        wall, reused = engine_scores(Path(spec["path"]), factory.fingerprint(pool), run)
    except Exception as err:
        if not spec.get("keep_going"):
            raise
        return {"error": f"{type(err).__name__}: {err}"}
    return {"wall_s": wall, "reused": reused}


def pretrain_job(spec: dict[str, Any]) -> dict[str, Any]:
    """Build a random benchmark VLM, pretrain its digit reader (then frozen), align its language
    model on captions + arithmetic facts, measure the three competence gates, save to `out`."""
    import shutil
    import time

    from ostselect.bench.models import build_bench_model
    from ostselect.bench.pretrain import (
        all_fact_samples,
        fact_samples,
        pretrain_reader,
        tokenizer_extras,
    )
    from ostselect.bench.target import caption_accuracy, evaluate, train_model
    from ostselect.proxy import load_proxy

    start = time.perf_counter()
    captions = _split(spec["pretrain"])
    n_diag = min(spec["n_diag"], len(captions) // 10)
    diag, train = captions[:n_diag], captions[n_diag:]
    facts = fact_samples(spec["n_facts"], spec["seed"])
    corpus = [t.content for s in (*captions, *facts) for t in s.turns] + tokenizer_extras()
    out = Path(spec["out"])
    raw = build_bench_model(
        out.with_name(out.name + ".random"),
        text=spec["text"],
        vision=spec["vision"],
        corpus=corpus,
        seed=spec["seed"],
        role=spec["role"],
    )
    model = load_proxy(raw, params="all")
    reader = pretrain_reader(
        model, train, diag, epochs=spec["reader_epochs"], lr=spec["reader_lr"], seed=spec["seed"]
    )
    run = train_model(
        model,
        [*train, *facts],
        lr=spec["lr"],
        batch_size=spec["batch_size"],
        epochs=spec["epochs"],
        seed=spec["seed"],
    )
    reading = caption_accuracy(model, diag) if diag else math.nan
    arithmetic, _ = evaluate(model, all_fact_samples(), max_new_tokens=40, batch_size=100)
    model.save(out)
    shutil.rmtree(raw, ignore_errors=True)
    return {
        "parameters": sum(p.numel() for p in model.model.parameters()),
        "reader": reader,
        "reader_cell_accuracy": reader["heldout_cell_accuracy"],
        "caption_accuracy": reading,
        "arithmetic_accuracy": arithmetic.overall,
        "n_captions": len(train),
        "n_facts": len(facts),
        "steps": run.steps,
        "first_loss": run.first_loss,
        "last_loss": run.last_loss,
        "wall_s": round(time.perf_counter() - start, 2),
    }


class JobRunner:
    """Runs job functions inline (`workers=1`) or in a pool of spawned worker processes."""

    def __init__(self, workers: int = 1, threads: int = 1) -> None:
        self.workers = max(1, workers)
        self.threads = threads
        self._pool: ProcessPoolExecutor | None = None

    def map(
        self,
        fn: Callable[[dict[str, Any]], dict[str, Any]],
        specs: Sequence[dict[str, Any]],
        on_done: Callable[[int, dict[str, Any]], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Results in the order of `specs`; `on_done(i, result)` as each finishes (for logs)."""
        if self.workers == 1 or len(specs) <= 1:
            out = []
            for i, spec in enumerate(specs):
                out.append(fn(spec))
                if on_done:
                    on_done(i, out[-1])
            return out
        futures: list[Future] = [self._executor().submit(fn, spec) for spec in specs]
        index = {f: i for i, f in enumerate(futures)}
        from concurrent.futures import as_completed

        results: list[dict[str, Any] | None] = [None] * len(specs)
        for f in as_completed(futures):
            i = index[f]
            results[i] = f.result()
            if on_done:
                on_done(i, results[i])  # type: ignore[arg-type]
        return results  # type: ignore[return-value]

    def submit(
        self, fn: Callable[[dict[str, Any]], dict[str, Any]], spec: dict[str, Any]
    ) -> Future:
        """Start one job and return at once (inline: run it now): later stages can go on while a
        long job (the target's pretraining) holds one worker, and `map` shares the pool with it."""
        if self.workers == 1:
            done: Future = Future()
            try:
                done.set_result(fn(spec))
            except Exception as exc:  # re-raised by .result(), as from a worker; Ctrl-C is not
                done.set_exception(exc)
            return done
        return self._executor().submit(fn, spec)

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            import multiprocessing

            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(self.threads,),
            )
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
