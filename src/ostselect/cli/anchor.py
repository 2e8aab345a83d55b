"""`ost anchor`: draw a stratified, seeded anchor set from held-out data; check pool overlaps."""

from __future__ import annotations

from pathlib import Path

import typer

from ostselect.cli.common import console, fail

HELP = (
    "Draw SIZE anchors from HELDOUT, proportionally per stratum of --stratify-by (at least one per "
    "stratum when SIZE allows), with a seeded draw inside each stratum.\n\n"
    "Writes FILE (messages JSONL) and FILE.strata.json (strata counts, seed, ids); with --pool, "
    "prints anchors that also appear in the pool (same id or same content): scoring a sample "
    "against itself inflates its utility. Unusable held-out records go to FILE's folder/"
    "rejects.jsonl.\n\n"
    "Example:  ost anchor --from data/heldout.jsonl --size 100 --stratify-by category --seed 0 "
    "--out runs/anchors.jsonl --pool data/pool.jsonl"
)


def register(app: typer.Typer) -> None:
    @app.command("anchor", help=HELP)
    def anchor(
        heldout: Path = typer.Option(..., "--from", help="Held-out pool to draw anchors from."),
        size: int = typer.Option(100, "--size", min=1, help="Number of anchors."),
        stratify_by: str | None = typer.Option(
            None, "--stratify-by", help="Sample field that defines strata (e.g. difficulty)."
        ),
        seed: int = typer.Option(0, "--seed", help="Seed of the draw."),
        out: Path = typer.Option(..., "--out", "-o", help="Anchor file to write (.jsonl)."),
        pool: Path | None = typer.Option(
            None, "--pool", help="Pool to check for overlaps (same formats as --from)."
        ),
        image_root: Path | None = typer.Option(
            None, "--image-root", help="Folder that relative image paths are resolved against."
        ),
    ) -> None:
        from ostselect.data import PoolError, RejectsWriter, iter_samples
        from ostselect.proxy.anchors import build_anchor_set, find_overlaps, write_anchor_set

        if not heldout.exists():
            fail(f"--from {heldout} does not exist: pass the held-out pool file or folder")
        if pool is not None and not pool.exists():
            fail(f"--pool {pool} does not exist")
        if out.exists() and out.is_dir():
            fail(f"--out {out} is a folder: pass a file name such as anchors.jsonl")
        try:
            with RejectsWriter(out.parent, stage="anchor") as rejects:
                samples = list(iter_samples(heldout, image_root=image_root, rejects=rejects))
                if not samples:
                    fail(f"--from {heldout} holds no usable samples: see {rejects.path}")
                if stratify_by is not None and all(stratify_by not in s.extra for s in samples):
                    fields = sorted({k for s in samples for k in s.extra}) or ["none"]
                    fail(
                        f"--stratify-by {stratify_by}: no sample of --from {heldout} has this "
                        f"field; its fields are {', '.join(fields)}"
                    )
                anchors = build_anchor_set(
                    samples, size, stratify_by=stratify_by, seed=seed, source=str(heldout)
                )
                out_path, strata_path = write_anchor_set(anchors, out)
        except PoolError as e:
            fail(f"--from {e}")
        try:
            overlaps = (
                find_overlaps(anchors.samples, iter_samples(pool, image_root=image_root))
                if pool is not None
                else None
            )
        except PoolError as e:
            fail(f"--pool {e}")
        if len(anchors.samples) < size:
            console.print(
                f"[yellow]note:[/] {heldout} has {len(samples)} usable samples; "
                f"drew all {len(anchors.samples)}"
            )
        strata = ", ".join(f"{k}: {v}" for k, v in anchors.strata.items())
        console.print(f"wrote {len(anchors.samples)} anchors -> {out_path} ({strata})")
        console.print(f"strata, seed and ids -> {strata_path}")
        if rejects.total:
            console.print(f"{rejects.total} unusable held-out records -> {rejects.path}")
        if overlaps is not None:
            if overlaps:
                console.print(
                    f"[yellow]warning:[/] {len(overlaps.overlaps)} anchors overlap the pool:"
                )
                for line in overlaps.lines():
                    console.print(f"  {line}")
            else:
                console.print(f"no anchor overlaps the pool {pool}")
