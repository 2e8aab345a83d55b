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
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

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
    """Write atomically (temp file + rename) with provenance in the Parquet metadata."""
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"scores table lacks columns {missing}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prov = {"library_version": __version__, **dict(provenance)}
    meta = dict(table.schema.metadata or {})
    meta[PROVENANCE_KEY] = json.dumps(prov, sort_keys=True, default=str).encode()
    table = table.replace_schema_metadata(meta)
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
    """A scores table read back with its provenance."""

    table: pa.Table
    provenance: dict[str, Any]

    def to_pandas(self):
        return self.table.to_pandas()

    @property
    def ids(self) -> list[str]:
        return self.table.column("id").to_pylist()

    @property
    def utility(self) -> np.ndarray:
        return self.table.column("utility").to_numpy()


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
    schema = table if isinstance(table, pa.Schema) else table.schema
    raw = (schema.metadata or {}).get(PROVENANCE_KEY)
    return json.loads(raw) if raw else {}


def read_scores(path: str | Path) -> Scores:
    """Read a scores Parquet file; a clear error if it is not one."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"scores file {path} does not exist")
    table = pq.read_table(path)
    missing = [c for c in ("id", "utility") if c not in table.column_names]
    if missing:
        raise ValueError(f"{path} is not a scores table: missing columns {missing}")
    return Scores(table=table, provenance=read_provenance(table))
