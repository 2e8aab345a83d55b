"""`ost bench ...` and `ost demo`: the embedded DigitMath benchmark (data, full protocol, demo)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer
from rich.table import Table

from ostselect.cli.common import console, fail

bench_app = typer.Typer(
    name="bench",
    help="The DigitMath benchmark: real handwritten digits, realistic synthetic noise.",
    no_args_is_help=True,
)


def _parse_mix(spec: str | None) -> dict[str, float] | None:
    """'arith_slip=0.5,misread=0.5' -> {'arith_slip': 0.5, 'misread': 0.5}."""
    if not spec:
        return None
    mix: dict[str, float] = {}
    for part in spec.split(","):
        name, sep, value = part.partition("=")
        try:
            mix[name.strip()] = float(value)
        except ValueError:
            fail(f"--noise-mix entry {part!r} is not NAME=WEIGHT (e.g. arith_slip=0.5)")
        if not sep:
            fail(f"--noise-mix entry {part!r} is not NAME=WEIGHT (e.g. arith_slip=0.5)")
    return mix


def _summary_tables(counts: dict) -> list[Table]:
    from ostselect.bench.noise import CLEAN, NOISE_TYPES
    from ostselect.bench.tasks import CAPTION, CATEGORIES

    table = Table(title="DigitMath data")
    table.add_column("split")
    table.add_column("total", justify="right")
    for cat in (*CATEGORIES, CAPTION):
        table.add_column(cat, justify="right")
    for split, entry in counts.items():
        cats = entry["category"]
        table.add_row(
            split, str(entry["total"]), *(str(cats.get(c, 0)) for c in (*CATEGORIES, CAPTION))
        )
    pool = counts.get("pool", {}).get("noise")
    if pool is None:
        return [table]
    noise_table = Table(title="pool noise (hidden: pool.noise.json)")
    noise_table.add_column("type")
    noise_table.add_column("count", justify="right")
    noise_table.add_column("share", justify="right")
    total = max(sum(pool.values()), 1)
    for kind in (CLEAN, *NOISE_TYPES):
        noise_table.add_row(kind, str(pool.get(kind, 0)), f"{pool.get(kind, 0) / total:.1%}")
    return [table, noise_table]


@bench_app.command("data")
def data_command(
    out: Path = typer.Argument(
        ..., help="Output folder (created; an earlier DigitMath run is replaced)."
    ),
    n_pool: int = typer.Option(2000, "--n-pool", help="Candidate pool size (noisy)."),
    n_heldout: int = typer.Option(
        500, "--n-heldout", help="Clean held-out problems (anchor source)."
    ),
    n_test: int = typer.Option(500, "--n-test", help="Clean test problems."),
    n_pretrain: int = typer.Option(2000, "--n-pretrain", help="Clean caption samples."),
    noise_rate: float | None = typer.Option(
        None, "--noise-rate", help="Share of noisy pool samples."
    ),
    noise_mix: str | None = typer.Option(
        None, "--noise-mix", help="Weights per noise type, e.g. 'arith_slip=2,misread=1'."
    ),
    clutter: float = typer.Option(0.3, "--clutter", help="Probability of distractor dots/strokes."),
    seed: int = typer.Option(0, "--seed", help="Everything is a function of the seed."),
    examples: Path | None = typer.Option(
        None, "--examples", help="Also write a PNG grid of example problems here."
    ),
) -> None:
    """Write the DigitMath splits, images and hidden noise labels, and print their counts."""
    from ostselect.bench.data import make_digitmath, read_manifest
    from ostselect.bench.noise import DEFAULT_NOISE_RATE

    try:
        paths = make_digitmath(
            out,
            n_pool=n_pool,
            n_heldout=n_heldout,
            n_test=n_test,
            n_pretrain=n_pretrain,
            noise_rate=DEFAULT_NOISE_RATE if noise_rate is None else noise_rate,
            noise_mix=_parse_mix(noise_mix),
            seed=seed,
            clutter=clutter,
        )
    except (ValueError, FileExistsError) as exc:
        fail(str(exc))
    for table in _summary_tables(read_manifest(paths.root)["counts"]):
        console.print(table)
    console.print(f"wrote {paths.root} (pool: {paths.pool}, hidden labels: {paths.pool_noise})")
    if examples is not None:
        from ostselect.bench.figures import plot_examples

        console.print(f"wrote {plot_examples(paths.root, examples)}")


@bench_app.command("examples")
def examples_command(
    data_dir: Path = typer.Argument(..., help="A folder written by `ost bench data`."),
    out: Path = typer.Option(
        Path("docs/img/digitmath_examples.png"), "--out", help="PNG to write."
    ),
) -> None:
    """Draw a grid of clean and noisy pool samples (for the README)."""
    from ostselect.bench.figures import plot_examples

    if not (data_dir / "pool.jsonl").exists():
        fail(f"{data_dir} has no pool.jsonl: run `ost bench data {data_dir}` first")
    console.print(f"wrote {plot_examples(data_dir, out)}")


def _run(preset: str, out: Path, work_dir: Path | None, overrides: dict, command: str) -> dict:
    from rich.console import Console

    from ostselect.bench.config import PRESETS
    from ostselect.bench.demo import run_and_write
    from ostselect.bench.results import render_console

    config = PRESETS[preset]().with_overrides(**overrides)
    started = time.perf_counter()
    results, paths = run_and_write(
        config, out, work_dir=work_dir, command=command, log=lambda m: console.print(m)
    )
    if "validation" in results:
        from ostselect.cli.validate import print_validation_summary

        print_validation_summary(results["validation"])
    render_console(results, Console(width=max(Console().width, 120)))
    minutes = (time.perf_counter() - started) / 60
    console.print(f"wrote {', '.join(str(p) for p in paths.values())} ({minutes:.1f} min)")
    return results


@bench_app.command("run")
def run_command(
    out: Path | None = typer.Option(
        None, "--out", help="Where results go (default: runs/bench-PRESET; never docs/)."
    ),
    work_dir: Path | None = typer.Option(
        None, "--work-dir", help="Data, checkpoints and scores (default: OUT/work)."
    ),
    preset: str = typer.Option("full", "--preset", help="full | demo | mini."),
    seeds: int | None = typer.Option(None, "--seeds", help="Number of seeds (0..n-1)."),
    noise_rate: float | None = typer.Option(None, "--noise-rate", help="Pool noise rate."),
    eta: float | None = typer.Option(None, "--eta", help="OST step size."),
    workers: int | None = typer.Option(
        None, "--workers", min=1, help="Processes for pretraining and fine-tuning (default 2)."
    ),
    cache_dir: Path | None = typer.Option(
        None,
        "--cache-dir",
        help="Pretrained-model cache (default: $OSTSELECT_CACHE or ~/.cache/ostselect).",
    ),
) -> None:
    """The full DigitMath protocol: pretrain, warm up, score, select, fine-tune, evaluate."""
    from ostselect.bench.config import PRESETS

    if preset not in PRESETS:
        fail(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    overrides = {
        "seeds": tuple(range(seeds)) if seeds else None,
        "noise_rate": noise_rate,
        "eta": eta,
        "workers": workers,
        "cache_dir": str(cache_dir) if cache_dir else None,
    }
    command = "ost bench run " + " ".join(sys.argv[3:]) if len(sys.argv) > 3 else "ost bench run"
    out = out or Path("runs") / f"bench-{preset}"
    _run(preset, out, work_dir or out / "work", overrides, command)


@bench_app.command("proxy")
def proxy_command(
    out: Path = typer.Argument(..., help="Folder for the pretrained model (must not exist)."),
    role: str = typer.Option("proxy", "--role", help="proxy (the small one) or target."),
    preset: str = typer.Option("demo", "--preset", help="Whose settings: demo | full | mini."),
    cache_dir: Path | None = typer.Option(
        None,
        "--cache-dir",
        help="Pretrained-model cache (default: $OSTSELECT_CACHE or ~/.cache/ostselect).",
    ),
) -> None:
    """Write the benchmark's pretrained proxy (or target): a small VLM that reads digits and does
    arithmetic, so OST scores mean something. Taken from the cache `ost demo` fills; pretrained
    here (a few minutes on 2 cores) when it is not there yet."""
    import shutil
    import tempfile

    import torch

    from ostselect.bench.config import PRESETS, PROXY_ROLES
    from ostselect.bench.data import make_digitmath
    from ostselect.bench.jobs import JobRunner
    from ostselect.bench.protocol import pretrained_models

    if preset not in PRESETS:
        fail(f"--preset {preset!r} is not one of {', '.join(PRESETS)}")
    if role not in PROXY_ROLES:
        fail(f"--role {role!r} is not one of {', '.join(PROXY_ROLES)}")
    if out.exists():
        fail(f"{out} already exists: choose a new folder or remove it")
    config = PRESETS[preset]().with_overrides(cache_dir=str(cache_dir) if cache_dir else None)
    # The cache key records the thread count (float sums differ with it): pretrain under it.
    torch.set_num_threads(config.threads)
    with tempfile.TemporaryDirectory(prefix="ost-bench-proxy-") as tmp:
        # The pretraining split only (the pool, held-out and test splits are not needed here).
        paths = make_digitmath(
            Path(tmp) / "data",
            n_pool=1,
            n_heldout=1,
            n_test=1,
            n_pretrain=config.n_pretrain,
            noise_rate=config.noise_rate,
            noise_mix=config.noise_mix,
            seed=config.data_seed,
            clutter=config.clutter,
        )
        made = pretrained_models(
            config, [role], paths.pretrain, JobRunner(1), lambda m: console.print(m)
        )
    folder, record = made[role]
    shutil.copytree(folder, out, ignore=shutil.ignore_patterns("bench_pretrain.json"))
    console.print(
        f"[bold green]wrote[/] {out}: the DigitMath {role} ({record['parameters']:,} parameters); "
        f"its frozen reader gets {record['reader_cell_accuracy']:.1%} of digit cells right, it "
        f"reads {record['caption_accuracy']:.0%} of held-out captions and answers "
        f"{record['arithmetic_accuracy']:.0%} of text arithmetic facts"
    )


def demo_command(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Where results go."),
) -> None:
    """A reduced DigitMath benchmark (about 8 minutes on 2 cores from an empty model cache, 4
    with the pretrained models cached): prints the competence gates, the table with paired
    intervals and what the numbers say."""
    _run("demo", out, out / "work", {}, "ost demo")


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")
    app.command("demo")(demo_command)
