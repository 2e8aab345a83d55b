"""Competence gates: is the benchmark able to tell data selection methods apart at all?

A target that cannot read the digits or do the arithmetic fails every row alike, and a pool whose
noise does not hurt leaves selection nothing to win; then differences between rows are noise. The
gates check both before anyone reads the comparisons: the frozen reader, caption reading and text
arithmetic after pretraining, clean-only accuracy, negative transfer of the noisy pool, and seed
spread. Values and thresholds are fractions (0.95 = 95 %).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ostselect.bench.stats import CLEAN_ROW, FULL_ROW, compare_rows, fmt_points

READER_MIN = 0.95  # held-out per-cell digit accuracy of the frozen vision reader
CAPTION_MIN = 0.90  # held-out captions read with every digit right
ARITHMETIC_MIN = 0.95  # text-only arithmetic facts answered right
CLEAN_ONLY_MIN = 0.60  # clean-only test accuracy under Protocol B
NEGATIVE_TRANSFER_MIN = 0.05  # clean-only minus Full-SFT under Protocol B, interval excluding 0
SEED_STD_MAX = 0.02  # seed std of the Full-SFT and Random rows under Protocol B
GATE_PROTOCOL = "B"


def _gate(
    name: str,
    value: float | None,
    threshold: float,
    op: str,
    description: str,
    *,
    required: bool = True,
    passed: bool | str | None = "by value",
    **extra: Any,
) -> dict[str, Any]:
    """A gate dict; `passed` is value-vs-threshold unless given (None: not measurable)."""
    if passed == "by value":
        passed = None if value is None else _meets(value, threshold, op)
    return {
        "name": name,
        "value": value,
        "threshold": threshold,
        "op": op,
        "passed": passed,
        "required": required,
        "description": description,
        **extra,
    }


def _meets(value: float, threshold: float, op: str) -> bool:
    return value >= threshold if op == ">=" else value <= threshold


def _pretrain_value(results: dict[str, Any], role: str, key: str) -> float | None:
    value = ((results.get("pretrain") or {}).get(role) or {}).get(key)
    return None if value is None else float(value)


def _accuracies(results: dict[str, Any], row: str, protocol: str) -> list[float]:
    return [
        float(r["accuracy"])
        for r in results.get("runs") or []
        if r["row"] == row and r["protocol"] == protocol
    ]


def _random_rows(results: dict[str, Any]) -> list[str]:
    rows = {
        r["row"]: r["fraction"]
        for r in results.get("runs") or []
        if r["method"] == "random" and r["protocol"] == GATE_PROTOCOL
    }
    return sorted(rows, key=lambda name: rows[name])


def competence_gates(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The gates of a results dict, in reading order.

    Each gate: name, value, threshold, op ('>=' or '<='), passed (None when the results cannot
    measure it), required (False: reported, not gating), description; the negative-transfer gate
    also has lo/hi (its paired interval) when measured.
    """
    gates = []
    for role, required in (("target", True), ("proxy", True)):
        gates.append(
            _gate(
                f"digit reader ({role})",
                _pretrain_value(results, role, "reader_cell_accuracy"),
                READER_MIN,
                ">=",
                f"frozen vision reader of the {role}: held-out per-cell digit accuracy",
                required=required,
            )
        )
    for role, required in (("target", True), ("proxy", False)):
        gates.append(
            _gate(
                f"caption reading ({role})",
                _pretrain_value(results, role, "caption_accuracy"),
                CAPTION_MIN,
                ">=",
                f"pretrained {role} reads held-out captions with every digit right"
                + ("" if required else " (reported, not gating)"),
                required=required,
            )
        )
    gates.append(
        _gate(
            "text arithmetic (target)",
            _pretrain_value(results, "target", "arithmetic_accuracy"),
            ARITHMETIC_MIN,
            ">=",
            "pretrained target answers text-only arithmetic facts right",
        )
    )
    clean = _accuracies(results, CLEAN_ROW, GATE_PROTOCOL)
    gates.append(
        _gate(
            f"clean-only (Protocol {GATE_PROTOCOL})",
            float(np.mean(clean)) if clean else None,
            CLEAN_ONLY_MIN,
            ">=",
            "test accuracy of the target trained on the clean part of the pool only",
        )
    )
    gates.append(_negative_transfer_gate(results, clean))
    for row in (FULL_ROW, *_random_rows(results)):
        accs = _accuracies(results, row, GATE_PROTOCOL)
        std = float(np.std(accs, ddof=1)) if len(accs) > 1 else None
        gates.append(
            _gate(
                f"seed std {row} (Protocol {GATE_PROTOCOL})",
                std,
                SEED_STD_MAX,
                "<=",
                f"sample std of test accuracy over {len(accs)} seed(s)"
                + ("" if std is not None else ": needs two seeds"),
            )
        )
    return gates


