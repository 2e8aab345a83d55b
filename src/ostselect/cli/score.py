"""`ost score`: one-step-train utilities for every pool sample, written as a scores table."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from ostselect.cli.common import console, fail, progress

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
    "Example:  ost score --proxy runs/proxy-warm --pool data/pool.jsonl "
    "--anchors data/anchors.jsonl --out runs/scores.parquet --mode hybrid --cutoff 20%"
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
        seed: int = typer.Option(0, "--seed"),
    ) -> None:
        from pydantic import ValidationError

        from ostselect.scoring import ScoreConfig

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
        for label, path in (("--proxy", proxy), ("--pool", pool), ("--anchors", anchors)):
            if not path.exists():
                fail(f"{label} {path} does not exist")
        _run(config, proxy, pool, anchors, out, params, lora_layers, _device(device))


def _run(
    config,
    proxy_dir: Path,
    pool: Path,
    anchors: Path,
    out: Path,
    params: str | None,
    lora_layers: str,
    device: str,
) -> None:
    from ostselect.data import PoolError, RejectsWriter, count_records, iter_samples
    from ostselect.proxy import load_proxy
    from ostselect.scores import read_provenance, write_scores
    from ostselect.scoring import score

    console.print(f"loading proxy {proxy_dir} ({config.dtype}, {device})")
    try:
        model = load_proxy(
            proxy_dir, dtype=config.dtype, device=device, params=params, lora_layers=lora_layers
        )
    except (OSError, ValueError) as err:
        fail(f"cannot load proxy {proxy_dir}: {err}")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        total = count_records(pool)
    except (PoolError, OSError):
        total = None
    started = time.perf_counter()
    with RejectsWriter(out.parent, stage="score") as rejects, progress() as bar:
        tasks: dict[str, int] = {}
        done: dict[str, int] = {}

        def tick(phase: str, n: int, phase_total: int | None) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=phase_total or total, rate="")
                done[phase] = 0
            done[phase] += n
            rate = done[phase] / max(time.perf_counter() - started, 1e-9)
            bar.update(tasks[phase], advance=n, rate=f"{rate:,.2f} samples/s")

        try:
            anchor_samples = list(iter_samples(anchors, rejects=rejects))
            table = score(pool, anchor_samples, model, config, progress=tick, on_reject=rejects.add)
        except PoolError as err:
            fail(str(err))
        except ValueError as err:
            fail(str(err))
    provenance = read_provenance(table)
    provenance["proxy"] = str(proxy_dir)
    write_scores(table, out, provenance)
    counts = provenance["counts"]
    toxic = sum(table.column("toxic").to_pylist())
    console.print(
        f"[bold green]scored[/] {counts['ok']:,} of {counts['scored']:,} samples "
        f"({counts.get('nonfinite', 0)} non-finite, {counts.get('error', 0)} unreadable; "
        f"{toxic:,} toxic) in {provenance['wall_time_s']:.1f}s -> {out}"
    )
    if "hybrid" in provenance:
        h = provenance["hybrid"]
        console.print(
            f"hybrid: {h['rescored']} re-scored exactly; calibration Spearman "
            f"{h['calibration_spearman']:.4f} on {h['calibration_size']} samples"
        )
    if rejects.total:
        console.print(f"{rejects.total} rejects -> {rejects.path}")
