"""Split an integer total across strata: proportional shares, capacity caps, largest remainders.

Shared by balanced selection (quota per stratum) and anchor-set building (draws per stratum), so the
two agree on what "proportional" means.
"""

from __future__ import annotations

import math
from collections.abc import Mapping


def allocate(
    total: int,
    weights: Mapping[str, float],
    capacity: Mapping[str, int] | None = None,
    *,
    at_least_one: bool = False,
) -> dict[str, int]:
    """Integer shares of `total` proportional to `weights`, each at most its `capacity`.

    A stratum whose proportional share exceeds its capacity is filled to capacity and the rest is
    re-shared among the others (water-filling), so the shares sum to min(total, sum of capacities).
    Rounding is largest-remainder; ties go to the larger weight, then to the earlier stratum, so the
    result is deterministic. `at_least_one` gives every non-empty stratum one item when the total
    allows it, taking them from the strata that were rounded up most.
    """
    names = list(weights)
    cap = {s: (capacity[s] if capacity is not None else total) for s in names}
    if any(w < 0 for w in weights.values()) or any(c < 0 for c in cap.values()):
        raise ValueError("weights and capacities must be non-negative")
    total = max(0, min(total, sum(cap.values())))
    alloc = {s: 0 for s in names}
    ideal = {s: 0.0 for s in names}
    open_ = [s for s in names if cap[s] > 0 and weights[s] > 0]
    remaining = total
    # Saturate strata whose share exceeds their capacity, until every remaining share fits.
    while open_ and remaining > 0:
        wsum = sum(weights[s] for s in open_)
        shares = {s: remaining * weights[s] / wsum for s in open_}
        full = [s for s in open_ if shares[s] >= cap[s]]
        if not full:
            ideal.update(shares)
            break
        for s in full:
            alloc[s] = ideal[s] = cap[s]
            remaining -= cap[s]
        open_ = [s for s in open_ if s not in full]
    else:
        open_ = []
    if open_:
        for s in open_:
            alloc[s] = math.floor(ideal[s])
        leftover = remaining - sum(alloc[s] for s in open_)
        order = sorted(open_, key=lambda s: (-(ideal[s] - alloc[s]), -weights[s], names.index(s)))
        for s in order[:leftover]:
            alloc[s] += 1
    if at_least_one:
        _give_each_one(alloc, ideal, cap, names)
    return alloc


def _give_each_one(
    alloc: dict[str, int], ideal: dict[str, float], cap: Mapping[str, int], names: list[str]
) -> None:
    empty = [s for s in names if alloc[s] == 0 and cap[s] > 0]
    for s in empty:
        donors = [d for d in names if alloc[d] > 1]
        if not donors:
            return  # total < number of non-empty strata: one each is impossible
        donor = max(donors, key=lambda d: (alloc[d] - ideal[d], alloc[d], -names.index(d)))
        alloc[donor] -= 1
        alloc[s] = 1
