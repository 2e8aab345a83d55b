"""Paired bootstrap intervals for accuracy differences between benchmark rows.

Every row trains on the same seeds and is graded on the same test items, so two rows differ by
the data alone: resampling seeds and items *together* for both rows (a paired, two-level
bootstrap) cancels the shared item difficulty and seed luck that an unpaired comparison of
mean ± std would count twice. A row "beats" another only when the interval excludes zero.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

N_BOOT = 2000
LEVEL = 0.95
_CHUNK = 256  # bootstrap replicates per block: bounds memory at _CHUNK x n_items integers

# The plain-data rows every selection row is measured against.
FULL_ROW = "Full-SFT"
CLEAN_ROW = "Clean-only (oracle)"
REFERENCE_METHODS = ("full", "clean", "random")


@dataclass(frozen=True)
class PairedDiff:
    """Mean accuracy difference a - b (fractions, not points) and its bootstrap interval."""

    diff: float
    lo: float
    hi: float
    n_seeds: int
    n_items: int
    level: float = LEVEL

    @property
    def excludes_zero(self) -> bool:
        return self.lo > 0.0 or self.hi < 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "diff": self.diff,
            "lo": self.lo,
            "hi": self.hi,
            "level": self.level,
            "n_seeds": self.n_seeds,
            "n_items": self.n_items,
            "excludes_zero": self.excludes_zero,
        }


@lru_cache(maxsize=4)
def _draws(n_boot: int, n_seeds: int, n_items: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Resampled seed counts [n_boot, n_seeds] and item indices [n_boot, n_items].

    Drawn as `rng.integers(0, n_seeds, (n_boot, n_seeds))` then `rng.integers(0, n_items,
    (n_boot, n_items))` from `np.random.default_rng(seed)`, so a slow loop can replay them. Cached:
    every comparison of one results file shares its shape, and common draws are fine for a paired
    comparison (each comparison's interval is still exact for its own pair).
    """
    rng = np.random.default_rng(seed)
    seed_idx = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    item_idx = rng.integers(0, n_items, size=(n_boot, n_items))
    offsets = (np.arange(n_boot) * n_seeds)[:, None]
    seed_counts = np.bincount((seed_idx + offsets).ravel(), minlength=n_boot * n_seeds)
    seed_counts = seed_counts.reshape(n_boot, n_seeds).astype(np.float64)
    item_idx = item_idx.astype(np.int32 if n_items < 2**31 else np.int64)
    seed_counts.flags.writeable = False
    item_idx.flags.writeable = False
    return seed_counts, item_idx


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def paired_bootstrap(
    a: np.ndarray | Sequence[Sequence[int]],
    b: np.ndarray | Sequence[Sequence[int]],
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = LEVEL,
) -> PairedDiff:
    """Mean of a - b with a percentile interval from a paired two-level bootstrap.

    `a` and `b` are 0/1 arrays [n_seeds, n_items]: row i of both is the same training seed, column
    j the same test item. Each replicate resamples the seeds with replacement and the items with
    replacement, identically for `a` and `b`, and takes the mean difference over the resampled
    (seed, item) grid; the interval is the (1 - level)/2 and (1 + level)/2 percentiles
    (numpy's linear interpolation) of those replicates. Sums stay exact integers until the final
    division, so degenerate inputs give exact intervals (a == b -> [0, 0]).
    """
    x = np.asarray(a)
    y = np.asarray(b)
    if x.ndim == 1:
        x = x[None, :]
    if y.ndim == 1:
        y = y[None, :]
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"a {x.shape} and b {y.shape} must be the same [n_seeds, n_items] shape")
    n_seeds, n_items = x.shape
    if n_seeds == 0 or n_items == 0:
        raise ValueError("paired_bootstrap needs at least one seed and one item")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be positive, got {n_boot}")
    # float64 holds these integer sums exactly (|sum| <= n_seeds * n_items) and uses BLAS
    d = x.astype(np.float64) - y.astype(np.float64)
    total = n_seeds * n_items
    seed_counts, item_idx = _draws(n_boot, n_seeds, n_items, seed)
    stats = np.empty(n_boot, dtype=np.float64)
    for sl in _chunks(n_boot, _CHUNK):
        per_item = seed_counts[sl] @ d  # [chunk, n_items]: item sums over the resampled seeds
        picked = np.take_along_axis(per_item, item_idx[sl], axis=1)
        stats[sl] = picked.sum(axis=1) / total
    q = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(stats, [q, 100.0 - q])
    return PairedDiff(
        diff=float(d.sum() / total),
        lo=float(lo),
        hi=float(hi),
        n_seeds=n_seeds,
        n_items=n_items,
        level=level,
    )


# ---- comparisons between the rows of a results dict ------------------------------------------
def runs_by_row(results: dict[str, Any]) -> dict[tuple[str, str], dict[int, dict[str, Any]]]:
    """(row, protocol) -> seed -> run (the first run of a seed wins)."""
    out: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for r in results.get("runs") or []:
        out.setdefault((r["row"], r["protocol"]), {}).setdefault(int(r["seed"]), r)
    return out


def _correct_matrix(
    runs: dict[int, dict[str, Any]], seeds: Sequence[int], n_items: int | None
) -> np.ndarray | None:
    rows = []
    for s in seeds:
        c = runs[s].get("correct")
        if c is None or (n_items is not None and len(c) != n_items):
            return None
        rows.append(c)
    if len({len(c) for c in rows}) != 1:
        return None
    return np.asarray(rows, dtype=np.int8)