def _negative_transfer_gate(results: dict[str, Any], clean: Sequence[float]) -> dict[str, Any]:
    """Clean-only minus Full-SFT under B: at least 5 points, with a paired interval above 0."""
    full = _accuracies(results, FULL_ROW, GATE_PROTOCOL)
    name = f"negative transfer (Protocol {GATE_PROTOCOL})"
    description = (
        "clean-only minus Full-SFT: the noisy pool must hurt (interval excluding 0), "
        "or selection has nothing to win"
    )
    if not clean or not full:
        return _gate(name, None, NEGATIVE_TRANSFER_MIN, ">=", description)
    found = compare_rows(results, CLEAN_ROW, FULL_ROW, GATE_PROTOCOL)
    if found is None:  # no per-item results: the size is measurable, its interval is not
        gap = float(np.mean(clean) - np.mean(full))
        passed = False if gap < NEGATIVE_TRANSFER_MIN else None
        return _gate(
            name,
            gap,
            NEGATIVE_TRANSFER_MIN,
            ">=",
            description + " (no per-item results: interval not measured)",
            passed=passed,
        )
    diff, _ = found
    passed = diff.diff >= NEGATIVE_TRANSFER_MIN and diff.lo > 0.0
    return _gate(
        name,
        diff.diff,
        NEGATIVE_TRANSFER_MIN,
        ">=",
        description,
        passed=passed,
        lo=diff.lo,
        hi=diff.hi,
    )


def gates_passed(gates: Sequence[dict[str, Any]]) -> bool:
    """True when every required gate was measured and passed."""
    return all(g["passed"] is True for g in gates if g.get("required", True))


def failed_gates(gates: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Required gates that were measured and failed."""
    return [g for g in gates if g.get("required", True) and g["passed"] is False]


def unmeasured_gates(gates: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Required gates the results could not measure (older or smaller runs)."""
    return [g for g in gates if g.get("required", True) and g["passed"] is None]


def fmt_gate_value(gate: dict[str, Any]) -> str:
    """The gate's value in % (or points for a difference); 'not measured' when absent."""
    value = gate["value"]
    if value is None:
        return "not measured"
    if gate["name"].startswith("negative transfer"):
        text = f"{fmt_points(value)} pts"
        if "lo" in gate:
            text += f" [{fmt_points(gate['lo'])}, {fmt_points(gate['hi'])}]"
        return text
    if gate["name"].startswith("seed std"):
        return f"{100 * value:.1f} pts"
    return f"{100 * value:.1f}%"


def fmt_gate_threshold(gate: dict[str, Any]) -> str:
    unit = "%" if not gate["name"].startswith(("negative transfer", "seed std")) else " pts"
    op = "≥" if gate["op"] == ">=" else "≤"
    return f"{op} {100 * gate['threshold']:.0f}{unit}"


def fmt_gate_status(gate: dict[str, Any]) -> str:
    """'passed', 'FAILED', 'not measured', or the same with '(info)' for a non-gating one."""
    status = {True: "passed", False: "FAILED", None: "not measured"}[gate["passed"]]
    return status if gate.get("required", True) else f"{status} (info)"
