"""`ost warmup`: briefly train the proxy on a seeded fraction of the pool; keep the AdamW state."""

from __future__ import annotations

from pathlib import Path

import typer

from ostselect.cli.common import (
    DEVICE,
    POOL,
    check_proxy_folder,
    console,
    count_of_all,
    fail,
    load_proxy_or_fail,
    progress,
    require_positive_finite,
    resolve_device,
)

HELP = (
    "Warm up a proxy: train it with AdamW + a cosine schedule on a seeded random --fraction of "
    "POOL, then save it to OUT with its optimizer state (moments, step count, next lr) and the ids "
    "it trained on, so `ost score` takes exactly the next AdamW step training would take. The "
    "schedule spans a full run over the pool (the paper's best proxy is the 5% checkpoint of such "
    "a run).\n\n"
    "Example:  ost warmup --proxy runs/proxy --pool data/pool.jsonl --fraction 0.05 "
    "--out runs/proxy-warm --lr 1e-4 --batch-size 8"
)


def register(app: typer.Typer) -> None:
    @app.command("warmup", help=HELP)
    def warmup_command(
        proxy: Path = typer.Option(..., "--proxy", help="Proxy folder to start from."),
        pool: Path = POOL,
        out: Path = typer.Option(..., "--out", "-o", help="Folder for the warmed-up proxy."),
        fraction: float = typer.Option(
            0.05, "--fraction", help="Share of the usable pool samples to train on, in (0, 1]."
        ),
        lr: float = typer.Option(1e-4, "--lr", help="Peak learning rate (positive, finite)."),
        batch_size: int = typer.Option(8, "--batch-size", min=1),
        epochs: int = typer.Option(1, "--epochs", min=1),
        seed: int = typer.Option(0, "--seed"),
        weight_decay: float = typer.Option(0.01, "--weight-decay", min=0.0),
        params: str | None = typer.Option(None, "--params", help="all, lora or a regex."),
        lora_layers: str = typer.Option("all", "--lora-layers", help="all or top-half."),
        dtype: str = typer.Option(
            "float32",
            "--dtype",
            help="float32, float64, or bfloat16/float16: mixed precision (float32 weights and "
            "moments, forward under autocast; the folder is saved in float32).",
        ),
        device: str = DEVICE,
        image_root: Path | None = typer.Option(
            None, "--image-root", help="Folder that relative image paths are resolved against."
        ),
        format: str = typer.Option(
            "auto", "--format", "-f", help="auto, messages, llava, parquet or hf."
        ),
    ) -> None:
        from ostselect.data import FORMATS, PoolError, RejectsWriter, iter_samples
        from ostselect.data.rejects import MISSING_IMAGE
        from ostselect.proxy.warmup import WarmupConfig, loss_not_lowered, warmup

        if not 0 < fraction <= 1:
            fail(f"--fraction must be in (0, 1], got {fraction}")
        require_positive_finite("--lr", lr, "1e-4")
        if format not in FORMATS:
            fail(f"--format {format!r} is not known: use one of {', '.join(FORMATS)}")
        for label, path in (("--proxy", proxy), ("--pool", pool)):
            if not path.exists():
                fail(f"{label} {path} does not exist")
        if image_root is not None and not image_root.is_dir():
            fail(f"--image-root {image_root} is not a folder: pass the folder holding the images")
        check_proxy_folder(proxy)
        device = resolve_device(device)
        # bf16/fp16: mixed precision, the proxy's float32 weights are the master copy (autocast)
        low = dtype in ("bfloat16", "float16")
        config = WarmupConfig(
            compute_dtype=dtype if low else None,
            fraction=fraction,
            lr=lr,
            batch_size=batch_size,
            epochs=epochs,
            seed=seed,
            weight_decay=weight_decay,
        )
        out.mkdir(parents=True, exist_ok=True)
        with RejectsWriter(out, stage="warmup") as rejects:
            try:
                samples = list(
                    iter_samples(pool, image_root=image_root, rejects=rejects, format=format)
                )
            except PoolError as err:
                fail(str(err))
        if not samples:
            if not rejects.total:
                fail(f"--pool {pool} holds no records")
            lost = rejects.counts.get(MISSING_IMAGE) and image_root is None
            fail(
                f"--pool {pool} holds no usable sample: all {rejects.total:,} records were "
                f"rejected (see {rejects.path})"
                + ("; if the images live in another folder, pass --image-root" if lost else "")
            )
        model = load_proxy_or_fail(
            proxy,
            dtype="float32" if low else dtype,
            device=device,
            params=params,
            lora_layers=lora_layers,
        )
        n = max(1, round(fraction * len(samples)))
        with progress() as bar:
            task = bar.add_task("warm-up", total=n * epochs)

            def tick(k: int, loss: float) -> None:  # per optimizer step
                bar.update(task, advance=k, note=f"loss {loss:.3f}")

            path, result = warmup(model, samples, out, config, progress=tick)
        usable = [f"--fraction {fraction:g} of the {len(samples):,} usable"]
        n_read = len(samples) + rejects.total
        trained = count_of_all(len(result.trained_ids), n_read, rejects.total, rejects.path, usable)
        console.print(
            f"[bold green]warmed up[/] on {trained}, "
            f"{result.steps} steps (loss of its samples {_loss(result.loss_before)} -> "
            f"{_loss(result.loss_after)}); "
            f"next lr {result.state.lr:.3g} -> {path}"
            if result.losses
            else f"[yellow]no training step was taken[/] -> {path}"
        )
        if loss_not_lowered(result.loss_before, result.loss_after):
            console.print(
                "[bold yellow]warning:[/] the warm-up did not lower the loss of its own samples: "
                "the proxy learned nothing from the pool and its scores would be noise (raise "
                "--lr, or start from a pretrained model that can do the task)"
            )
        if result.losses and result.state.lr == 0 < lr:
            console.print(
                "[yellow]note:[/] the schedule has finished (next lr 0): score with --eta, "
                "or warm up with --fraction < 1 to continue it"
            )
        if result.skipped:
            console.print(f"{len(result.skipped)} samples skipped (see metadata warmup.skipped)")


def _loss(value: float | None) -> str:
    return "?" if value is None else f"{value:.3f}"
