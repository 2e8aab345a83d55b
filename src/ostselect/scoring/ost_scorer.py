"""The OST scorer behind the engine's `SampleScorer` seam: one way to compute a row.

A worker builds a `ScoringCore` once (proxy, update rule, prepared anchors); `OSTScorer` scores
batches with it in one phase ("naive", "exact" or "first-order"). Candidates are prepared and
differentiated as one padded batch (much faster than one by one), so a row depends on its batch
neighbours at round-off level (~1e-7 relative in float32); shards are cut at fixed positions and
batches inside them too, so a resumed or Ray run repeats the same batches and gives bit-identical
rows. `OSTScorerFactory` is the picklable recipe a Ray worker rebuilds the core from.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ostselect.data.sample import Sample
from ostselect.precision import DTYPES, peak_memory
from ostselect.proxy.api import ScoringModel
from ostselect.scores import split_settings
from ostselect.scoring.anchors import PreparedAnchors
from ostselect.scoring.config import ScoreConfig
from ostselect.scoring.modes import OneStepUtility
from ostselect.scoring.table import outcome_columns
from ostselect.scoring.updates import UpdateRule, make_update_rule
from ostselect.scoring.work import WorkCounter

PHASES = ("naive", "exact", "first-order")  # how one pass computes a row


def phase_of(mode: str) -> str:
    """The scoring method of a mode's first (or only) pass."""
    return "first-order" if mode == "hybrid" else mode


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


@contextlib.contextmanager
def eval_mode(proxy: ScoringModel) -> Iterator[None]:
    """Run the proxy's modules in eval mode (no dropout) and restore each module's flag after."""
    module = proxy if isinstance(proxy, torch.nn.Module) else getattr(proxy, "model", None)
    if not isinstance(module, torch.nn.Module):
        yield
        return
    flags = {m: m.training for m in module.modules()}
    module.eval()
    try:
        yield
    finally:
        for m, flag in flags.items():
            m.training = flag


@dataclass
class ScoringCore:
    """What a worker sets up once: the proxy, the update rule, the prepared anchors."""

    proxy: ScoringModel
    config: ScoreConfig
    rule: UpdateRule
    anchors: PreparedAnchors
    utility: OneStepUtility
    counter: WorkCounter
    dtype: torch.dtype
    _fingerprint: str | None = field(default=None, init=False)

    @classmethod
    def build(cls, proxy: ScoringModel, anchors: Iterable[Sample], config: ScoreConfig) -> Any:
        theta = proxy.trainable_parameters()
        if not theta:
            raise ValueError(
                "the proxy has no trainable parameters: load it with a --params selection"
            )
        # the model's dtype (a proxy may keep its trainable tensors in another, e.g. float32 LoRA)
        dtype = getattr(proxy, "dtype", None)
        if not isinstance(dtype, torch.dtype):
            dtype = next(iter(theta.values())).dtype
        if config.dtype is not None and DTYPES[config.dtype] != dtype:
            raise ValueError(
                f"config.dtype={config.dtype} but the proxy's parameters are {dtype}; "
                f"load the proxy with dtype={config.dtype}"
            )
        torch.manual_seed(config.seed)
        rule = make_update_rule(config.optimizer, theta, proxy.optimizer_state(), config.lr)
        counter = WorkCounter()
        with eval_mode(proxy):
            anchor_set = PreparedAnchors(
                proxy,
                anchors,
                batch_size=config.anchor_batch_size,
                group_field=config.group_field,
                counter=counter,
            )
        utility = OneStepUtility(
            proxy,
            rule,
            anchor_set,
            config.batch_size,
            counter,
            candidate_batch=config.candidate_batch,
        )
        core = cls(proxy, config, rule, anchor_set, utility, counter, dtype)
        core.proxy_fingerprint()  # now, before `naive` steps (and restores) the live weights
        return core

    @property
    def groups(self) -> list[str]:
        return sorted(self.anchors.groups)

    def proxy_fingerprint(self) -> str:
        """The proxy's identity (`ScoringModel.fingerprint()`: its folder's content hash), once
        per worker."""
        if self._fingerprint is None:
            self._fingerprint = self.proxy.fingerprint()
        return self._fingerprint

    def provenance(self) -> dict[str, Any]:
        """How the rows are made; the same for every batch (no counters), so shards agree.

        In the `scores.Provenance` schema: each fact once. The step size is `eta` (resolved: an
        AdamW run without one takes the warm-up state's next lr), so neither the rule's `lr` nor
        the config's possibly-null one is repeated; the config keeps only what is not on top.
        """
        config = self.config
        theta = self.proxy.trainable_parameters()
        rule = {k: v for k, v in self.rule.hyperparameters().items() if k != "lr"}
        on_top = {"eta", "lr", "seed", "mode", "optimizer", "dtype", "device"}
        return split_settings(
            {
                "scorer": "ost",
                "proxy": getattr(self.proxy, "name", None),
                "proxy_fingerprint": self.proxy_fingerprint(),
                "params": _describe_params(getattr(self.proxy, "params_spec", None)),
                "proxy_warmup": _warmup_summary(self.proxy),
                "anchor_hash": self.anchors.hash,
                "anchors": len(self.anchors),
                "anchor_groups": {g: len(ix) for g, ix in self.anchors.groups.items()},
                "mode": config.mode,
                "eta": self.rule.lr,
                **rule,
                "dtype": str(self.dtype).removeprefix("torch."),
                "device": str(next(iter(theta.values())).device),
                "memory": peak_memory(next(iter(theta.values())).device),  # peak so far
                "seed": config.seed,
                "config": config.model_dump(exclude=on_top),
            }
        )


