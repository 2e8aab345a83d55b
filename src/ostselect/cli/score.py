"""`ost score`: one-step-train utilities for every pool sample, written as a scores table."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer

from ostselect.cli.common import (
    DEVICE,
    POOL,
    check_proxy_folder,
    console,
    count_of_all,
    fail,
    fail_validation,
    progress,
    resolve_device,
)

if TYPE_CHECKING:
    from rich.progress import TaskID

    from ostselect.interrupt import Interrupted
    from ostselect.progress import LiveProgress

HELP = (
    "Score every sample of POOL by how much one optimizer step on it lowers the proxy's loss on "
    "the anchor set (utility = L_V(theta) - L_V(theta'); > 0 helps, < 0 is flagged toxic).\n\n"
    "Modes: exact (default; the published step/evaluate/restore numbers, computed without "
    "restoring), naive (that reference loop, literally; slow, for checking), first-order (one "
    "backward per sample, approximate), hybrid (first-order, then exact near the --cutoff and "
    "around zero, so the kept set and toxic flags match exact). Optimizer auto = AdamW continuing "
    "the warm-up state when the proxy folder has one, else SGD with --eta.\n\n"
    "Writes OUT (Parquet: id, utility, loss, tokens, rank, toxic, mode, status, utility[<group>]) "
    "with provenance in its metadata, and unusable samples to OUT's folder/rejects.jsonl.\n\n"
    "The pool is scored in shards of --shard-size samples; finished shards are kept in "
    "OUT.shards/ (hybrid: OUT.first-order.shards/ and OUT.exact.shards/), so a run that was "
    "killed or pre-empted continues with --resume (refused if anything that changes the numbers "
    "differs: proxy, anchors, pool, mode, eta, ...). Ctrl-C or SIGTERM lets the shard being "
    "written finish, says what is kept and prints the command that resumes (exit code 130). "
    "--backend ray spreads the shards over a Ray actor pool, one proxy per worker; results equal "
    "the local backend (its progress moves per shard, the local one per batch).\n\n"
    "Examples:\n\n"
    "  ost score --proxy runs/proxy-warm --pool data/pool.jsonl --anchors data/anchors.jsonl "
    "--out runs/scores.parquet --mode hybrid --cutoff 20%\n\n"
    "  ost score ... --out runs/scores.parquet --resume   (continue a killed run)\n\n"
    "  ray start --head --num-gpus 8   (on the head node; `ray start --address HEAD:6379` on "
    "the others), then:  ost score --proxy runs/proxy-warm --pool data/pool.jsonl --anchors "
    "data/anchors.jsonl --out runs/scores.parquet --backend ray --address auto "
    "--gpus-per-worker 1 --device cuda --resume"
)


def register(app: typer.Typer) -> None:
    @app.command("score", help=HELP)
    def score_command(
        proxy: Path = typer.Option(..., "--proxy", help="Proxy folder (ost proxy init / warmup)."),
        pool: Path = POOL,
        anchors: Path = typer.Option(..., "--anchors", help="Anchor set file (ost anchor)."),
        out: Path = typer.Option(Path("scores.parquet"), "--out", "-o", help="Scores Parquet."),
        mode: str = typer.Option("exact", "--mode", help="exact, naive, first-order or hybrid."),
        eta: float | None = typer.Option(
            None, "--eta", "--lr", help="Step size (default: warm-up's next lr; SGD 1e-3)."
        ),
        optimizer: str = typer.Option("auto", "--optimizer", help="auto, sgd or adamw."),
        dtype: str = typer.Option(
            "float32", "--dtype", help="float32, bfloat16, float16 or float64."
        ),
        device: str = DEVICE,
        batch_size: int = typer.Option(8, "--batch-size", min=1, help="Candidates per batch."),
        anchor_batch_size: int = typer.Option(32, "--anchor-batch-size", min=1),
        candidate_batch: int = typer.Option(
            1,
            "--candidate-batch",
            min=1,
            help="exact/hybrid: candidates evaluated against the anchors in one batched pass "
            "(for a GPU; keep 1 on CPU, where it is slower).",
        ),
        params: str | None = typer.Option(
            None, "--params", help="all, lora or a regex (default: the folder's own selection)."
        ),
        lora_layers: str = typer.Option("all", "--lora-layers", help="all or top-half."),
        cutoff: str = typer.Option("20%", "--cutoff", help="Kept fraction for hybrid's band."),
        calibration_size: int = typer.Option(
            64,
            "--calibration-size",
            min=2,
            help="hybrid: samples scored both ways to fit the error band (a pool no larger is "
            "scored exactly at once).",
        ),
        group_field: str | None = typer.Option(
            None, "--group-field", help="Anchor field for per-group utility columns."
        ),
        seed: int = typer.Option(
            0, "--seed", help="Seeds hybrid's calibration draw and a fresh LoRA's initialisation."
        ),
        image_root: Path | None = typer.Option(
            None, "--image-root", help="Folder relative image paths resolve against."
        ),
        resume: bool = typer.Option(
            False, "--resume", help="Continue the finished shards of an earlier run into OUT."
        ),
        shard_size: int = typer.Option(
            256, "--shard-size", min=1, help="Samples per shard (the unit of resume and of work)."
        ),
        backend: str = typer.Option("local", "--backend", help="local (this process) or ray."),
        address: str | None = typer.Option(
            None,
            "--address",
            help="Ray cluster to join: auto or HOST:PORT (default: start a local Ray).",
        ),
        num_workers: int | None = typer.Option(
            None, "--num-workers", min=1, help="Ray actors (default: one per CPU / per GPU share)."
        ),
        gpus_per_worker: float = typer.Option(
            0.0, "--gpus-per-worker", min=0.0, help="GPUs each Ray actor reserves (e.g. 1 or 0.5)."
        ),
        quiet: bool = typer.Option(
            False, "--quiet", "-q", help="No progress display (the summary and errors still print)."
        ),
    ) -> None:
        from pydantic import ValidationError

        from ostselect.scoring import ScoreConfig
        from ostselect.scoring.updates import StepSizeError, check_step_size

        if eta is not None:  # before ScoreConfig, whose message would name `lr`
            try:
                check_step_size(eta)
            except StepSizeError as err:
                fail(str(err))
        try:
            config = ScoreConfig(
                mode=mode,
                optimizer=optimizer,
                eta=eta,
                dtype=dtype,
                device=device,
                batch_size=batch_size,
                anchor_batch_size=anchor_batch_size,
                candidate_batch=candidate_batch,
                cutoff=cutoff,
                calibration_size=calibration_size,
                seed=seed,
                group_field=group_field,
            )
        except ValidationError as err:
            fail_validation(err, {"lr": "--eta", "eta": "--eta"})
        if backend not in ("local", "ray"):
            fail(f"--backend must be local or ray, not {backend!r}")
        if backend == "local" and (address or num_workers or gpus_per_worker):
            fail("--address, --num-workers and --gpus-per-worker need --backend ray")
        for label, path in (("--proxy", proxy), ("--pool", pool), ("--anchors", anchors)):
            if not path.exists():
                fail(f"{label} {path} does not exist")
        check_proxy_folder(proxy)
        if backend == "local":
            resolve_device(device)
        engine = {
            "resume": resume,
            "shard_size": shard_size,
            "backend": backend,
            "address": address,
            "num_workers": num_workers,
            "gpus_per_worker": gpus_per_worker,
        }
        _run(config, proxy, pool, anchors, out, params, lora_layers, image_root, engine, quiet)


def _run(
    config,
    proxy_dir: Path,
    pool: Path,
    anchors: Path,
    out: Path,
    params: str | None,
    lora_layers: str,
    image_root: Path | None,
    engine: dict,
    quiet: bool = False,
) -> None:
    from ostselect.data import PoolError, count_records, iter_samples
    from ostselect.engine import StoreError
    from ostselect.engine.ray_backend import ShardFailedError
    from ostselect.interrupt import Interrupted, stop_on_signals
    from ostselect.proxy.folder import NotAModelFolderError
    from ostselect.scores import ranking_alerts, read_scores
    from ostselect.scoring.driver import OSTScorerFactory, score_pool
    from ostselect.scoring.updates import StepSizeError

    bad_anchors = []
    try:
        n_anchors = sum(
            1
            for _ in iter_samples(
                anchors, image_root=image_root, on_record=lambda r: _collect(r, bad_anchors)
            )
        )
    except (PoolError, OSError) as err:
        fail(f"cannot read --anchors {anchors}: {err}")
    for r in bad_anchors[:5]:
        console.print(f"[yellow]anchor skipped:[/] {r}")
    if not n_anchors:
        fail(f"--anchors {anchors} holds no usable sample")
    factory = OSTScorerFactory(
        proxy_dir=str(proxy_dir),
        anchors_path=str(anchors),
        config=config,
        params=params,
        lora_layers=lora_layers,
        image_root=str(image_root) if image_root is not None else None,
    )
    try:
        total = count_records(pool)
    except (PoolError, OSError):
        total = None
    if not quiet:
        console.print(
            f"scoring {pool} ({total if total is not None else '?'} records) with {proxy_dir}: "
            f"{config.mode}, {config.dtype}, backend {engine['backend']}"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        with progress(quiet=quiet) as bar, stop_on_signals():
            tick = _Ticker(bar, total)
            score_pool(pool, factory, out, progress=tick, **engine)
            tick.finish()
    except Interrupted as stop:
        _stopped(stop, out, config.mode)
    except StoreError as err:
        fail(_store_message(err, out))
    except ShardFailedError as err:
        fail(str(err))
    except (PoolError, StepSizeError) as err:
        fail(str(err))
    except NotAModelFolderError as err:
        fail(f"--proxy {err}")
    except (OSError, ValueError, RuntimeError) as err:
        fail(f"scoring {pool} stopped: {err}")
    scores = read_scores(out)
    provenance = scores.provenance
    counts = provenance["counts"]
    toxic = sum(scores.table.column("toxic").to_pylist())
    resumed = provenance.get("engine", {}).get("shards_resumed", 0)
    rejects = out.parent / "rejects.jsonl"
    n_rejects = _count_lines(rejects)  # reader's and workers' rejects of this run, one a line
    failed = {"nonfinite": "non-finite", "error": "unreadable", "oom": "out of memory"}
    notes = [f"{counts[k]:,} {what}" for k, what in failed.items() if counts.get(k)]
    scored = count_of_all(
        counts.get("ok", 0),
        counts["scored"] + n_rejects,
        n_rejects,
        rejects,
        [*notes, f"{toxic:,} toxic"],
    )
    console.print(
        f"[bold green]scored[/] {scored} in {time.perf_counter() - started:.1f}s"
        + (f", {resumed} shard(s) resumed" if resumed else "")
        + f" -> {out}"
    )
    for alert in ranking_alerts(scores.utility, provenance):
        console.print(f"[bold yellow]warning:[/] {alert}")
    if "hybrid" in provenance:
        h = provenance["hybrid"]
        if h.get("exact_instead") and not h["rounds"]:
            console.print(f"hybrid ran exact instead: {h['exact_instead']}")
            return
        console.print(
            f"hybrid: {h['rescored']} re-scored exactly in {h['rounds']} round(s); calibration "
            f"Spearman {h['calibration_spearman']:.4f} on {h['calibration_size']} samples"
        )
        if h.get("exact_instead"):
            console.print(f"hybrid fell back to exact: {h['exact_instead']}")


def _collect(record, into: list) -> None:
    from ostselect.data import Reject

    if isinstance(record, Reject):
        into.append(record)


def _count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as fh:
        return sum(1 for _ in fh)


class _Ticker:
    """One progress task per pass of `score_pool` (the mode; hybrid: first-order, exact rounds).

    Reports arrive per batch on the local backend and per shard on Ray; shards kept from an
    earlier run move the count at once, not the rate (`LiveProgress` measures new work only).
    """

    def __init__(self, bar: LiveProgress, total: int | None) -> None:
        self._bar = bar
        self._total = total
        self._tasks: dict[str, TaskID] = {}
        self._current: TaskID | None = None

    def __call__(self, label: str, n: int, resumed: bool) -> None:
        if label not in self._tasks:  # a pass begins (score_pool reports 0 samples first)
            self.finish()
            self._current = self._bar.add_task(f"scoring {label}", total=self._total)
            self._tasks[label] = self._current
        if n:
            self._bar.advance(self._tasks[label], n, resumed=resumed)

    def finish(self) -> None:
        """End the current pass's bar at what it did: records the reader rejected never come."""
        if self._current is None:
            return
        task = next(t for t in self._bar.tasks if t.id == self._current)
        self._bar.update(self._current, total=task.completed)
        self._current = None


