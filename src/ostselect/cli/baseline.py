"""`ost baseline NAME ...`: score a pool with a baseline method into the same scores table as OST.

One sub-command per registered method (`ostselect.baselines.registry`), generated from its
options model, so each `--help` lists only the options that method takes and a new method needs
no edit here. Every command runs through the engine like `ost score`: the pool is scored in
shards kept in OUT.shards/ (`--resume` continues a killed run), `--backend ray` spreads them over
workers, bad records go to the rejects file, and the Parquet scores table's provenance records
the settings and the cost.
"""

from __future__ import annotations

import inspect
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import typer
from typer.core import TyperGroup
from typer.main import get_command_from_info

from ostselect.cli.common import (
    DEVICE,
    POOL_HELP,
    check_proxy_folder,
    console,
    count_of_all,
    fail,
    progress,
    resolve_device,
)

if TYPE_CHECKING:
    from pydantic import ValidationError

    from ostselect.baselines.registry import BaselineSpec


class _RegistryGroup(TyperGroup):
    """`ost baseline`'s click group: the registry is imported and the sub-commands are built the
    first time one is asked for, so `ost --help` and every other command start without importing
    the baselines (pyarrow, pydantic models: ~0.35 s)."""

    def _sync(self) -> None:
        _subscribe()
        for info in baseline_app.registered_commands:
            if info.name not in self.commands:
                self.commands[info.name] = get_command_from_info(
                    info, pretty_exceptions_short=True, rich_markup_mode=self.rich_markup_mode
                )
        for name in set(self.commands) - {c.name for c in baseline_app.registered_commands}:
            del self.commands[name]  # unregistered since

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self._sync()
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._sync()
        return [c.name for c in baseline_app.registered_commands if c.name in self.commands]


baseline_app = typer.Typer(
    cls=_RegistryGroup,
    name="baseline",
    help=(
        "Score a pool with a registered baseline method (one sub-command each) into a "
        "scores table that `ost select` and `ost report` read like OST's. Runs through the same "
        "engine as `ost score`: --resume, --shard-size, --backend ray."
    ),
    no_args_is_help=True,
)

OUT_HELP = "Scores table to write (Parquet), e.g. scores.random.parquet."
PROXY_HELP = "Proxy folder (`ost proxy init` / `ost warmup` output)."


def _option(default: Any, flag: str, help: str, **kwargs: Any) -> Any:
    return typer.Option(default, flag, help=help, **kwargs)


def _param(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
    )


def _shared_head(spec: BaselineSpec) -> list[inspect.Parameter]:
    """--pool, --out, then --proxy / --anchors as the method needs them."""
    params = [
        _param("pool", Path, _option(..., "--pool", POOL_HELP)),
        _param("out", Path, _option(..., "--out", OUT_HELP)),
    ]
    if spec.proxy != "none":
        required = spec.proxy == "required"
        params.append(
            _param(
                "proxy",
                Path if required else Path | None,
                _option(... if required else None, "--proxy", spec.proxy_help or PROXY_HELP),
            )
        )
    if spec.anchors:
        help = "Anchor set file (any pool format)."
        params.append(_param("anchors", Path, _option(..., "--anchors", help)))
    return params


def _method_options(spec: BaselineSpec) -> list[inspect.Parameter]:
    """One Typer option per field of the method's options model: `a_b` -> `--a-b`."""
    params = []
    for name, info in spec.options.model_fields.items():
        flag = "--" + name.replace("_", "-")
        default = info.get_default(call_default_factory=True)
        params.append(_param(name, info.annotation, _option(default, flag, info.description or "")))
    return params


def _shared_tail(spec: BaselineSpec) -> list[inspect.Parameter]:
    """Proxy loading, reading and engine options, common to every method."""
    params = []
    if spec.proxy != "none":
        params += [
            _param(
                "params",
                str | None,
                _option(
                    None,
                    "--params",
                    "Trainable parameters: all | lora | REGEX (default: the folder's own).",
                ),
            ),
            _param("dtype", str, _option("float32", "--dtype", "float32 | float64 | bfloat16.")),
            _param("device", str, DEVICE),
        ]
    params += [
        _param("fmt", str, _option("auto", "--format", "auto | messages | llava | parquet | hf.")),
        _param(
            "image_root",
            Path | None,
            _option(None, "--image-root", "Folder relative image paths resolve against."),
        ),
        _param(
            "rejects",
            Path | None,
            _option(
                None,
                "--rejects",
                "Where unreadable records go (default: rejects.jsonl beside --out).",
            ),
        ),
        _param(
            "resume",
            bool,
            _option(False, "--resume", "Continue the finished shards of an earlier run into OUT."),
        ),
        _param(
            "shard_size",
            int | None,
            _option(
                None,
                "--shard-size",
                "Samples per shard, the unit of resume (default 256, or the method's chunk).",
                min=1,
            ),
        ),
        _param("backend", str, _option("local", "--backend", "local (this process) or ray.")),
        _param(
            "address",
            str | None,
            _option(None, "--address", "Ray cluster to join: auto or HOST:PORT."),
        ),
        _param(
            "num_workers",
            int | None,
            _option(None, "--num-workers", "Ray actors (default: one per CPU / GPU share).", min=1),
        ),
        _param(
            "gpus_per_worker",
            float,
            _option(0.0, "--gpus-per-worker", "GPUs each Ray actor reserves.", min=0.0),
        ),
    ]
    return params


