"""`ost select`: apply a selection policy to a scores table; write the subset in its format."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ostselect.cli.common import POOL, console, fail, fail_validation

if TYPE_CHECKING:
    from rich.table import Table

    from ostselect.data.subset_images import SubsetImages
    from ostselect.select import CoverageReport

HELP = (
    "Keep the most useful samples of POOL according to a scores table, without rescoring.\n\n"
    "Limits combine: --top (a count or a percentage of the scored samples), --budget-tokens "
    "(supervised tokens, greedy by utility), --drop-toxic (utility < 0), --min-utility. "
    "--balance-by FIELD keeps per-stratum quotas (the pool's proportions, or --balance equal); "
    "--dedup removes near-duplicates among the kept samples, keeping the higher utility.\n\n"
    "--policy decides the order samples are offered to those limits: topk (by utility, the "
    "default), coverage (lazy greedy on F(S) = sum_g w_g log1p(mass_g / tau_g) over the "
    "per-anchor-group utilities, so every anchor group keeps samples that help it) or consensus "
    "(the samples in the top k of the most anchor groups first). coverage, consensus and "
    "--normalize group-z need scores made with `ost score --group-field FIELD`.\n\n"
    "Writes OUT/<pool file name> (the kept records, unchanged, in the pool's own format), "
    "OUT/selection.json (counts, tokens, strata, thresholds, why each other sample was dropped, "
    "per-anchor-group coverage, the scores' provenance) and OUT/rejects.jsonl for unusable pool "
    "records. Refuses scores made on another pool (missing ids, another pool fingerprint) "
    "unless --force. With no limit every scored sample is kept (a warning says so).\n\n"
    "Relative image paths in the kept records still point into the pool's folder. --copy-images "
    "puts each kept record's image files in OUT/images/ and rewrites only those paths (every "
    "other byte of a JSON record, every other Parquet value, stays), so OUT can be moved or "
    "shipped; --link-images symlinks the pool's files instead (this machine only; copies where "
    "links are impossible). Images embedded as bytes (data: URLs, Parquet/datasets bytes) need "
    "nothing. --llamafactory also writes OUT/dataset_info.json (merged into an existing one) "
    "with a sharegpt entry named after OUT, and says which kept records LLaMA-Factory would "
    "skip or refuse; train with dataset_dir: OUT.\n\n"
    "Example:  ost select --pool data/pool.jsonl --scores runs/scores.parquet --out runs/top20 "
    "--top 20% --drop-toxic"
)


def register(app: typer.Typer) -> None:
    @app.command("select", help=HELP)
    def select_cmd(
        pool: Path = POOL,
        scores: Path = typer.Option(..., "--scores", help="Scores Parquet (ost score/baseline)."),
        out: Path = typer.Option(..., "--out", "-o", help="Output folder (created if needed)."),
        top: str | None = typer.Option(None, "--top", help="Keep the top N or P% (e.g. 20%)."),
        budget_tokens: int | None = typer.Option(
            None, "--budget-tokens", min=0, help="Supervised-token budget for the subset."
        ),
        budget_fill: bool = typer.Option(
            False,
            "--budget-fill",
            help="Skip samples that do not fit the budget and keep filling (default: stop).",
        ),
        drop_toxic: bool = typer.Option(False, "--drop-toxic", help="Drop utility < 0."),
        min_utility: float | None = typer.Option(
            None, "--min-utility", help="Drop samples below this utility."
        ),
        balance_by: str | None = typer.Option(
            None, "--balance-by", help="Sample field that defines strata (e.g. category)."
        ),
        balance: str = typer.Option(
            "proportional", "--balance", help="proportional (pool's shares) or equal."
        ),
        dedup: str = typer.Option("none", "--dedup", help="none, hash or embedding (MiniLM)."),
        dedup_threshold: float = typer.Option(
            0.95, "--dedup-threshold", help="Cosine similarity for --dedup embedding."
        ),
        policy_name: str = typer.Option(
            "topk", "--policy", help="topk (by utility), coverage or consensus (anchor groups)."
        ),
        normalize: str = typer.Option(
            "none",
            "--normalize",
            help="none, group-z (standardise each anchor group) or stratum-rank (rank within "
            "--balance-by strata).",
        ),
        group_weights: str | None = typer.Option(
            None,
            "--group-weights",
            help="Anchor-group weights, e.g. 'read=2,add=1' (every group; default: anchor share).",
        ),
        coverage_tau: float | None = typer.Option(
            None, "--coverage-tau", help="tau for every group (default: from the data)."
        ),
        force: bool = typer.Option(
            False, "--force", help="Select even if the scores were made on another pool."
        ),
        image_root: Path | None = typer.Option(
            None, "--image-root", help="Folder that relative image paths are resolved against."
        ),
        copy_images: bool = typer.Option(
            False, "--copy-images", help="Copy the kept images into OUT/images/ (self-contained)."
        ),
        link_images: bool = typer.Option(
            False, "--link-images", help="Symlink them into OUT/images/ instead (saves disk)."
        ),
        llamafactory: bool = typer.Option(
            False, "--llamafactory", help="Also write OUT/dataset_info.json for LLaMA-Factory."
        ),
    ) -> None:
        from pydantic import ValidationError

        from ostselect.data import PoolError, RejectsWriter, write_subset
        from ostselect.data.subset_images import SubsetImages
        from ostselect.select import ProvenanceMismatchError, SelectionPolicy, select

        if copy_images and link_images:
            fail("--copy-images and --link-images are mutually exclusive: pass one of them")
        if not pool.exists():
            fail(f"--pool {pool} does not exist")
        if llamafactory and pool.is_dir():
            fail(
                f"--llamafactory: LLaMA-Factory reads JSON, JSONL or Parquet files, not the "
                f"`datasets` folder {pool}: export it with `Dataset.to_parquet`, select from that"
            )
        if llamafactory:
            from ostselect.data.llamafactory import read_dataset_info

            try:
                read_dataset_info(out)  # an existing file it cannot merge into: say so now
            except ValueError as e:
                fail(f"--llamafactory: {e}")
        if not scores.exists():
            fail(f"--scores {scores} does not exist: run `ost score` first")
        subset_path = out / pool.name
        if subset_path.resolve() == pool.resolve():
            fail(f"--out {out} would overwrite the pool itself: choose another folder")
        try:
            policy = SelectionPolicy(
                top=top,
                budget_tokens=budget_tokens,
                budget_fill=budget_fill,
                drop_toxic=drop_toxic,
                min_utility=min_utility,
                balance_by=balance_by,
                balance=balance,
                dedup=dedup,
                dedup_threshold=dedup_threshold,
                policy=policy_name,
                normalize=normalize,
                group_weights=group_weights,
                coverage_tau=coverage_tau,
            )
        except ValidationError as e:
            fail_validation(e)
        out.mkdir(parents=True, exist_ok=True)
        try:
            with RejectsWriter(out, stage="select") as rejects:
                selection = select(
                    scores, pool, policy, force=force, image_root=image_root, rejects=rejects
                )
        except ProvenanceMismatchError as e:
            fail(str(e))
        except (PoolError, RuntimeError, ValueError) as e:
            fail(str(e))
        if not policy.has_limit:  # after the refusals: a refused run keeps nothing
            console.print(
                "[yellow]warning:[/] no limit given, so every scored sample is kept"
                + (" (near-duplicates aside)" if policy.dedup != "none" else "")
                + ": set one with --top, --budget-tokens, --min-utility or --drop-toxic",
                soft_wrap=True,
            )
        placer = None
        if copy_images or link_images:
            mode = "copy" if copy_images else "link"
            placer = SubsetImages.for_subset(mode, pool, subset_path, image_root)
        written = write_subset(
            pool,
            selection.kept_ids,
            subset_path,
            image_root=image_root,
            images=placer if placer is not None else "keep",
        )
        selection.write_json(out / "selection.json")
        _print_summary(selection, written, subset_path, rejects.total)
        if placer is not None:
            _print_images(placer)
        else:
            image_base = image_root or (pool if pool.is_dir() else pool.parent)
            if not pool.is_dir() and out.resolve() != image_base.resolve():
                console.print(
                    f"note: kept records are unchanged, so relative image paths in them still "
                    f"resolve against {image_base}: read the subset with --image-root "
                    f"{image_base}, or select again with --copy-images / --link-images"
                )
        if llamafactory:
            _write_llamafactory(out, subset_path)


def _print_images(placer: SubsetImages) -> None:
    """Where the kept images went, and anything the user must know about them (one line each)."""
    from rich.markup import escape

    c = placer.counts
    if c.files:
        how = f"{c.linked:,} linked" if c.linked else ""
        how += (", " if how and c.copied else "") + (f"{c.copied:,} copied" if c.copied else "")
        console.print(
            f"images: {how} into {placer.images_dir}; image paths in the subset now point there",
            soft_wrap=True,
        )
    elif not c.missing:
        console.print(
            "images: none to place (every kept image is embedded as bytes, or there are none)",
            soft_wrap=True,
        )
    if c.link_error is not None:
        console.print(
            f"note: symlinks are not possible here ({c.link_error}): images were copied instead",
            soft_wrap=True,
        )
    if c.missing:
        n = len(c.missing)
        console.print(
            f"[yellow]warning:[/] {n:,} image file{'s' * (n != 1)} not found (e.g. "
            f"{escape(c.missing[0])}): their paths were left as they were",
            soft_wrap=True,
        )


def _write_llamafactory(out: Path, subset_path: Path) -> None:
    """dataset_info.json beside the subset, then what LLaMA-Factory would refuse in it."""
    from rich.markup import escape

    from ostselect.data.llamafactory import llamafactory_entry, write_dataset_info

    try:
        handoff = llamafactory_entry(subset_path)
        info, name = write_dataset_info(out, out.resolve().name, handoff.entry)
    except ValueError as e:
        fail(f"--llamafactory: {e}")
    console.print(
        f"LLaMA-Factory: entry {name!r} in {info}; train with dataset_dir: {out} and "
        f"dataset: {name}",
        soft_wrap=True,
    )
    for reason, (n, first) in sorted(handoff.problems.items(), key=lambda x: -x[1][0]):
        console.print(
            f"[yellow]warning:[/] LLaMA-Factory: {n:,} kept record{'s' * (n != 1)}: "
            f"{escape(reason)} (e.g. {escape(first)})",
            soft_wrap=True,
        )


def _print_summary(selection, written: int, subset_path: Path, n_rejects: int) -> None:
    from rich.table import Table

    for w in selection.warnings:
        console.print(f"[yellow]warning:[/] {w}")
    t = Table(title="selection", show_header=True, header_style="bold")
    t.add_column("stratum")
    t.add_column("pool", justify="right")
    t.add_column("eligible", justify="right")
    t.add_column("quota", justify="right")
    t.add_column("kept", justify="right")
    t.add_column("tokens kept", justify="right")
    for name, c in selection.strata.items():
        quota = "-" if c.quota is None else f"{c.quota:,}"
        t.add_row(
            name, f"{c.pool:,}", f"{c.eligible:,}", quota, f"{c.kept:,}", f"{c.tokens_kept:,}"
        )
    console.print(t)
    if selection.coverage is not None:
        console.print(_coverage_table(selection.coverage))
    for reason, n in sorted(selection.drop_counts.items(), key=lambda x: -x[1]):
        console.print(f"  dropped {n:,}: {reason}")
    cutoff = selection.thresholds["utility_cutoff"]
    console.print(
        f"kept [bold]{len(selection.kept_ids):,}[/] of {selection.n_pool:,} samples "
        f"({selection.tokens_kept:,} of {selection.tokens_scored:,} tokens"
        + (f", utility >= {cutoff:.4g}" if cutoff is not None else "")
        + f") -> {subset_path} ({written:,} records)"
        + (f"; {n_rejects:,} unusable pool records in rejects.jsonl" if n_rejects else "")
    )


def _coverage_table(coverage: CoverageReport) -> Table:
    """Per anchor group: utility mass and main-benefit samples, kept of the pool's."""
    from rich.table import Table

    t = Table(
        title=f"coverage by anchor group (F = {coverage.objective:.4g}; weights: "
        f"{coverage.weights_source.split(' (')[0]})",
        show_header=True,
        header_style="bold",
    )
    t.add_column("anchor group")
    t.add_column("weight", justify="right")
    t.add_column("utility mass kept", justify="right")
    t.add_column("main benefit kept / pool", justify="right")
    for name, g in coverage.groups.items():
        share = "-" if g.mass_share is None else f"{100 * g.mass_share:.1f}%"
        t.add_row(
            name,
            f"{g.weight:.3f}",
            f"{g.mass_kept:.4g} of {g.mass_pool:.4g} ({share})",
            f"{g.main_kept:,} / {g.main_pool:,}",
        )
    return t