def _stopped(stop: Interrupted, out: Path, mode: str) -> NoReturn:
    """Say what an interrupted run kept and the command that continues it; exit 130."""
    from rich.text import Text

    from ostselect.interrupt import EXIT_INTERRUPTED
    from ostselect.scoring.driver import kept_shards

    kept = kept_shards(out, mode)
    if not kept:
        what = "no shard was finished yet, so nothing is kept."
    else:
        shards = sum(k.shards for k in kept)
        samples = sum(k.samples for k in kept)
        where = ", ".join(f"{k.store}/" for k in kept)
        what = (
            f"{samples:,} scored samples in {shards:,} finished shard(s) are kept in {where}; "
            "a shard that was in progress is scored again on resume."
        )
    command = _resume_command(sys.argv)
    then = (
        f"Continue with:\n  {command}"
        if command is not None
        else "Continue with the same `ost score` command plus --resume."
    )
    message = Text.assemble(
        ("interrupted", "bold yellow"), f" ({stop.signal_name}): {what}\n{then}"
    )
    console.print(message, soft_wrap=True, highlight=False)
    raise typer.Exit(EXIT_INTERRUPTED)


def _resume_command(argv: list[str]) -> str | None:
    """This command line with `--resume` added, ready to paste; None when argv is not ours
    (e.g. the command was invoked in-process, as tests do, and argv is pytest's)."""
    import shlex
    import shutil

    if len(argv) < 2 or argv[1] != "score":
        return None
    program = argv[0]
    if Path(program).name == "__main__.py":  # python -m ostselect
        head = [sys.executable, "-m", "ostselect"]
    else:
        found = shutil.which(Path(program).name)
        same = found is not None and Path(found).resolve() == Path(program).resolve()
        head = [Path(program).name if same else program]
    args = argv[1:]
    if "--resume" not in args:
        args = [*args, "--resume"]
    return shlex.join([*head, *args])