def build_command(spec: BaselineSpec) -> Any:
    """The `ost baseline <name>` function for one registered method.

    Typer reads a function's signature; here the signature is assembled from the registry entry
    (shared options around the method's options model), and the body hands the values to `_run`.
    """
    params = [*_shared_head(spec), *_method_options(spec), *_shared_tail(spec)]
    method_fields = set(spec.options.model_fields)

    def command(**values: Any) -> None:
        options = {k: values.pop(k) for k in list(values) if k in method_fields}
        _run(spec, options, **values)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = spec.help()
    command.__name__ = f"{spec.name}_command"
    return command


def _sync_command(name: str, spec: BaselineSpec | None) -> None:
    """Keep the sub-commands equal to the registry (told by `registry.subscribe`)."""
    baseline_app.registered_commands[:] = [
        c for c in baseline_app.registered_commands if c.name != name
    ]
    if spec is not None:
        baseline_app.command(name, help=spec.help())(build_command(spec))


def _options_error(err: ValidationError) -> str:
    """Validators already name the flag (`--keep 'mid' is not known: ...`)."""
    from ostselect.cli.common import fail_validation

    messages = [str(e["msg"]).removeprefix("Value error, ") for e in err.errors()]
    if all(m.startswith("--") for m in messages):
        return "; ".join(messages)
    fail_validation(err)


def _run(
    spec: BaselineSpec,
    options: dict[str, Any],
    *,
    pool: Path,
    out: Path,
    fmt: str,
    image_root: Path | None,
    rejects: Path | None,
    resume: bool,
    shard_size: int | None,
    backend: str,
    address: str | None,
    num_workers: int | None,
    gpus_per_worker: float,
    proxy: Path | None = None,
    anchors: Path | None = None,
    params: str | None = None,
    dtype: str = "float32",
    device: str = "auto",
) -> None:
    """Check every option before slow work, then score through the engine and summarise."""
    from pydantic import ValidationError

    from ostselect.baselines.factory import BaselineFactory

    try:
        chosen = spec.options(**options)
    except ValidationError as err:
        fail(_options_error(err))
    if backend not in ("local", "ray"):
        fail(f"--backend must be local or ray, not {backend!r}")
    if backend == "local" and (address or num_workers or gpus_per_worker):
        fail("--address, --num-workers and --gpus-per-worker need --backend ray")
    if not pool.exists():
        fail(f"cannot read --pool {pool}: it does not exist")
    if proxy is not None:
        check_proxy_folder(proxy)
    if anchors is not None:
        _check_anchors(anchors, image_root)
    rejects_path = _rejects_file(rejects, out)
    factory = BaselineFactory(
        spec.name,
        proxy_dir=str(proxy) if proxy is not None else None,
        anchors_path=str(anchors) if anchors is not None else None,
        params=params,
        dtype=dtype,
        device=resolve_device(device) if backend == "local" else device,
        image_root=str(image_root) if image_root is not None else None,
        options=chosen.scorer_kwargs(out),
    )
    _score(spec, factory, pool, out, fmt, rejects_path, resume, shard_size, backend, address,
           num_workers, gpus_per_worker)  # fmt: skip


def _rejects_file(rejects: Path | None, out: Path) -> Path:
    """`--rejects` as a file (a folder means rejects.jsonl inside it), default beside --out."""
    from ostselect.data import REJECTS_FILENAME

    target = rejects if rejects is not None else out.parent
    return target if target.suffix == ".jsonl" else target / REJECTS_FILENAME