def _describe_params(spec: Any) -> str | None:
    """The trainable selection as `--params` reads it (`all`, `lora(r=8, ...)`), not the
    `ParamsSpec(...)` repr that JSON's `default=str` would write into the provenance."""
    if spec is None or isinstance(spec, str):
        return spec
    describe = getattr(spec, "describe", None)
    return describe() if callable(describe) else str(spec)


def _warmup_summary(proxy: Any) -> dict[str, Any] | None:
    """The proxy's warm-up record, trimmed to what says whether it learned (steps, losses):
    `scores.untrained_proxy` reads it back to warn about a proxy whose warm-up did nothing."""
    warm = (getattr(proxy, "metadata", None) or {}).get("warmup")
    if not isinstance(warm, dict):
        return None
    keys = ("steps", "fraction", "lr", "loss_before", "loss_after", "loss_head", "loss_tail")
    return {k: warm.get(k) for k in keys if k in warm}


class OSTScorer:
    """A `SampleScorer` for one scoring method ("naive", "exact" or "first-order").

    `only_ids` restricts the work to those samples; the others come back `status="skipped"`
    (hybrid's exact rounds stream the whole pool but pay only for the chosen ids).
    """

    def __init__(
        self, core: ScoringCore, phase: str, only_ids: Collection[str] | None = None
    ) -> None:
        if phase not in PHASES:
            raise ValueError(f"unknown scoring phase {phase!r}")
        self.core = core
        self.phase = phase
        self.mode = phase
        self.only_ids = frozenset(only_ids) if only_ids is not None else None
        self._seconds = 0.0

    def counters(self) -> dict[str, float]:
        """Cumulative cost under the baselines' names, so every scorer's `cost` reads alike
        (the engine sums each shard's share; the anchor preparation before it is not counted)."""
        counter = self.core.counter
        return {
            "forward_passes": counter.forward,
            "backward_passes": counter.backward,
            "wall_s": self._seconds,
        }

    def for_phase(self, phase: str, only_ids: Collection[str] | None = None) -> OSTScorer:
        """The same worker set-up (proxy, anchors) scoring another way."""
        return OSTScorer(self.core, phase, only_ids)

    def _wanted(self, sample: Sample) -> bool:
        return self.only_ids is None or sample.id in self.only_ids

    def score_samples(self, samples: Sequence[Sample]) -> dict[str, list[Any]]:
        todo = [s for s in samples if self._wanted(s)]
        method = {
            "naive": self.core.utility.naive,
            "exact": self.core.utility.exact,
            "first-order": self.core.utility.first_order,
        }[self.phase]
        started = time.perf_counter()
        with eval_mode(self.core.proxy):
            done = iter(list(method(todo)))
        self._seconds += time.perf_counter() - started
        outcomes = [next(done) if self._wanted(s) else None for s in samples]
        return outcome_columns(samples, outcomes, self.core.groups, self.phase)

    def provenance(self) -> dict[str, Any]:
        return split_settings({**self.core.provenance(), "phase": self.phase})


@dataclass(frozen=True)
class OSTScorerFactory:
    """Picklable recipe: loads the proxy and prepares the anchors in the worker, once."""

    proxy_dir: str | Path
    anchors_path: str | Path
    config: ScoreConfig
    params: str | None = None
    lora_layers: str | None = None
    image_root: str | Path | None = None
    phase: str | None = None  # None: the config's mode (first-order for hybrid's first pass)
    only_ids: frozenset[str] | None = None

    def with_phase(self, phase: str, only_ids: Collection[str] | None = None) -> OSTScorerFactory:
        ids = frozenset(only_ids) if only_ids is not None else None
        return replace(self, phase=phase, only_ids=ids)

    def read_anchors(self) -> list[Sample]:
        from ostselect.data import iter_samples

        return list(iter_samples(self.anchors_path, image_root=self.image_root))

    def build_core(self) -> ScoringCore:
        from ostselect.proxy import load_proxy

        proxy = load_proxy(
            self.proxy_dir,
            dtype=self.config.dtype or "float32",
            device=resolve_device(self.config.device),
            params=self.params,
            lora_layers=self.lora_layers or "all",
        )
        return ScoringCore.build(proxy, self.read_anchors(), self.config)

    def fingerprint(self, pool_path: str | Path) -> dict[str, Any]:
        """What makes two runs' rows interchangeable: resuming under another one is refused,
        and the benchmark reuses scores only under an equal one.

        The proxy is identified by its folder's content hash (`proxy_identity`: the driver never
        loads it); the batch size is in because rows agree across batch sizes only to
        round-off, not bit for bit.
        """
        from ostselect.data import pool_fingerprint
        from ostselect.proxy.folder import proxy_identity
        from ostselect.scoring.anchors import anchor_hash

        return {
            "scorer": "ost",
            "proxy": {
                "content_hash": proxy_identity(self.proxy_dir),
                "params": self.params,
                "lora_layers": self.lora_layers,
            },
            "anchor_hash": anchor_hash(self.read_anchors()),
            "pool": pool_fingerprint(pool_path),
            "mode": self.config.mode,
            "config": self.config.model_dump(),
        }

    def __call__(self) -> OSTScorer:
        return OSTScorer(self.build_core(), self.phase or phase_of(self.config.mode), self.only_ids)


class SharedCoreFactory:
    """Local backend: one proxy/anchor set-up for every pass of the run (not pickled)."""

    def __init__(self, factory: OSTScorerFactory) -> None:
        self._factory = factory
        self._core: ScoringCore | None = None

    def __call__(self, phase: str, only_ids: Collection[str] | None = None) -> Callable[[], Any]:
        def build() -> OSTScorer:
            if self._core is None:
                self._core = self._factory.build_core()
            return OSTScorer(self._core, phase, only_ids)

        return build
