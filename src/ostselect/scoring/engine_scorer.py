"""The OST scorer behind the engine's `SampleScorer` seam: one way to compute a row.

`OSTScorer.score_samples` turns samples into rows (id, utility, status, loss, tokens,
`utility[<group>]`, ...). The in-process `score()` and the sharded, resumable `score_pool` (local or
Ray backend) both feed it through the engine's `score_batch_resilient` and finish the table with
`finish_table`, so the two give the same rows. Candidates are prepared and differentiated as one
padded batch (much faster than one by one), so a row depends on its batch neighbours at round-off
level (~1e-7 relative: HF's eager attention runs its softmax in float32 in the frozen lower layers).
Shards are cut at fixed positions and batches inside them too, so a resumed or Ray run repeats the
same batches and gives bit-identical rows; the batch size is therefore part of the fingerprint.

Hybrid runs in passes: first-order over the pool, then `hybrid_refine` picks which ids to re-score
exactly, round after round; in `score_pool` every round is an engine run with its own shard store,
so a killed hybrid run resumes inside whichever pass it was in.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from ostselect.data.rejects import SCORE_NONFINITE, SCORE_OOM, SCORE_PREPARE_FAILED, Reject
from ostselect.data.sample import Sample
from ostselect.precision import DTYPES, peak_memory
from ostselect.proxy.api import ScoringModel
from ostselect.scores import Status, build_scores_table, group_column, split_settings
from ostselect.scoring.anchors import PreparedAnchors
from ostselect.scoring.config import ScoreConfig
from ostselect.scoring.modes import HybridReport, OneStepUtility, Outcome, hybrid_refine
from ostselect.scoring.updates import UpdateRule, make_update_rule
from ostselect.scoring.work import WorkCounter

STATUS_SKIPPED = Status.SKIPPED  # not asked for in this pass (hybrid's exact rounds)
REJECT_COLUMN = "_reject"  # where a failed row came from and why (JSON); never in the final table
STEP_COLUMN = "step_sq"  # ||theta - theta'||^2 of first-order rows: hybrid's error band needs it
EXACT_COLUMN = "scored_exactly"
# status -> reject code of a sample that stays in the table but could not be scored
SCORE_REJECT_CODES = {
    Status.ERROR: SCORE_PREPARE_FAILED,
    Status.NONFINITE: SCORE_NONFINITE,
    Status.OOM: SCORE_OOM,
}


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
        utility = OneStepUtility(proxy, rule, anchor_set, config.batch_size, counter)
        return cls(proxy, config, rule, anchor_set, utility, counter, dtype)

    @property
    def groups(self) -> list[str]:
        return sorted(self.anchors.groups)

    def proxy_fingerprint(self) -> str:
        if self._fingerprint is None:  # hashes every weight: once per worker
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
        if phase not in ("naive", "exact", "first-order"):
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


# -- rows <-> outcomes -------------------------------------------------------------------------
def _where(sample: Sample | None) -> tuple[str, int | None, str]:
    """File, line and a prefix for the reason (Parquet/HF rows have an index, not a line)."""
    loc = sample.source if sample is not None else None
    if loc is None:
        return "<memory>", None, ""
    prefix = f"row {loc.index}: " if loc.line is None and loc.index is not None else ""
    return loc.file, loc.line, prefix


def _finite(value: Any) -> bool:
    try:
        return value is None or math.isfinite(float(value))
    except (TypeError, ValueError):
        return True


def outcome_columns(
    samples: Sequence[Sample],
    outcomes: Sequence[Outcome | None],
    groups: Sequence[str],
    phase: str,
) -> dict[str, list[Any]]:
    """Columns for `samples` (None outcome = skipped), plus what hybrid and the rejects need."""
    nan = math.nan
    cols: dict[str, list[Any]] = {"id": [], "utility": [], "status": [], "loss": [], "tokens": []}
    for g in groups:
        cols[group_column(g)] = []
    extra = STEP_COLUMN if phase == "first-order" else EXACT_COLUMN
    cols[extra] = []
    cols[REJECT_COLUMN] = []
    for sample, o in zip(samples, outcomes, strict=True):
        if o is None:
            o = Outcome(sample.id, nan, nan, 0, STATUS_SKIPPED)
        cols["id"].append(sample.id)
        cols["utility"].append(float(o.utility))
        cols["status"].append(o.status)
        cols["loss"].append(float(o.loss))
        cols["tokens"].append(int(o.tokens))
        values = [o.utility, o.loss]
        for g in groups:
            v = float(o.groups.get(g, nan))
            cols[group_column(g)].append(v)
            values.append(v)
        cols[extra].append(float(o.step_sq) if extra == STEP_COLUMN else bool(o.exact))
        unusable = o.status not in ("ok", STATUS_SKIPPED) or (
            o.status == "ok" and not all(_finite(v) for v in values)
        )
        if unusable:
            file, line, prefix = _where(o.sample or sample)
            reason = prefix + (o.reason or ("non-finite value" if o.status == "ok" else o.status))
            info = {"file": file, "line": line, "reason": reason}
            cols[REJECT_COLUMN].append(json.dumps(info, sort_keys=True))
        else:
            cols[REJECT_COLUMN].append(None)
    return cols


def _group_names(columns: Mapping[str, Any]) -> list[str]:
    return [c[len("utility[") : -1] for c in columns if c.startswith("utility[")]


def outcomes_from_columns(columns: Mapping[str, Sequence[Any]]) -> list[Outcome]:
    """Numbers only (no samples): what `hybrid_refine` needs of a scored table."""
    n = len(columns["id"])
    groups = _group_names(columns)
    exact = columns.get(EXACT_COLUMN) or [False] * n
    step = columns.get(STEP_COLUMN) or [None] * n

    def num(v: Any) -> float:
        return math.nan if v is None else float(v)

    return [
        Outcome(
            id=str(columns["id"][i]),
            utility=num(columns["utility"][i]),
            loss=num(columns["loss"][i]) if "loss" in columns else math.nan,
            tokens=int(columns["tokens"][i] or 0) if "tokens" in columns else 0,
            status=str(columns["status"][i]),
            groups={g: num(columns[group_column(g)][i]) for g in groups},
            exact=bool(exact[i]),
            step_sq=num(step[i]),
        )
        for i in range(n)
    ]


def outcomes_to_columns(
    outcomes: Sequence[Outcome], groups: Sequence[str], rejects: Mapping[str, str | None]
) -> dict[str, list[Any]]:
    cols: dict[str, list[Any]] = {
        "id": [o.id for o in outcomes],
        "utility": [o.utility for o in outcomes],
        "status": [o.status for o in outcomes],
        "loss": [o.loss for o in outcomes],
        "tokens": [o.tokens for o in outcomes],
    }
    for g in groups:
        cols[group_column(g)] = [o.groups.get(g, math.nan) for o in outcomes]
    cols[EXACT_COLUMN] = [bool(o.exact) for o in outcomes]
    cols[REJECT_COLUMN] = [rejects.get(o.id) for o in outcomes]
    return cols


# -- the final table ---------------------------------------------------------------------------
def finish_table(columns: Mapping[str, Sequence[Any]], mode: str) -> tuple[pa.Table, list[Reject]]:
    """The scores table (rank/toxic over all rows) and a `Reject` for every unusable row."""
    n = len(columns["id"])
    status = [str(s) for s in columns["status"]]
    extra: dict[str, Any] = {
        "loss": pa.array(columns.get("loss") or [None] * n, pa.float64()),
        "tokens": pa.array(columns.get("tokens") or [None] * n, pa.int64()),
    }
    for g in _group_names(columns):
        extra[group_column(g)] = pa.array(columns[group_column(g)], pa.float64())
    if mode == "hybrid":
        extra[EXACT_COLUMN] = pa.array(
            [bool(v) for v in columns.get(EXACT_COLUMN) or [False] * n], pa.bool_()
        )
    utility = [math.nan if u is None else float(u) for u in columns["utility"]]
    table = build_scores_table(
        [str(i) for i in columns["id"]], utility, mode, status=status, extra_columns=extra
    )
    info = _reject_info(columns)
    rejects = []
    for i in range(n):
        if status[i] == "ok":
            continue
        where = json.loads(info[i]) if info[i] else {"file": "?", "line": None, "reason": ""}
        reason = where["reason"] or status[i]
        code = SCORE_REJECT_CODES.get(status[i], f"score_{status[i]}")
        rejects.append(
            Reject(str(columns["id"][i]), where["file"], where["line"], f"scoring: {reason}", code)
        )
    return table, rejects


def _reject_info(columns: Mapping[str, Sequence[Any]]) -> list[str | None]:
    return list(columns.get(REJECT_COLUMN) or [None] * len(columns["id"]))


def refine_hybrid(
    columns: Mapping[str, Sequence[Any]],
    config: ScoreConfig,
    rescore_ids: Callable[[list[str]], Mapping[str, Sequence[Any]]],
) -> tuple[dict[str, list[Any]], HybridReport]:
    """Pass 1's first-order columns, with exact values where `hybrid_refine` asks for them.

    `rescore_ids(ids)` returns exact-phase columns holding at least those ids; it is called once
    for the calibration sample and once per refinement round, in a deterministic order.
    """
    outcomes = outcomes_from_columns(columns)
    rejects = dict(zip(columns["id"], _reject_info(columns), strict=True))

    def rescore(indices: list[int]) -> list[Outcome]:
        ids = [outcomes[i].id for i in indices]
        if not ids:
            return []
        cols = rescore_ids(ids)
        wanted = set(ids)
        got: dict[str, Outcome] = {}
        for o, info in zip(outcomes_from_columns(cols), _reject_info(cols), strict=True):
            if o.id in wanted:
                got[o.id] = o
                rejects[o.id] = info
        missing = Outcome(
            "", math.nan, math.nan, 0, Status.ERROR, reason="missing from the re-score"
        )
        return [got.get(i) or replace(missing, id=i) for i in ids]

    report = hybrid_refine(
        outcomes,
        cutoff=config.cutoff,
        calibration_size=config.calibration_size,
        safety=config.band_safety,
        seed=config.seed,
        rescore=rescore,
    )
    groups = _group_names(columns)
    return outcomes_to_columns(outcomes, groups, rejects), report


# -- the engine's recipe and driver ------------------------------------------------------------
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

    def __call__(self) -> OSTScorer:
        return OSTScorer(self.build_core(), self.phase or phase_of(self.config.mode), self.only_ids)


class _SharedCoreFactory:
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


def run_fingerprint(factory: OSTScorerFactory, pool_path: str | Path) -> dict[str, Any]:
    """What makes two runs' rows interchangeable: resuming under another one is refused.

    The proxy is identified by its folder's content hash (the driver never loads it); the batch
    size is in because rows agree across batch sizes only to round-off, not bit for bit.
    """
    from ostselect.data import pool_fingerprint
    from ostselect.scoring.anchors import anchor_hash

    return {
        "scorer": "ost",
        "proxy": {
            "content_hash": pool_fingerprint(factory.proxy_dir),
            "params": factory.params,
            "lora_layers": factory.lora_layers,
        },
        "anchor_hash": anchor_hash(factory.read_anchors()),
        "pool": pool_fingerprint(pool_path),
        "mode": factory.config.mode,
        "config": factory.config.model_dump(),
    }


# (pass label, samples, resumed): per batch on the local backend, per shard on Ray; every pass
# first reports 0 samples as it begins, so a display can show the pass and start its clock.
EngineProgress = Callable[[str, int, bool], None]


def first_pass_out(out_path: Path, mode: str) -> Path:
    """Where the first pass writes its table (its shards in `<that>.shards/`)."""
    return out_path.with_name(out_path.name + ".first-order") if mode == "hybrid" else out_path


def exact_rounds_root(out_path: Path) -> Path:
    """The folder of hybrid's exact rounds, one shard store per round."""
    return out_path.with_name(out_path.name + ".exact.shards")