def _check_anchors(anchors: Path, image_root: Path | None) -> None:
    """Fail now on an unreadable or empty anchor set; say how many records it skips."""
    from ostselect.data import PoolError, Reject, iter_samples

    bad: list[Reject] = []

    def note(record: Any) -> None:
        if isinstance(record, Reject):
            bad.append(record)

    try:
        n = sum(1 for _ in iter_samples(anchors, image_root=image_root, on_record=note))
    except (PoolError, OSError) as exc:
        fail(f"cannot read --anchors {anchors}: {exc}")
    if not n:
        fail(f"--anchors {anchors} holds no usable samples")
    if bad:
        console.print(f"anchors: {n} of {n + len(bad)} samples ({len(bad)} skipped)")


def _score(
    spec: BaselineSpec,
    factory: Any,
    pool: Path,
    out: Path,
    fmt: str,
    rejects_path: Path,
    resume: bool,
    shard_size: int | None,
    backend: str,
    address: str | None,
    num_workers: int | None,
    gpus_per_worker: float,
) -> None:
    from ostselect.baselines.factory import score_baseline_pool
    from ostselect.data import PoolError, count_records
    from ostselect.engine import StoreError
    from ostselect.engine.ray_backend import ShardFailedError
    from ostselect.interrupt import EXIT_INTERRUPTED, Interrupted, stop_on_signals
    from ostselect.proxy.folder import NotAModelFolderError
    from ostselect.scores import read_scores

    try:
        total = count_records(pool)
    except (PoolError, OSError):
        total = None
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with progress() as bar, stop_on_signals():
            task = bar.add_task(f"baseline {spec.name}", total=total)
            score_baseline_pool(
                pool,
                factory,
                out,
                resume=resume,
                shard_size=shard_size,
                backend=backend,
                address=address,
                num_workers=num_workers,
                gpus_per_worker=gpus_per_worker,
                rejects_path=rejects_path,
                pool_format=fmt,
                on_progress=lambda n, resumed: bar.advance(task, n, resumed=resumed),
            )
    except Interrupted as stop:
        console.print(
            f"interrupted ({stop.signal_name}): finished shards are kept in {out}.shards/; "
            "continue with the same command plus --resume",
            soft_wrap=True,
            highlight=False,
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except NotAModelFolderError as err:
        fail(f"--proxy {err}")
    except (StoreError, ShardFailedError, PoolError) as err:
        fail(str(err))
    except (OSError, ValueError, RuntimeError) as err:
        fail(f"baseline {spec.name} on {pool} stopped: {err}")
    _summary(spec, read_scores(out), out, rejects_path)


def _summary(spec: BaselineSpec, scores: Any, out: Path, rejects_path: Path) -> None:
    """`NAME: scored n of N samples (k rejected, see FILE) -> OUT` and the method's cost."""
    provenance = scores.provenance
    statuses = Counter(scores.table.column("status").to_pylist())
    n_rejects = _count_lines(rejects_path)
    notes = [f"{v:,} {k}" for k, v in sorted(statuses.items()) if k != "ok"]
    scored = count_of_all(
        statuses.get("ok", 0), scores.table.num_rows + n_rejects, n_rejects, rejects_path, notes
    )
    resumed = provenance.get("engine", {}).get("shards_resumed", 0)
    console.print(
        f"[bold]{spec.name}[/]: scored {scored}"
        + (f", {resumed} shard(s) resumed" if resumed else "")
        + f" -> {out}"
    )
    cost = provenance.get("cost", {})
    parts = [f"{cost.get('wall_s', 0.0):.1f} s"]
    if {"forward_passes", "backward_passes"} & set(spec.cost):
        parts.append(
            f"{cost.get('forward_passes', 0)} forward / {cost.get('backward_passes', 0)} "
            "backward sample passes"
        )
    if "judge_requests" in spec.cost:
        parts.append(
            f"{cost.get('judge_requests', 0)} judge requests, tokens "
            f"{cost.get('judge_tokens_in', 0)} in / {cost.get('judge_tokens_out', 0)} out"
        )
    console.print("cost: " + ", ".join(parts))
    if (provenance.get("settings") or {}).get("text_only"):
        console.print("note: this judge reads text only; images were not shown to it.")


def _count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as fh:
        return sum(1 for _ in fh)


_SUBSCRIBED: list[bool] = []


def _subscribe() -> None:
    """Load the built-in methods and keep `baseline_app`'s commands equal to the registry."""
    from ostselect.baselines.registry import load_builtin_baselines, subscribe

    if not _SUBSCRIBED:
        load_builtin_baselines()
        subscribe(_sync_command)
        _SUBSCRIBED.append(True)


def register(app: typer.Typer) -> None:
    app.add_typer(baseline_app, name="baseline")
