"""`ost score`: one-step-train utilities for every pool sample, written as a scores table."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from ostselect.cli.common import check_proxy_folder, console, fail, progress

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
    "differs: proxy, anchors, pool, mode, eta, ...). --backend ray spreads the shards over a Ray "
    "actor pool, one proxy per worker; results equal the local backend.\n\n"
    "Examples:\n\n"
    "  ost score --proxy runs/proxy-warm --pool data/pool.jsonl --anchors data/anchors.jsonl "
    "--out runs/scores.parquet --mode hybrid --cutoff 20%\n\n"
    "  ost score ... --out runs/scores.parquet --resume   (continue a killed run)\n\n"
    "  ray start --head --num-gpus 8   (on the head node; `ray start --address HEAD:6379` on "
    "the others), then:  ost score --proxy runs/proxy-warm --pool data/pool.jsonl --anchors "
    "data/anchors.jsonl --out runs/scores.parquet --backend ray --address auto "
    "--gpus-per-worker 1 --device cuda --resume"
)


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        fail("--device cuda but no CUDA device is visible: use --device cpu or auto")
    return name


def register(app: typer.Typer) -> None:
    @app.command("score", help=HELP)
    def score_command(
        proxy: Path = typer.Option(..., "--proxy", help="Proxy folder (ost proxy init / warmup)."),
        pool: Path = typer.Option(..., "--pool", help="Pool file or datasets folder to score."),
        anchors: Path = typer.Option(..., "--anchors", help="Anchor set file (ost anchor)."),
        out: Path = typer.Option(Path("scores.parquet"), "--out", "-o", help="Scores Parquet."),
        mode: str = typer.Option("exact", "--mode", help="exact, naive, first-order or hybrid."),
        eta: float | None = typer.Option(
            None, "--eta", "--lr", help="Step size (default: warm-up's next lr; SGD 1e-3)."
        ),
        optimizer: str = typer.Option("auto", "--optimizer", help="auto, sgd or adamw."),
        dtype: str = typer.Option("float32", "--dtype", help="float32, bfloat16 or float64."),
        device: str = typer.Option("auto", "--device", help="cpu, cuda or auto."),
        batch_size: int = typer.Option(8, "--batch-size", min=1, help="Candidates per batch."),
        anchor_batch_size: int = typer.Option(32, "--anchor-batch-size", min=1),
        params: str | None = typer.Option(
            None, "--params", help="all, lora or a regex (default: the folder's own selection)."
        ),
        lora_layers: str = typer.Option("all", "--lora-layers", help="all or top-half."),
        cutoff: str = typer.Option("20%", "--cutoff", help="Kept fraction for hybrid's band."),
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
                lr=eta,
                dtype=dtype,
                device=device,
                batch_size=batch_size,
                anchor_batch_size=anchor_batch_size,
                cutoff=cutoff,
                seed=seed,
                group_field=group_field,
            )
        except ValidationError as err:
            fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()))
        if backend not in ("local", "ray"):
            fail(f"--backend must be local or ray, not {backend!r}")
        if backend == "local" and (address or num_workers or gpus_per_worker):
            fail("--address, --num-workers and --gpus-per-worker need --backend ray")
        for label, path in (("--proxy", proxy), ("--pool", pool), ("--anchors", anchors)):
            if not path.exists():
                fail(f"{label} {path} does not exist")
        check_proxy_folder(proxy)
        if backend == "local":
            _device(device)
        engine = {
            "resume": resume,
            "shard_size": shard_size,
            "backend": backend,
            "address": address,
            "num_workers": num_workers,
            "gpus_per_worker": gpus_per_worker,
        }
        _run(config, proxy, pool, anchors, out, params, lora_layers, image_root, engine)


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
) -> None:
    from ostselect.data import PoolError, count_records, iter_samples
    from ostselect.engine import StoreError
    from ostselect.engine.ray_backend import ShardFailedError
    from ostselect.proxy.folder import NotAModelFolderError
    from ostselect.scores import degenerate_utilities, read_scores
    from ostselect.scoring.engine_scorer import OSTScorerFactory, score_pool
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
    console.print(
        f"scoring {pool} ({total if total is not None else '?'} records) with {proxy_dir}: "
        f"{config.mode}, {config.dtype}, backend {engine['backend']}"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with progress() as bar:
        tick = _Ticker(bar, total)
        try:
            score_pool(pool, factory, out, progress=tick, **engine)
        except StoreError as err:
            fail(str(err))
        except ShardFailedError as err:
            fail(str(err))
        except (PoolError, StepSizeError) as err:
            fail(str(err))
        except NotAModelFolderError as err:
            fail(f"--proxy {err}")
        except (OSError, ValueError, RuntimeError) as err:
            fail(f"{type(err).__name__}: {err}")
    scores = read_scores(out)
    provenance = scores.provenance
    counts = provenance["counts"]
    toxic = sum(scores.table.column("toxic").to_pylist())
    resumed = provenance.get("engine", {}).get("shards_resumed", 0)
    console.print(
        f"[bold green]scored[/] {counts['ok']:,} of {counts['scored']:,} samples "
        f"({counts.get('nonfinite', 0)} non-finite, {counts.get('error', 0)} unreadable; "
        f"{toxic:,} toxic) in {time.perf_counter() - started:.1f}s"
        + (f", {resumed} shard(s) resumed" if resumed else "")
        + f" -> {out}"
    )
    degenerate = degenerate_utilities(scores.utility)
    if degenerate:
        console.print(f"[bold yellow]warning:[/] {degenerate}")
    if "hybrid" in provenance:
        h = provenance["hybrid"]
        console.print(
            f"hybrid: {h['rescored']} re-scored exactly in {h['rounds']} round(s); calibration "
            f"Spearman {h['calibration_spearman']:.4f} on {h['calibration_size']} samples"
        )
    rejects = out.parent / "rejects.jsonl"
    n_rejects = _count_lines(rejects)
    if n_rejects:
        console.print(f"{n_rejects} rejects -> {rejects}")


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
    """One progress task per pass (first-order, exact rounds): samples/s over scored ones, ETA."""

    def __init__(self, bar, total: int | None) -> None:
        self._bar = bar
        self._total = total
        self._tasks: dict[str, int] = {}
        self._scored: dict[str, int] = {}
        self._t0: dict[str, float] = {}
        # Progress arrives per finished shard: a pass's clock starts when the previous one ended
        # (or at start-up), not at its first report, or the first shard's rate is meaningless.
        self._last = time.perf_counter()

    def __call__(self, label: str, n: int, resumed: bool) -> None:
        if label not in self._tasks:
            self._tasks[label] = self._bar.add_task(label, total=self._total, rate="")
            self._scored[label] = 0
            self._t0[label] = self._last
        self._last = time.perf_counter()
        if not resumed:
            self._scored[label] += n
        rate = self._scored[label] / max(self._last - self._t0[label], 1e-9)
        note = " (resumed shards skipped)" if resumed else ""
        self._bar.update(self._tasks[label], advance=n, rate=f"{rate:,.2f} samples/s{note}")
