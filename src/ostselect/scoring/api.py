"""`score(pool, anchors, proxy, config) -> pyarrow.Table`: the scorer's one public entry point."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from ostselect.data import Reject, pool_fingerprint
from ostselect.data.sample import Sample
from ostselect.proxy.api import ScoringModel
from ostselect.scores import PROVENANCE_KEY, build_scores_table, group_column
from ostselect.scoring.anchors import AnchorSet
from ostselect.scoring.config import ScoreConfig
from ostselect.scoring.modes import Outcome, Scorer, hybrid_refine
from ostselect.scoring.updates import make_update_rule
from ostselect.scoring.work import WorkCounter

SampleSource = Iterable[Sample] | str | Path
ProgressHook = Callable[[str, int, int | None], None]  # (phase, samples just finished, phase total)


REJECT_CODES = {"error": "score_prepare_failed", "nonfinite": "score_nonfinite"}


def _read_samples(path: Path, on_reject: Callable[[Reject], None] | None) -> Iterator[Sample]:
    """Usable samples of a pool file; unusable records go to `on_reject` (data package checks)."""
    from ostselect.data import iter_samples

    def on_record(item: Sample | Reject) -> None:
        if on_reject is not None and isinstance(item, Reject):
            on_reject(item)

    return iter(iter_samples(path, on_record=on_record))


class _Source:
    """A re-iterable view of a pool given as a path, a sequence or a one-shot iterable."""

    def __init__(
        self,
        source: SampleSource,
        *,
        reiterable: bool,
        on_reject: Callable[[Reject], None] | None = None,
    ) -> None:
        self.on_reject = on_reject
        self.path = Path(source) if isinstance(source, str | Path) else None
        self._items: Sequence[Sample] | None = None
        self._once: Iterable[Sample] | None = None
        if self.path is None:
            if isinstance(source, Sequence) or reiterable:
                self._items = source if isinstance(source, Sequence) else list(source)
            else:
                self._once = source

    def __iter__(self) -> Iterator[Sample]:
        if self.path is not None:
            return _read_samples(self.path, self.on_reject)
        if self._items is not None:
            return iter(self._items)
        assert self._once is not None
        return iter(self._once)

    def size(self) -> int | None:
        """Number of samples when known without reading the source."""
        return len(self._items) if self._items is not None else None

    def fingerprint(self) -> str | None:
        return pool_fingerprint(self.path) if self.path is not None else None


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


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}


def score(
    pool: SampleSource,
    anchors: SampleSource,
    proxy: ScoringModel,
    config: ScoreConfig | None = None,
    *,
    progress: ProgressHook | None = None,
    on_reject: Callable[[Reject], None] | None = None,
) -> pa.Table:
    """Score every pool sample against the anchors; the table's metadata holds the provenance.

    Streams the pool in batches of `config.batch_size` (hybrid keeps the samples to re-score some).
    Write it with `ostselect.scores.write_scores(table, path, read_provenance(table))`.
    """
    config = config or ScoreConfig()
    started = time.perf_counter()
    theta = proxy.trainable_parameters()
    if not theta:
        raise ValueError("the proxy has no trainable parameters: load it with a --params selection")
    dtype = next(iter(theta.values())).dtype
    if config.dtype is not None and _DTYPES[config.dtype] != dtype:
        raise ValueError(
            f"config.dtype={config.dtype} but the proxy's parameters are {dtype}; "
            f"load the proxy with dtype={config.dtype}"
        )
    torch.manual_seed(config.seed)
    rule = make_update_rule(config.optimizer, theta, proxy.optimizer_state(), config.lr)
    counter = WorkCounter()
    source = _Source(pool, reiterable=config.mode == "hybrid", on_reject=on_reject)
    report = None
    hook = progress or (lambda phase, n, total: None)
    with eval_mode(proxy):
        anchor_source = _Source(anchors, reiterable=True)
        anchor_set = AnchorSet(
            proxy,
            anchor_source,
            batch_size=config.anchor_batch_size,
            group_field=config.group_field,
            counter=counter,
        )
        scorer = Scorer(proxy, rule, anchor_set, config.batch_size, counter)
        run = {
            "naive": scorer.naive,
            "exact": scorer.exact,
            "first-order": scorer.first_order,
            "hybrid": scorer.first_order,
        }[config.mode]
        outcomes: list[Outcome] = []
        first_phase = "first-order" if config.mode == "hybrid" else config.mode
        reported: set[int] = set()
        for outcome in run(source):
            if outcome.status != "ok":
                reported.add(len(outcomes))
                _report(outcome, on_reject)
            if config.mode != "hybrid":
                outcome.sample = None  # stream: keep only the numbers
            outcomes.append(outcome)
            hook(first_phase, 1, source.size())
        if config.mode == "hybrid":

            def rescore(indices: list[int]) -> list[Outcome]:
                samples = [outcomes[i].sample for i in indices]
                out = list(scorer.exact(samples))  # type: ignore[arg-type]
                hook("exact re-score", len(out), None)
                return out

            report = hybrid_refine(
                outcomes,
                cutoff=config.cutoff,
                calibration_size=config.calibration_size,
                safety=config.band_safety,
                seed=config.seed,
                rescore=rescore,
            )
            for i, o in enumerate(outcomes):
                if o.status != "ok" and i not in reported:
                    _report(o, on_reject)
    rejects = [o for o in outcomes if o.status != "ok"]
    table = _table(outcomes, config, sorted(anchor_set.groups))
    provenance = {
        "scorer": "ost",
        "proxy": getattr(proxy, "name", None),
        "proxy_fingerprint": proxy.fingerprint(),
        "params": getattr(proxy, "params_spec", None),
        "anchor_hash": anchor_set.hash,
        "anchors": len(anchor_set),
        "anchor_groups": {g: len(ix) for g, ix in anchor_set.groups.items()},
        "pool": str(source.path) if source.path else None,
        "pool_fingerprint": source.fingerprint(),
        "mode": config.mode,
        "eta": rule.lr,
        **rule.hyperparameters(),
        "dtype": str(dtype).removeprefix("torch."),
        "device": str(next(iter(theta.values())).device),
        "seed": config.seed,
        "cutoff": config.cutoff,
        "batch_size": config.batch_size,
        "anchor_batch_size": config.anchor_batch_size,
        "counts": {
            "scored": len(outcomes),
            "ok": len(outcomes) - len(rejects),
            **{s: sum(o.status == s for o in outcomes) for s in ("nonfinite", "error")},
        },
        "work": counter.as_dict(),
        "wall_time_s": round(time.perf_counter() - started, 3),
        "config": config.model_dump(),
    }
    if report is not None:
        provenance["hybrid"] = report.as_dict()
    meta = {PROVENANCE_KEY: json.dumps(provenance, sort_keys=True, default=str).encode()}
    return table.replace_schema_metadata(meta)


def _report(outcome: Outcome, on_reject: Callable[[Reject], None] | None) -> None:
    """A candidate that could not be scored stays in the table (utility NaN) and is reported."""
    if on_reject is None:
        return
    loc = outcome.sample.source if outcome.sample is not None else None
    file = loc.file if loc is not None else "<memory>"
    line = loc.line if loc is not None else None
    reason = f"scoring: {outcome.reason or outcome.status}"
    on_reject(Reject(outcome.id, file, line, reason, REJECT_CODES[outcome.status]))


def _table(outcomes: list[Outcome], config: ScoreConfig, groups: list[str]) -> pa.Table:
    extra: dict[str, Any] = {
        "loss": pa.array([o.loss for o in outcomes], pa.float64()),
        "tokens": pa.array([o.tokens for o in outcomes], pa.int64()),
    }
    for g in groups:
        extra[group_column(g)] = pa.array(
            [o.groups.get(g, float("nan")) for o in outcomes], pa.float64()
        )
    if config.mode == "hybrid":
        extra["scored_exactly"] = pa.array([o.exact for o in outcomes], pa.bool_())
    return build_scores_table(
        [o.id for o in outcomes],
        [o.utility for o in outcomes],
        config.mode,
        status=[o.status for o in outcomes],
        extra_columns=extra,
    )