@dataclass(frozen=True)
class KeptShards:
    """Finished shards of one pass that a rerun with `resume=True` will not score again."""

    store: Path
    shards: int
    samples: int  # scored rows + samples the workers rejected


def kept_shards(out_path: str | Path, mode: str) -> list[KeptShards]:
    """What an interrupted `score_pool` into `out_path` has on disk, per pass, in pass order."""
    from ostselect.engine.store import ShardStore, store_path_for

    out_path = Path(out_path)
    roots = [store_path_for(first_pass_out(out_path, mode))]
    if mode == "hybrid":
        roots += sorted(exact_rounds_root(out_path).glob("round-*.shards"))
    kept = []
    for root in roots:
        store = ShardStore(root)
        done = sorted(store.finished_indices()) if root.is_dir() else []
        if not done:
            continue
        samples = 0
        for i in done:
            samples += _parquet_rows(store.shard_path(i)) + int(store.shard_meta(i)["n_rejected"])
        kept.append(KeptShards(root, len(done), samples))
    return kept


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.read_metadata(path).num_rows)


def score_pool(
    pool_path: str | Path,
    factory: OSTScorerFactory,
    out_path: str | Path,
    *,
    resume: bool = False,
    shard_size: int = 256,
    backend: str = "local",
    address: str | None = None,
    num_workers: int | None = None,
    gpus_per_worker: float = 0,
    progress: EngineProgress | None = None,
) -> pa.Table:
    """Score a pool file with the engine (sharded, resumable) and write the scores table.

    Finished shards live in `<out>.shards/` (hybrid: `<out>.first-order.shards/` for pass 1 and
    `<out>.exact.shards/round-NNN.shards/` per exact round). Rejects of the reader and the workers
    go to `<out dir>/rejects.jsonl`, followed by the samples that stayed in the table unusable.
    """
    from ostselect.data import REJECTS_FILENAME, RejectsWriter
    from ostselect.engine import run_scoring
    from ostselect.engine.pool import ids_digest
    from ostselect.scores import read_provenance, write_scores

    started = time.perf_counter()
    out_path = Path(out_path)
    config = factory.config
    fingerprint = run_fingerprint(factory, pool_path)
    ray_started = False
    if backend == "ray":  # one Ray session for every pass (run_scoring reuses an open one)
        from ostselect.engine.ray_backend import start_ray

        ray_started = start_ray(address)
    shared = _SharedCoreFactory(factory)

    def make(phase: str, only_ids: Collection[str] | None = None) -> Callable[[], Any]:
        if backend == "local":
            return shared(phase, only_ids)
        return factory.with_phase(phase, only_ids)

    cost: dict[str, float] = {}  # every pass's cost, summed (hybrid pays for its exact rounds)

    def engine(label: str, phase_factory: Any, out: Path, fp: Mapping[str, Any]) -> pa.Table:
        def tick(n: int, resumed: bool) -> None:
            if progress is not None:
                progress(label, n, resumed)

        tick(0, False)  # the pass begins (model loading counts in its elapsed time)
        table = run_scoring(
            pool_path,
            phase_factory,
            out,
            shard_size=shard_size,
            batch_size=config.batch_size,
            resume=resume,
            backend=backend,  # type: ignore[arg-type]
            ray_address=address,
            num_workers=num_workers,
            gpus_per_worker=gpus_per_worker,
            image_root=factory.image_root,
            fingerprint=fp,
            progress=False,
            on_progress=tick,
        )
        for key, value in (read_provenance(_schema(out)).get("cost") or {}).items():
            cost[key] = cost.get(key, 0) + value
        return table

    try:
        if config.mode != "hybrid":
            first_out = out_path
            table = engine(config.mode, make(config.mode), first_out, fingerprint)
            columns: dict[str, Any] = table.to_pydict()
            report = None
        else:
            first_out = first_pass_out(out_path, config.mode)
            table = engine(
                "first-order",
                make("first-order"),
                first_out,
                {**fingerprint, "phase": "first-order"},
            )
            rounds = itertools.count()
            exact_root = exact_rounds_root(out_path)

            def rescore_ids(ids: list[str]) -> dict[str, list[Any]]:
                k = next(rounds)
                label = "calibration (exact)" if k == 0 else f"exact re-score, round {k}"
                fp = {**fingerprint, "phase": "exact", "round": k, "ids": ids_digest(ids)}
                out = exact_root / f"round-{k:03d}"
                return engine(label, make("exact", ids), out, fp).to_pydict()

            columns, report = refine_hybrid(table.to_pydict(), config, rescore_ids)
    finally:
        if ray_started:
            import ray

            ray.shutdown()

    provenance = read_provenance(_schema(first_out))
    final, rejects = finish_table(columns, config.mode)
    provenance["mode"] = config.mode
    # write_scores counts the final rows' statuses; the samples no row stands for are kept
    counts = provenance.get("counts") or {}
    provenance["counts"] = {k: v for k, v in counts.items() if k.startswith("rejected_")}
    (provenance.get("settings") or {}).pop("phase", None)  # the mode says it; hybrid has two
    provenance["cost"] = {k: round(v, 4) if isinstance(v, float) else v for k, v in cost.items()}
    provenance["pool"] = str(pool_path)
    provenance["pool_fingerprint"] = fingerprint["pool"]
    provenance["engine"] = {
        **(provenance.get("engine") or {}),
        "wall_s": round(time.perf_counter() - started, 3),  # every pass, end to end
    }
    if report is not None:
        provenance["hybrid"] = report.as_dict()
    write_scores(final, out_path, provenance)
    if first_out != out_path:
        first_out.unlink(missing_ok=True)
    # run_scoring rewrote the rejects file from its shards: append the unusable rows once.
    with RejectsWriter(out_path.parent / REJECTS_FILENAME, stage="score") as writer:
        for r in rejects:
            writer.add(r)
    return final


def _schema(path: Path) -> pa.Schema:
    import pyarrow.parquet as pq

    return pq.read_schema(path)
