"""The registry of baseline scoring methods: each method declares itself once, in its own file.

Modelled on data-juicer's `OPERATORS.register_module`: `@register_baseline(...)` on a scorer class
records its name, what it needs (a proxy, an anchor set, a pool-wide pass), its options as one
pydantic model and its cost counters. Everything else reads `BASELINES`: `make_baseline`, the
`ost baseline <name>` sub-commands, the engine's factory, the benchmark's rows and the table in
docs/baselines.md. Adding a method is one new module that registers itself (built-in modules of
`ostselect.baselines` are found and imported by `load_builtin_baselines`).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    import pyarrow as pa

    from ostselect.baselines.base import Baseline
    from ostselect.data.sample import Sample
    from ostselect.proxy.api import ScoringModel

Need = Literal["none", "optional", "required"]
# (the merged row-wise table of the whole pool, the scorer's keyword arguments) -> final table
PoolPass = Callable[["pa.Table", Mapping[str, Any]], "pa.Table"]
# Builds the scorer; the default passes the proxy and the anchors positionally when declared.
Builder = Callable[..., "Baseline"]

# Names the generic command gives its shared options: an options model may not reuse them.
SHARED_OPTIONS = frozenset(
    {
        "pool", "out", "proxy", "anchors", "params", "dtype", "device", "fmt", "image_root",
        "rejects", "resume", "shard_size", "backend", "address", "num_workers",
        "gpus_per_worker", "quiet",
    }
)  # fmt: skip
COST_COUNTERS = (
    "forward_passes",
    "backward_passes",
    "judge_requests",
    "judge_tokens_in",
    "judge_tokens_out",
)
KEEP_CHOICES = ("low", "high")


class BaselineOptions(BaseModel):
    """A method's options exactly as `ost baseline <name>` takes them.

    Field `keep_above_one` is the flag `--keep-above-one` and its `description` the flag's help,
    so the command is generated from the model. Validators raise messages that name the flag (the
    CLI prints them as they are). `scorer_kwargs` turns the options into the scorer's keyword
    arguments where a flag is phrased differently from the library (`--dim 0` = no projection).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    def scorer_kwargs(self, out: Path | None = None) -> dict[str, Any]:
        """Keyword arguments for the scorer; `out` is the scores file (for defaults beside it)."""
        return self.model_dump()


class NoOptions(BaselineOptions):
    """For a method with nothing to set."""


def keep_field(default: str) -> Any:
    return Field(default, description="low | high: which end of the score to keep.")


def batch_field(default: int = 8, help: str = "Samples per forward pass.") -> Any:
    return Field(default, description=help)


class KeepOptions(BaselineOptions):
    """`--keep low|high`, checked before any slow work."""

    keep: str = keep_field("high")

    @field_validator("keep")
    @classmethod
    def _known_keep(cls, value: str) -> str:
        if value not in KEEP_CHOICES:
            raise ValueError(f"--keep {value!r} is not known: use low or high")
        return value


def check_batch_size(value: int) -> int:
    if value < 1:
        raise ValueError(f"--batch-size {value} is not usable: pass 1 or more")
    return value


@dataclass(frozen=True)
class BaselineSpec:
    """Everything the library, the CLI, the engine, the benchmark and the docs know of a method."""

    name: str
    scorer: type[Baseline]
    options: type[BaselineOptions]
    summary: str  # first line of the command's help: what the utility is
    example: str  # one command line, shown under `Example:` in --help
    utility: str  # docs table: the utility in a few words
    direction: str  # docs table: which end is kept by default
    proxy: Need = "none"
    proxy_help: str | None = None  # the --proxy help when it differs from the shared one
    anchors: bool = False
    pool_pass: PoolPass | None = None  # a final pass over the whole (sharded) table
    cost: tuple[str, ...] = ()  # the `CostMeter` counters this method moves
    needs_note: str | None = None  # docs table: needs beyond the proxy/anchors (e.g. MiniLM)
    chunk: int | None = None  # samples per `score_samples` call when larger ones amortise set-up
    build: Builder | None = None  # default: scorer(proxy?, anchors?, **kwargs)
    in_benchmark: bool = True  # a row of the committed benchmark
    order: int = 100  # place in listings (commands, docs, benchmark rows); then by name

    @property
    def uses_proxy(self) -> bool:
        return self.proxy != "none"

    @property
    def needs(self) -> str:
        """The docs table's `needs` cell."""
        parts = [self.needs_note] if self.needs_note else []
        if self.proxy == "required":
            parts.append("proxy")
        if self.anchors:
            parts.append("anchors")
        text = " + ".join(parts)
        if self.proxy == "optional":
            return f"{text} (+ proxy)" if text else "(proxy)"
        return text or "—"

    def help(self) -> str:
        return f"{self.summary}\n\nExample: {self.example}"

    def make(
        self,
        proxy: ScoringModel | None = None,
        anchors: Sequence[Sample] | None = None,
        **kwargs: Any,
    ) -> Baseline:
        """The scorer with these keyword arguments (the library's names, not the flags)."""
        from ostselect.baselines.base import require_proxy

        if self.proxy == "required":
            proxy = require_proxy(proxy, self.name)
        if self.build is not None:
            return self.build(proxy=proxy, anchors=anchors, **kwargs)
        args: list[Any] = []
        if self.proxy != "none":
            args.append(proxy)
        if self.anchors:
            args.append(list(anchors or []))
        return self.scorer(*args, **kwargs)