# Fingerprint fields (OSTScorerFactory.fingerprint) in the words of this command's flags.
_FINGERPRINT_FLAGS = {
    "pool": "--pool (the pool file's content)",
    "proxy.content_hash": "--proxy (the folder's content)",
    "proxy.params": "--params",
    "proxy.lora_layers": "--lora-layers",
    "anchor_hash": "--anchors (their content)",
    "mode": "--mode",
    "config.mode": "--mode",
    "config.eta": "--eta",
    "config.lr": "--eta",  # stores written before the step size was named eta
    "config.group_field": "--group-field",
    "config.calibration_size": "--calibration-size",
    "config.band_safety": "--band-safety",
}


def _store_message(err: Exception, out: Path) -> str:
    """A store refusal in this command's terms: the flags whose values differ, not field names."""
    differences = getattr(err, "differences", None)
    if not differences:
        return str(err)
    flags = []
    for name in differences:
        field = name.removeprefix("fingerprint.")  # the store's manifest nests it
        flag = _FINGERPRINT_FLAGS.get(field)
        if flag is None and field.startswith("config."):
            flag = "--" + field.removeprefix("config.").replace("_", "-")
        flags.append(flag or name)
    return (
        f"cannot resume {out}: its finished shards were scored with another "
        f"{', '.join(dict.fromkeys(flags))}; rerun with the same values, or score into a new --out"
    )
