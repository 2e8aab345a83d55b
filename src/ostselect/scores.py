"""The scores table: the one artifact every scorer writes and every consumer reads.

Convention (written once, here): **higher `utility` = keep**. For OST, utility > 0 means the
simulated step on the sample lowered the anchor loss; `toxic` marks utility < 0. Baselines write
the same table with their own score in `utility`, so selection, reports and the benchmark treat
all methods alike.

Columns: `id` (str), `utility` (float64), `rank` (int64, 1 = most useful, ties broken by pool
order), `toxic` (bool), `mode` (str), `status` (str, "ok" unless scoring hit a numerical fault),
and optionally `loss` (the candidate's own loss at theta), `tokens` (supervised tokens),
`utility[<group>]` per anchor group. The Parquet file's metadata holds a JSON provenance record
(`PROVENANCE_KEY`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ostselect import __version__
from ostselect.atomic import temp_beside

PROVENANCE_KEY = b"ostselect.provenance"
REQUIRED_COLUMNS = ("id", "utility", "rank", "toxic", "mode", "status")


class Status(StrEnum):
    """Every value of the `status` column, for every scorer: "ok", or why the row is unusable.

    A `StrEnum`, so a member equals (and is written as) its plain string: tables written before
    this enum read back the same.
    """

    OK = "ok"
    NONFINITE = "nonfinite"  # a NaN/inf utility or loss (the engine's guard marks it too)
    OOM = "oom"  # still out of memory as a single sample
    ERROR = "error"  # the sample could not be prepared or scored
    SKIPPED = "skipped"  # not asked for in this pass (hybrid's exact rounds)
    ZERO_GRADIENT = "zero-gradient"  # LESS: a zero feature has no direction (cosine undefined)
    UNPARSEABLE = "unparseable"  # judge: the reply held no score in 1..10
    REQUEST_FAILED = "request-failed"  # judge: the request failed after its retries


# -- provenance: one schema for every scorer ---------------------------------------------------
SCHEMA_VERSION = 1


class ProvenanceError(ValueError):
    """A provenance record that breaks the schema (on write), or lacks what an operation needs."""


class Counts(BaseModel):
    """How many rows the table holds and how they ended; derived from the `status` column on
    write. Extra keys: one per other status (`nonfinite`, `oom`, ...) and the engine's
    `rejected_reader` / `rejected_worker` (samples that never reached the table)."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, int] = Field(init=False)

    scored: int = Field(ge=0)
    ok: int = Field(ge=0)


class Cost(BaseModel):
    """What making the scores cost, under the same names for every scorer, so a benchmark can
    compare methods. Sample passes count one per sample per pass, batched or not; `wall_s` is
    the scoring time (summed over workers and resumed shards). Extra keys: method counters
    (`judge_requests`, `judge_tokens_in`, ...)."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, int | float] = Field(init=False)

    forward_passes: int | None = Field(default=None, ge=0)  # None: this scorer does not count
    backward_passes: int | None = Field(default=None, ge=0)
    wall_s: float = Field(ge=0)


class Provenance(BaseModel):
    """The record in every scores file's metadata: how the scores were made.

    One name per fact for every scorer (OST in-process or on the engine, every baseline): the step
    size is `eta`, the proxy's identity `proxy_fingerprint`, the costs sit in `cost`, the row
    tallies in `counts`. Keys that only one method has go under `settings`; any other top-level key
    is refused on write, so a new key is added here, once, or lives in `settings`.
    """

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    library_version: str
    scorer: str = Field(min_length=1)  # "ost" or the baseline's registered name
    mode: str = Field(min_length=1)  # the table's `mode` column ("exact", "loss", ...)
    counts: Counts
    cost: Cost
    # Shared facts; None (or absent) where they do not apply or were not known.
    pool: str | None = None  # the pool file scored (None: samples passed in memory)
    pool_fingerprint: str | None = None  # its content hash: selection refuses another pool
    seed: int | None = None
    eta: float | None = None  # the step size actually used (OST; resolved from the state if auto)
    optimizer: str | None = None
    dtype: str | None = None
    device: str | None = None
    proxy: str | None = None  # the proxy's name or folder
    proxy_fingerprint: str | None = None  # identity: the folder content hash (`fingerprint()`)
    params: str | None = None  # the trainable selection, as `--params` reads it
    proxy_warmup: dict[str, Any] | None = None  # `scores.untrained_proxy` reads it
    anchor_hash: str | None = None
    anchors: int | None = None  # anchor count
    anchor_groups: dict[str, int] | None = None  # anchors per group (coverage weights)
    fingerprint: dict[str, Any] | None = None  # engine: what makes rows interchangeable
    engine: dict[str, Any] | None = None  # engine: backend, shards, resumed shards, wall time
    hybrid: dict[str, Any] | None = None  # OST hybrid: calibration and re-score report
    settings: dict[str, Any] = Field(default_factory=dict)  # method-specific, free-form

    @field_validator("pool", "proxy", mode="before")
    @classmethod
    def _path_as_text(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value


SHARED_KEYS = frozenset(Provenance.model_fields)
COST_KEYS = ("forward_passes", "backward_passes", "wall_s")


def split_settings(values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` as a provenance fragment: shared keys stay on top, the rest go to `settings`.

    Scorers describe themselves in one flat mapping and this puts each key where the schema
    wants it, so a method never has to know which of its keys are shared.
    """
    out: dict[str, Any] = {}
    settings: dict[str, Any] = {}
    for key, value in values.items():
        if key == "settings":
            settings.update(value or {})
        elif key in SHARED_KEYS:
            out[key] = value
        else:
            settings[key] = value
    if settings:
        out["settings"] = settings
    return out