BASELINES: dict[str, BaselineSpec] = {}
# Told (name, spec) on every registration and (name, None) on removal: the CLI keeps its
# sub-commands in step with the registry this way, also for methods registered after start-up.
Listener = Callable[[str, "BaselineSpec | None"], None]
_LISTENERS: list[Listener] = []


def subscribe(listener: Listener) -> None:
    """Call `listener` for every method registered so far and every later change."""
    _LISTENERS.append(listener)
    for name, spec in list(BASELINES.items()):
        listener(name, spec)


def register_baseline(
    name: str, *, options: type[BaselineOptions] = NoOptions, **spec: Any
) -> Callable[[type[Baseline]], type[Baseline]]:
    """Class decorator: add the scorer to `BASELINES` under `name` (see `BaselineSpec`)."""

    def add(cls: type[Baseline]) -> type[Baseline]:
        clash = SHARED_OPTIONS & set(options.model_fields)
        if clash:
            raise ValueError(f"baseline {name!r}: option(s) {sorted(clash)} are shared options")
        unknown = set(spec.get("cost", ())) - set(COST_COUNTERS)
        if unknown:
            raise ValueError(f"baseline {name!r}: unknown cost counters {sorted(unknown)}")
        existing = BASELINES.get(name)
        if existing is not None and existing.scorer.__qualname__ != cls.__qualname__:
            raise ValueError(f"baseline {name!r} is already registered by {existing.scorer}")
        cls.mode = name
        cls.pool_level = spec.get("pool_pass") is not None
        BASELINES[name] = BaselineSpec(name=name, scorer=cls, options=options, **spec)
        ordered = sorted(BASELINES.values(), key=lambda s: (s.order, s.name))
        BASELINES.clear()
        BASELINES.update((s.name, s) for s in ordered)
        for listener in _LISTENERS:
            listener(name, BASELINES[name])
        return cls

    return add


def unregister_baseline(name: str) -> None:
    """Remove a method (tests register toy ones and take them out again)."""
    if BASELINES.pop(name, None) is not None:
        for listener in _LISTENERS:
            listener(name, None)


_LOADED = False


def load_builtin_baselines() -> dict[str, BaselineSpec]:
    """Import every module of `ostselect.baselines` once, so each registers itself."""
    global _LOADED
    if not _LOADED:
        import ostselect.baselines as package

        for info in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package.__name__}.{info.name}")
        _LOADED = True
    return BASELINES


def get_baseline(name: str) -> BaselineSpec:
    specs = load_builtin_baselines()
    if name not in specs:
        raise ValueError(f"unknown baseline {name!r}; choose one of {', '.join(specs)}")
    return specs[name]


def baseline_names() -> tuple[str, ...]:
    return tuple(load_builtin_baselines())


def baselines_table() -> str:
    """The Markdown table of docs/baselines.md (a test keeps the page equal to it)."""
    rows = ["| name | utility | needs | default direction |", "|---|---|---|---|"]
    for spec in load_builtin_baselines().values():
        rows.append(f"| `{spec.name}` | {spec.utility} | {spec.needs} | {spec.direction} |")
    return "\n".join(rows)
