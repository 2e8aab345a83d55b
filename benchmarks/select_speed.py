"""Coverage-aware selection at scale: `--policy coverage` vs `topk` on 1,000,000 rows x 8 groups.

Times the selection policy itself (what `select()` runs once the scores are joined with the pool):
the lazy greedy (`ostselect.select.coverage.greedy_cover`) against top-k by total utility (a
stable sort, as `select()` orders candidates), at k = 20%. Utilities are synthetic but shaped like
OST's: a shared quality factor, a main skill per sample, and a minority that help several groups.
Prints wall time, exact gain evaluations, peak memory the policy allocates (tracemalloc, a
separate untimed run, since tracing slows Python allocations) and the process's peak RSS.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/select_speed.py [--rows 1000000 --groups 8]
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc
from collections.abc import Callable

import numpy as np

from ostselect.select.coverage import default_tau, greedy_cover, positive_gains


def make_utilities(rows: int, groups: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(per-group utilities, total utility = their anchor-share-weighted mean)."""
    rng = np.random.default_rng(seed)
    shares = rng.dirichlet(np.full(groups, 4.0))
    quality = rng.normal(0.01, 0.02, rows)
    main = rng.choice(groups, size=rows, p=shares)
    per_group = quality[:, None] * rng.uniform(0.2, 1.0, groups) + rng.normal(
        0, 0.01, (rows, groups)
    )
    per_group[np.arange(rows), main] += np.abs(rng.normal(0.03, 0.02, rows))
    multi = rng.random(rows) < 0.2  # a minority helps every group a little more
    per_group[multi] += 0.02
    per_group *= rng.uniform(0.5, 3.0, groups)  # groups differ in utility scale
    return per_group, per_group @ shares


def topk(total: np.ndarray, k: int) -> np.ndarray:
    order = np.lexsort((np.arange(len(total)), -total))  # descending utility, ties by pool order
    return order[:k]


def coverage(per_group: np.ndarray, weights: np.ndarray, k: int) -> list[int]:
    gains = positive_gains(per_group)
    result = greedy_cover(gains, weights, default_tau(gains, k), k=k)
    coverage.evaluations = result.evaluations  # type: ignore[attr-defined]
    return result.rows


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(seconds, CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def peak_mib(fn: Callable[[], object]) -> float:
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--groups", type=int, default=8)
    ap.add_argument("--fraction", type=float, default=0.2)
    args = ap.parse_args(argv)
    per_group, total = make_utilities(args.rows, args.groups)
    weights = np.full(args.groups, 1.0 / args.groups)
    k = round(args.fraction * args.rows)
    print(f"{args.rows:,} rows x {args.groups} groups, k = {k:,} ({args.fraction:.0%})")
    t_top, c_top = timed(lambda: topk(total, k))
    t_cov, c_cov = timed(lambda: coverage(per_group, weights, k))
    evals = coverage.evaluations  # type: ignore[attr-defined]
    m_top = peak_mib(lambda: topk(total, k))
    m_cov = peak_mib(lambda: coverage(per_group, weights, k))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"topk     {t_top:7.2f} s wall ({c_top:6.2f} s CPU), peak {m_top:7.1f} MiB allocated")
    print(
        f"coverage {t_cov:7.2f} s wall ({c_cov:6.2f} s CPU), peak {m_cov:7.1f} MiB allocated, "
        f"{evals:,} exact gain evaluations ({evals / k:.2f} per pick)"
    )
    print(f"coverage / topk: {t_cov / t_top:.0f}x time, {m_cov / m_top:.1f}x memory")
    inputs = (per_group.nbytes + total.nbytes) / 2**20
    print(f"input arrays: {inputs:.0f} MiB; process peak RSS {rss:.0f} MiB")
    rows = coverage(per_group, weights, k)
    main_group = per_group.argmax(axis=1)
    kept_top = np.bincount(main_group[topk(total, k)], minlength=args.groups)
    kept_cov = np.bincount(main_group[rows], minlength=args.groups)
    pool = np.bincount(main_group, minlength=args.groups)
    print("samples by main group (argmax), share of pool -> kept by topk / coverage:")
    for g in range(args.groups):
        print(
            f"  g{g}: {pool[g] / args.rows:6.1%} -> {kept_top[g] / k:6.1%} / {kept_cov[g] / k:6.1%}"
        )


if __name__ == "__main__":
    main()