def count_statuses(status: Sequence[str]) -> dict[str, int]:
    """`counts` of a status column: all rows, `ok` rows, and one entry per other status seen."""
    tally: dict[str, int] = {}
    for s in status:
        tally[str(s)] = tally.get(str(s), 0) + 1
    ok = tally.pop(Status.OK.value, 0)
    return {"scored": len(status), "ok": ok, **dict(sorted(tally.items()))}


def _describe(error: ValidationError) -> str:
    """One line per schema violation, in the record's own key paths."""
    lines = []
    for e in error.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(record)"
        if e["type"] == "missing":
            lines.append(f"missing '{where}'")
        elif e["type"] == "extra_forbidden":
            lines.append(f"unknown key '{where}' (put method-specific keys under 'settings')")
        else:
            lines.append(f"'{where}': {e['msg']} (got {e.get('input')!r})")
    return "; ".join(lines)


def validate_provenance(record: Mapping[str, Any]) -> dict[str, Any]:
    """`record` checked against `Provenance`; a `ProvenanceError` lists every problem."""
    try:
        Provenance.model_validate(dict(record))
    except ValidationError as err:
        raise ProvenanceError(f"provenance does not follow the schema: {_describe(err)}") from None
    return dict(record)


def attach_provenance(table: pa.Table, provenance: Mapping[str, Any]) -> pa.Table:
    """`table` with its provenance record in the metadata, completed and validated.

    What the table itself says is filled in, never typed in: `counts` from the `status` column
    (keys the caller adds, like `rejected_reader`, are kept), `mode` from the `mode` column, the
    library and schema versions. The caller must give `scorer` and `cost`.
    """
    record = dict(provenance)
    record["schema_version"] = SCHEMA_VERSION
    record.setdefault("library_version", __version__)
    if "mode" not in record and "mode" in table.column_names and table.num_rows:
        record["mode"] = str(table.column("mode")[0].as_py())
    if "status" in table.column_names:
        derived = count_statuses(table.column("status").to_pylist())
        record["counts"] = {**(record.get("counts") or {}), **derived}
    record = validate_provenance(record)
    meta = dict(table.schema.metadata or {})
    meta[PROVENANCE_KEY] = json.dumps(record, sort_keys=True, default=str).encode()
    return table.replace_schema_metadata(meta)


# Keys of records written before the schema -> their name now.
_RENAMED = {
    "proxy_hash": "proxy_fingerprint",
    "pool_hash": "pool_fingerprint",
    "lr": "eta",
    "baseline": "scorer",
}