def compare_rows(
    results: dict[str, Any],
    row: str,
    baseline: str,
    protocol: str,
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = LEVEL,
) -> tuple[PairedDiff, list[int]] | None:
    """`row` minus `baseline` under `protocol` on their common seeds, or None if not measurable
    (a row missing, no common seed, or runs without per-item `correct` of the test split's size)."""
    by = runs_by_row(results)
    a, b = by.get((row, protocol)), by.get((baseline, protocol))
    if not a or not b:
        return None
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    n_items = (results.get("test") or {}).get("n")
    x = _correct_matrix(a, seeds, n_items)
    y = _correct_matrix(b, seeds, n_items)
    if x is None or y is None or x.shape != y.shape:
        return None
    return paired_bootstrap(x, y, n_boot=n_boot, seed=seed, level=level), seeds


def policy_of(run: dict[str, Any]) -> str:
    """The selection policy of a run: its `policy`, else guessed from the method name."""
    if run.get("policy"):
        return str(run["policy"])
    method = str(run.get("method", ""))
    for policy in ("balanced", "coverage"):
        if f"-{policy}" in method:
            return policy
    return "topk"


def scorer_of(run: dict[str, Any]) -> str:
    """The scorer behind a run's subset: the method without a policy suffix ('-balanced...')."""
    method = str(run.get("method", ""))
    for policy in ("balanced", "coverage"):
        cut = method.find(f"-{policy}")
        if cut > 0:
            return method[:cut]
    return method


def _comparison(
    row: dict[str, Any], baseline: str, kind: str, found: tuple[PairedDiff, list[int]]
) -> dict[str, Any]:
    diff, seeds = found
    return {
        "row": row["row"],
        "protocol": row["protocol"],
        "method": row["method"],
        "fraction": row["fraction"],
        "baseline": baseline,
        "kind": kind,
        **diff.as_dict(),
        "seeds": seeds,
    }


def _row_heads(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One representative run per (row, protocol), in the order rows first appear."""
    return [next(iter(seeds.values())) for seeds in runs_by_row(results).values()]


def row_comparisons(
    results: dict[str, Any],
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = LEVEL,
) -> list[dict[str, Any]]:
    """Every measurable paired comparison of a results dict, one dict each.

    kind "random": a selection row (not Full-SFT, Clean-only or Random) minus the Random row with
    the same fraction, same protocol. kind "full": any row but Full-SFT
    minus Full-SFT, same protocol. kind "topk": a balanced or coverage-aware policy row minus the
    plain top-k row of the same scorer and fraction, same protocol. Each dict carries row,
    protocol, method, fraction, baseline (the row compared against), kind, the `PairedDiff` fields
    and the common seeds. Rows without per-item `correct` are skipped.
    """
    heads = _row_heads(results)
    random_rows = {
        (h["protocol"], round(float(h["fraction"]), 6)): h["row"]
        for h in heads
        if h["method"] == "random"
    }
    topk_rows: dict[tuple[str, str, float], dict[str, Any]] = {}
    for h in heads:  # the plain top-k row of a scorer; a main-table row wins over a variant
        if h["method"] not in REFERENCE_METHODS and policy_of(h) == "topk":
            key = (h["protocol"], scorer_of(h), round(float(h["fraction"]), 6))
            if key not in topk_rows or ("variant" in topk_rows[key] and "variant" not in h):
                topk_rows[key] = h
    kw = {"n_boot": n_boot, "seed": seed, "level": level}
    out = []
    for h in heads:
        protocol, fraction = h["protocol"], round(float(h["fraction"]), 6)
        targets: list[tuple[str, str]] = []
        if h["method"] not in REFERENCE_METHODS and (protocol, fraction) in random_rows:
            targets.append((random_rows[(protocol, fraction)], "random"))
        if h["row"] != FULL_ROW:
            targets.append((FULL_ROW, "full"))
        if h["method"] not in REFERENCE_METHODS and policy_of(h) != "topk":
            plain = topk_rows.get((protocol, scorer_of(h), fraction))
            if plain is not None and plain["row"] != h["row"]:
                targets.append((plain["row"], "topk"))
        for baseline, kind in targets:
            found = compare_rows(results, h["row"], baseline, protocol, **kw)
            if found is not None:
                out.append(_comparison(h, baseline, kind, found))
    return out


def find_comparison(
    comparisons: Sequence[dict[str, Any]], row: str, protocol: str, kind: str
) -> dict[str, Any] | None:
    """The comparison of `row` under `protocol` against the `kind` reference, if measured."""
    return next(
        (
            c
            for c in comparisons
            if c["row"] == row and c["protocol"] == protocol and c["kind"] == kind
        ),
        None,
    )


def fmt_points(x: float) -> str:
    """A difference in accuracy (fraction) as signed points: 0.031 -> '+3.1'."""
    v = 100.0 * x
    if abs(v) < 0.05:
        v = 0.0  # no '-0.0'
    return f"{v:+.1f}"


def fmt_diff(c: dict[str, Any]) -> str:
    """'+3.1 [+1.2, +5.0]' (points, interval at the comparison's level)."""
    return f"{fmt_points(c['diff'])} [{fmt_points(c['lo'])}, {fmt_points(c['hi'])}]"
