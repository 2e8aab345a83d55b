"""OST's rows as columns, and the final scores table: one shape for every pass and path.

A pass returns columns (id, utility, status, loss, tokens, `utility[<group>]`, plus what hybrid and
the rejects need: `step_sq` of first-order rows, `scored_exactly` of exact ones, and `_reject`, the
file/line/reason of an unusable row). `finish_table` turns the last pass's columns into the scores
table (rank/toxic over all rows) and a `Reject` for every row that stayed in it unusable.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from ostselect.data.rejects import SCORE_NONFINITE, SCORE_OOM, SCORE_PREPARE_FAILED, Reject
from ostselect.data.sample import Sample
from ostselect.scores import Status, build_scores_table, group_column
from ostselect.scoring.modes import Outcome

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


def group_names(columns: Mapping[str, Any]) -> list[str]:
    return [c[len("utility[") : -1] for c in columns if c.startswith("utility[")]


def outcomes_from_columns(columns: Mapping[str, Sequence[Any]]) -> list[Outcome]:
    """Numbers only (no samples): what `hybrid_refine` needs of a scored table."""
    n = len(columns["id"])
    groups = group_names(columns)
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
    for g in group_names(columns):
        extra[group_column(g)] = pa.array(columns[group_column(g)], pa.float64())
    if mode == "hybrid":
        extra[EXACT_COLUMN] = pa.array(
            [bool(v) for v in columns.get(EXACT_COLUMN) or [False] * n], pa.bool_()
        )
    utility = [math.nan if u is None else float(u) for u in columns["utility"]]
    table = build_scores_table(
        [str(i) for i in columns["id"]], utility, mode, status=status, extra_columns=extra
    )
    info = reject_info(columns)
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


def reject_info(columns: Mapping[str, Sequence[Any]]) -> list[str | None]:
    return list(columns.get(REJECT_COLUMN) or [None] * len(columns["id"]))