def upgrade_provenance(record: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A record in the current schema's names, and what it lacks (for a clear message later).

    Records written under the schema come back unchanged. Older ones had OST's
    `work.forward_samples` / `wall_time_s`, the engine's `status_ok` counts, baselines'
    `proxy_hash`, and the step size as `lr`, `eta` and `config.lr`: each is moved to its one
    name, and keys the schema does not know go to `settings`. Nothing is invented: a missing
    cost or scorer stays missing and is listed.
    """
    if "schema_version" in record:
        return dict(record), []
    old = dict(record)
    work = old.pop("work", None) or {}
    cost = dict(old.pop("cost", None) or {})
    if "forward_samples" in work:
        cost.setdefault("forward_passes", work["forward_samples"])
    if "backward_samples" in work:
        cost.setdefault("backward_passes", work["backward_samples"])
    if "wall_time_s" in old:
        cost.setdefault("wall_s", old.pop("wall_time_s"))
    counts = {str(k).removeprefix("status_"): v for k, v in (old.pop("counts", None) or {}).items()}
    for before, now in _RENAMED.items():
        if before in old:
            value = old.pop(before)
            if old.get(now) is None:
                old[now] = value
    if old.get("scorer") == "baseline":  # the engine's fingerprint once said "baseline"
        old["scorer"] = old.get("mode")
    config = old.get("config")
    if isinstance(config, dict) and old.get("eta") is None and config.get("lr") is not None:
        old["eta"] = config["lr"]
    upgraded = split_settings(old)
    if counts:
        upgraded["counts"] = counts
    if cost:
        upgraded["cost"] = cost
    problems = [
        f"no '{key}' (written before the provenance schema)"
        for key in ("scorer", "mode", "counts", "cost")
        if key not in upgraded
    ]
    problems += [f"no 'cost.{k}'" for k in COST_KEYS if cost and k not in cost]
    return upgraded, problems


def finite_status(values: Sequence[float] | np.ndarray) -> list[str]:
    """`ok` where the value is finite, `nonfinite` elsewhere."""
    return [Status.OK if np.isfinite(v) else Status.NONFINITE for v in values]


def group_column(group: str) -> str:
    """Column name of the utility restricted to one anchor group."""
    return f"utility[{group}]"


def rank_descending(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """1-based ranks, highest value first; ties keep input order; NaN ranks last."""
    v = np.asarray(values, dtype=np.float64)
    key = np.where(np.isnan(v), -np.inf, v)
    order = np.lexsort((np.arange(len(v)), -key))  # primary: -value, secondary: position
    ranks = np.empty(len(v), dtype=np.int64)
    ranks[order] = np.arange(1, len(v) + 1)
    return ranks


def build_scores_table(
    ids: Sequence[str],
    utility: Sequence[float] | np.ndarray,
    mode: str,
    *,
    status: Sequence[str] | None = None,
    extra_columns: Mapping[str, Sequence[Any]] | None = None,
) -> pa.Table:
    """Assemble a scores table; rank and toxic are derived from `utility`, never typed in."""
    u = np.asarray(utility, dtype=np.float64)
    if len(ids) != len(u):
        raise ValueError(f"{len(ids)} ids but {len(u)} utilities")
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate ids in scores")
    cols: dict[str, Any] = {
        "id": pa.array([str(i) for i in ids], pa.string()),
        "utility": pa.array(u, pa.float64()),
        "rank": pa.array(rank_descending(u), pa.int64()),
        "toxic": pa.array(np.nan_to_num(u, nan=0.0) < 0, pa.bool_()),
        "mode": pa.array([mode] * len(u), pa.string()),
        "status": pa.array(list(status) if status is not None else ["ok"] * len(u), pa.string()),
    }
    for name, values in (extra_columns or {}).items():
        cols[name] = pa.array(values)
    return pa.table(cols)


def write_scores(table: pa.Table, path: str | Path, provenance: Mapping[str, Any]) -> Path:
    """Write atomically (temp file + rename) with provenance in the Parquet metadata.

    The provenance is completed from the table and checked against `Provenance` first (see
    `attach_provenance`), so a file on disk always says how it was made in the shared schema.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"scores table lacks columns {missing}")
    path = Path(path)
    try:
        table = attach_provenance(table, provenance)
    except ProvenanceError as err:
        raise ProvenanceError(f"not writing {path}: {err}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_beside(path)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


@dataclass
class Scores:
    """A scores table read back with its provenance (in the current schema, old keys upgraded).

    `schema_problems` lists what an old file's provenance lacks; operations that need one of
    those keys ask through `require`, so an old table reads fine until something is missing.
    """

    table: pa.Table
    provenance: dict[str, Any]
    schema_problems: list[str] = field(default_factory=list)
    path: Path | None = None

    def to_pandas(self):
        return self.table.to_pandas()

    @property
    def ids(self) -> list[str]:
        return self.table.column("id").to_pylist()

    @property
    def utility(self) -> np.ndarray:
        return self.table.column("utility").to_numpy()

    def require(self, key: str, purpose: str) -> Any:
        """The provenance value `key`, or a `ProvenanceError` that says what needs it and why
        it is missing (a file from before the schema, or a hand-made one)."""
        value = self.provenance.get(key)
        if value is None:
            where = f"scores file {self.path}" if self.path is not None else "these scores"
            raise ProvenanceError(
                f"{where} record no '{key}' in their provenance, which {purpose} needs"
                + (f" ({'; '.join(self.schema_problems)})" if self.schema_problems else "")
                + ": score the pool again with this version of ostselect"
            )
        return value


def degenerate_utilities(utility: Sequence[float] | np.ndarray) -> str | None:
    """Why a ranking by these utilities means nothing, or None: every finite utility zero (the
    step moved nothing, e.g. a zero step size) or all equal. Ties order by pool position alone."""
    u = np.asarray(utility, dtype=np.float64)
    u = u[np.isfinite(u)]
    if not len(u):
        return None
    if not u.any():
        return (
            f"every one of the {len(u):,} scored samples has utility 0: the step changed nothing "
            "(a zero step size?), so the ranking is only pool order"
        )
    if len(u) > 1 and u.min() == u.max():
        return (
            f"all {len(u):,} scored samples have the same utility ({u[0]:.4g}), so the ranking "
            "is only pool order"
        )
    return None


# A proxy that has learned nothing specific rates every sample alike: each one-step update lowers
# the anchor loss by about the same amount (it teaches generic token statistics), so utilities are
# all positive and spread little around their mean. Measured: a random tiny proxy gave a
# coefficient of variation (std / |mean|) of 0.048 and no toxic sample; the benchmark's pretrained,
# warmed-up proxy 2.09 with 64% toxic. Below this value, with no toxic sample, we warn.
UNIFORM_CV = 0.1


def untrained_proxy(
    utility: Sequence[float] | np.ndarray, provenance: dict[str, Any]
) -> str | None:
    """Why these scores look like they come from an untrained proxy, or None.

    Two signs, either is enough: the proxy's warm-up did not lower its samples' loss
    (`proxy.warmup.loss_not_lowered`, on the warm-up record the scorer copies into the
    provenance), or the utilities are nearly uniform (see `UNIFORM_CV`). Such a ranking is noise
    dressed as an order, so the CLI and the report say so.
    """
    from ostselect.proxy.warmup import loss_not_lowered

    reasons = []
    warm = provenance.get("proxy_warmup") or {}
    head = warm.get("loss_before", warm.get("loss_head"))
    tail = warm.get("loss_after", warm.get("loss_tail"))
    if loss_not_lowered(head, tail):
        reasons.append(
            f"its warm-up did not lower the loss ({head:.4g} -> {tail:.4g} over "
            f"{warm.get('steps', '?')} steps)"
        )
    u = np.asarray(utility, dtype=np.float64)
    u = u[np.isfinite(u)]
    if len(u) >= 10 and u.min() >= 0 and u.mean() > 0:
        cv = float(u.std() / u.mean())
        if cv < UNIFORM_CV:
            reasons.append(
                f"its utilities are nearly uniform (std/mean {cv:.3f} < {UNIFORM_CV}, no toxic "
                "sample): every sample helps about equally"
            )
    if not reasons:
        return None
    return (
        "the proxy looks untrained: "
        + "; ".join(reasons)
        + ". This ranking is mostly noise: score with a proxy that can do the task (pretrained, "
        "then `ost warmup` on 5% of the pool at a learning rate that lowers the loss)"
    )


def ranking_alerts(utility: Sequence[float] | np.ndarray, provenance: dict[str, Any]) -> list[str]:
    """Everything that makes a ranking by `utility` meaningless, one line each (CLI and report)."""
    return [a for a in (degenerate_utilities(utility), untrained_proxy(utility, provenance)) if a]


def read_provenance(table: pa.Table | pa.Schema) -> dict[str, Any]:
    """The provenance record of a table or Parquet schema, old keys upgraded (see
    `upgrade_provenance`); {} when it has none."""
    schema = table if isinstance(table, pa.Schema) else table.schema
    raw = (schema.metadata or {}).get(PROVENANCE_KEY)
    return upgrade_provenance(json.loads(raw))[0] if raw else {}


def read_scores(path: str | Path) -> Scores:
    """Read a scores Parquet file; a clear error if it is not one.

    A file written under the schema must follow it (a broken record is refused, naming the
    file); an older file is read tolerantly, its keys upgraded and its gaps in `schema_problems`.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"scores file {path} does not exist")
    table = pq.read_table(path)
    missing = [c for c in ("id", "utility") if c not in table.column_names]
    if missing:
        raise ValueError(f"{path} is not a scores table: missing columns {missing}")
    raw = (table.schema.metadata or {}).get(PROVENANCE_KEY)
    record = json.loads(raw) if raw else {}
    provenance, problems = upgrade_provenance(record)
    if "schema_version" in record and record["schema_version"] <= SCHEMA_VERSION:
        try:
            validate_provenance(provenance)
        except ProvenanceError as err:
            raise ProvenanceError(f"scores file {path}: {err}") from None
    return Scores(table=table, provenance=provenance, schema_problems=problems, path=path)
