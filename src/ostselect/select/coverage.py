"""Coverage-aware selection: keep what helps every anchor group, not only the largest utilities.

Top-k by one utility collapses coverage: a sample whose step helps several anchor groups outscores
one that helps a single group, however necessary that group is. With per-anchor-group utilities
u_i^g (`ost score --group-field`), we instead choose S to maximise

    F(S) = sum_g w_g * log1p(M_g(S) / tau_g),   M_g(S) = sum_{i in S} max(u_i^g, 0)

F is monotone submodular (a concave function of a non-negative modular mass, per group), so greedy
has the (1 - 1/e) guarantee under a cardinality limit, and the lazy greedy (CELF, Minoux 1978;
Leskovec et al. 2007) gives the same picks while re-evaluating only the few candidates whose stale
gain could still win. The marginal gain of i given S is written as

    gain_i(S) = sum_g w_g * log1p(u_i^g / (tau_g + M_g(S)))

(the same number as the difference of F, but computed so that, in floating point too, it never
increases as S grows: that is what makes the lazy greedy pick exactly what plain greedy picks).

Choices, and why:
- **w_g** = the group's share of the anchor set (`anchor_groups` in the scores provenance). The
  total OST utility is the anchor-share-weighted sum of the group utilities, so with a linear phi
  F would be plain top-k by (positive) utility; the concave phi is the only change.
- **tau_g** = (k / n) * sum_i max(u_i^g, 0) over the n candidates: the mass of group g that a
  *random* subset of the same size holds in expectation. F is then invariant to each group's
  utility scale (anchors with larger losses do not dominate), a group at random-subset coverage
  scores log 2, and its returns diminish from there. Under a token budget, k is the number of
  average-cost candidates that fit.
- A token budget uses the cost-benefit rule (gain per token, as in CELF's budgeted variant). Alone
  it has no constant-factor guarantee when one sample costs a large part of the budget; with SFT
  samples of comparable length it behaves like the cardinality case.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

GROUP_COLUMN = re.compile(r"^utility\[(.+)\]$")
_MIN_COST = 1e-9
_CHUNK = 1 << 16  # rows per kernel call when evaluating a whole pool


def group_names(columns: Iterable[str]) -> list[str]:
    """Anchor groups of a scores table, in column order (`utility[<group>]` columns)."""
    return [m.group(1) for c in columns if (m := GROUP_COLUMN.match(str(c)))]


def positive_gains(utilities: np.ndarray) -> np.ndarray:
    """max(u, 0) as float64 with NaN (no evidence for that group) as 0."""
    u = np.asarray(utilities, dtype=np.float64)
    return np.where(u > 0.0, u, 0.0)


def group_weights(
    groups: Sequence[str],
    provenance: Mapping[str, object],
    override: Mapping[str, float] | None = None,
) -> tuple[np.ndarray, str]:
    """w_g summing to 1, and where they came from (for selection.json and warnings).

    `override` must name every group (a typo would otherwise silently zero a group). Without it,
    the anchor counts recorded by `ost score` (`anchor_groups`) are used; failing those, equal
    weights, and the source string says so.
    """
    if override is not None:
        unknown = sorted(set(override) - set(groups))
        missing = [g for g in groups if g not in override]
        if unknown or missing:
            raise ValueError(
                f"group_weights must name exactly the anchor groups {list(groups)}"
                + (f"; unknown: {unknown}" if unknown else "")
                + (f"; missing: {missing}" if missing else "")
            )
        w = np.array([float(override[g]) for g in groups], dtype=np.float64)
        source = "group_weights"
    else:
        counts = provenance.get("anchor_groups")
        if isinstance(counts, Mapping) and all(g in counts for g in groups):
            w = np.array([float(counts[g]) for g in groups], dtype=np.float64)  # type: ignore[arg-type]
            source = "anchor share (anchor_groups in the scores provenance)"
        else:
            w = np.ones(len(groups), dtype=np.float64)
            source = "equal (the scores provenance records no anchor_groups for these groups)"
    if not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"group weights must be finite, >= 0 and not all 0, got {w.tolist()}")
    return w / w.sum(), source


def default_tau(gains: np.ndarray, k: float) -> np.ndarray:
    """tau_g = (k / n) * positive mass of g: a random k-subset's expected mass (see module doc).

    A group with no positive mass gets tau 1 (its gains are all 0, so tau never matters).
    """
    n = gains.shape[0]
    mass = gains.sum(axis=0, dtype=np.float64)
    tau = mass * (min(max(k, 1.0), n) / n) if n else mass
    return np.where(tau > 0.0, tau, 1.0)


def objective(
    gains: np.ndarray, weights: np.ndarray, tau: np.ndarray, rows: Sequence[int] | np.ndarray
) -> float:
    """F(S) for the rows in S."""
    idx = np.asarray(rows, dtype=np.int64)
    mass = gains[idx].sum(axis=0) if len(idx) else np.zeros(gains.shape[1])
    return float(np.sum(weights * np.log1p(mass / tau)))


class LazyGreedy:
    """CELF over the rows of `gains` (n x G, >= 0), best marginal gain (per cost) first.

    Ties go to the lower row index, so callers order rows by their tie-break (total utility, then
    pool order) and the result is deterministic. Use it as a stream: iterate `picks()`; call
    `keep(i)` for a yielded row that is accepted (the per-group masses grow), skip it otherwise
    (it is not offered again in this pass). `stop()` makes the stream yield the remaining rows in
    index order without evaluating them, for callers that label every row. Calling `picks()` again
    starts a new pass over the rows not kept, at the current masses.

    Gains come from one vectorised kernel (`gains_of`), the same one plain greedy uses, so both
    see bit-identical numbers. With dense group utilities every pick lowers every gain a little,
    so a pick typically re-evaluates ~25-35 rows: one numpy call for them beats 25 Python loops.
    """

    batch = 64  # waiting rows pulled into the band at a time
    band_max = 4096  # rows in the band (>= 2); the lower half goes back to waiting beyond this

    def __init__(
        self,
        gains: np.ndarray,
        weights: np.ndarray,
        tau: np.ndarray,
        costs: np.ndarray | None = None,
    ) -> None:
        gains = np.asarray(gains, dtype=np.float64)
        weights = np.asarray(weights, dtype=np.float64)
        use = weights > 0  # zero-weight groups add nothing: drop their columns
        # Row-major: a row's group utilities share a cache line, and rows are read at random.
        self._gains = np.ascontiguousarray(gains if use.all() else gains[:, use])
        self._w = weights[use]
        self._tau = np.asarray(tau, dtype=np.float64)[use]
        self._mass = np.zeros(len(self._w), dtype=np.float64)
        self._denom = self._tau.copy()
        self._costs = (
            None if costs is None else np.maximum(np.asarray(costs, dtype=np.float64), _MIN_COST)
        )
        self._kept = np.zeros(gains.shape[0], dtype=bool)
        self.n_kept = 0
        self.evaluations = 0
        self._stopped = False

    def gains_of(self, rows: np.ndarray) -> np.ndarray:
        """Exact marginal gains (per cost) of `rows` at the current masses.

        Elementwise operations only, groups summed in a fixed order: a row's gain does not depend
        on which other rows share the call, and never increases as the masses grow.
        """
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) > _CHUNK:  # bounded temporaries on whole-pool calls
            return np.concatenate(
                [self.gains_of(rows[i : i + _CHUNK]) for i in range(0, len(rows), _CHUNK)]
            )
        self.evaluations += len(rows)
        terms = self._gains[rows]
        terms /= self._denom
        np.log1p(terms, out=terms)
        terms *= self._w
        # accumulate, not sum: a sequential sum over groups whatever the number of rows
        # (a reduction may switch to pairwise summation and change the last bits).
        acc = np.add.accumulate(terms, axis=1)[:, -1] if len(self._w) else np.zeros(len(rows))
        if self._costs is not None:
            acc = acc / self._costs[rows]
        return acc

    def keep(self, i: int) -> None:
        """Accept row i: its per-group utilities join the masses."""
        if self._kept[i]:
            raise ValueError(f"row {i} is already kept")
        self._kept[i] = True
        self.n_kept += 1
        self._mass += self._gains[i]
        self._denom = self._tau + self._mass

    def stop(self) -> None:
        """Stop choosing: the running `picks()` yields its remaining rows in index order."""
        self._stopped = True

    def picks(self) -> Iterator[int]:
        """Rows, best first; each is the exact greedy choice given the rows kept so far.

        Every row has an upper bound on its gain: its gain when last evaluated (gains only
        shrink). The band (at most `band_max` rows, numpy arrays) holds the rows near the top.
        For each pick, the band rows whose bound is within a small margin of the best bound are
        re-evaluated in one kernel call; if the best fresh gain clears the margin, no other band
        row can beat it (else the rows with bounds above it are evaluated too). Other rows wait
        in two sorted arrays (sorted once at the pass start; evicted from the band), keyed by
        complex numbers -bound + 1j*row, which numpy orders lexicographically: best bound
        first, then the lower row. The best band row is yielded once no waiting key beats it,
        so the picks are exactly plain greedy's (ties to the lower row), and no step costs
        Python work per row.
        """
        self._stopped = False
        rows = np.flatnonzero(~self._kept)
        if not len(rows):
            return
        first = self.gains_of(rows)
        helps = first > 0.0  # a zero gain stays zero (gains only shrink): those go last
        positive, zero = rows[helps], rows[~helps]
        waiting = np.sort(-first[helps] + 1j * positive)
        del first
        evicted = np.zeros(0, dtype=np.complex128)
        w_ptr = e_ptr = 0
        n_wait = len(waiting)
        band_row = np.zeros(0, dtype=np.int64)
        band_bound = np.zeros(0, dtype=np.float64)
        margin = 1e-6  # relative: how far below the best bound a fresh winner may land
        pull = self.batch
        certified_at = -1  # n_kept when the band's best (top, j) was last certified
        top, j = -np.inf, -1
        while True:
            if self._stopped:
                rest = np.concatenate([waiting[w_ptr:].imag, evicted[e_ptr:].imag])
                yield from sorted(band_row.tolist() + rest.astype(np.int64).tolist())
                break
            if len(band_row) and certified_at != self.n_kept:
                threshold = band_bound.max() * (1.0 - margin)
                need = np.flatnonzero(band_bound >= threshold)
                band_bound[need] = self.gains_of(band_row[need])
                top = float(band_bound[need].max())
                if top < threshold:  # the margin was too small: evaluate the rest in reach
                    margin = min(2.0 * margin, 0.5)
                    reach = band_bound >= top
                    reach[need] = False
                    more = np.flatnonzero(reach)
                    if len(more):
                        band_bound[more] = self.gains_of(band_row[more])
                        need = np.concatenate([need, more])
                    top = float(band_bound[need].max())
                else:
                    margin = max(margin * 0.9, 1e-12)
                # Every bound not just evaluated is below `top`: the maximum is fresh.
                j = _lowest_row_at(need, band_bound, band_row, top)
                certified_at = self.n_kept
            best = complex(-top, band_row[j]) if j >= 0 else complex(np.inf, 0.0)
            # Waiting rows whose key beats the band's best join the band (a batch at a time).
            n_w = n_e = 0
            if w_ptr < n_wait and waiting[w_ptr] < best:
                n_w = int(np.searchsorted(waiting[w_ptr : w_ptr + pull], best))
            if e_ptr < len(evicted) and evicted[e_ptr] < best:
                n_e = int(np.searchsorted(evicted[e_ptr : e_ptr + pull], best))
            if n_w or n_e:
                new_row = np.concatenate(
                    [waiting[w_ptr : w_ptr + n_w].imag, evicted[e_ptr : e_ptr + n_e].imag]
                ).astype(np.int64)
                w_ptr += n_w
                e_ptr += n_e
                new_bound = self.gains_of(new_row)  # fresh, like the band's certified best
                start = len(band_row)
                band_row = np.concatenate([band_row, new_row])
                band_bound = np.concatenate([band_bound, new_bound])
                if len(band_row) > self.band_max:
                    # Evict by key (bound, then row), so a tie never cycles between the two.
                    keys = -band_bound + 1j * band_row
                    low = np.argpartition(keys, self.band_max // 2)[self.band_max // 2 :]
                    out = np.sort(keys[low])
                    rest_e = evicted[e_ptr:]
                    evicted = np.insert(rest_e, np.searchsorted(rest_e, out), out)
                    e_ptr = 0
                    stay = np.ones(len(band_row), dtype=bool)
                    stay[low] = False
                    band_row, band_bound = band_row[stay], band_bound[stay]
                    certified_at = -1  # positions moved: certify again (rare)
                elif certified_at == self.n_kept or j < 0:
                    cand = np.arange(start, len(band_row))
                    k_new = _lowest_row_at(cand, band_bound, band_row, float(new_bound.max()))
                    if j < 0 or (-band_bound[k_new], band_row[k_new]) < (-top, band_row[j]):
                        top, j = float(band_bound[k_new]), k_new
                    certified_at = self.n_kept
                continue
            if j < 0:
                break
            row = int(band_row[j])
            last = len(band_row) - 1  # remove j: the last row takes its place
            band_row[j], band_bound[j] = band_row[last], band_bound[last]
            band_row, band_bound = band_row[:last], band_bound[:last]
            top, j, certified_at = -np.inf, -1, -1
            yield row
        # Every remaining row has gain 0: index order (the caller's tie-break) decides.
        yield from zero.tolist()


def _lowest_row_at(index: np.ndarray, bound: np.ndarray, row: np.ndarray, top: float) -> int:
    """Position (in `index`) of the lowest row whose bound equals `top`: greedy's tie-break."""
    at_top = index[bound[index] == top]
    return int(at_top[np.argmin(row[at_top])]) if len(at_top) > 1 else int(at_top[0])


@dataclass
class GreedyResult:
    """Rows chosen (in pick order), F of that set, and how many exact gains were evaluated."""

    rows: list[int]
    value: float
    evaluations: int = 0
    skipped: list[int] = field(default_factory=list)


def greedy_cover(
    gains: np.ndarray,
    weights: np.ndarray,
    tau: np.ndarray,
    *,
    k: int | None = None,
    costs: np.ndarray | None = None,
    budget: float | None = None,
    fill: bool = False,
) -> GreedyResult:
    """Lazy greedy for max F(S) with |S| <= k and/or sum of `costs` <= `budget`.

    With a budget the rule is gain per cost; `fill=False` stops at the first choice that does not
    fit (like `SelectionPolicy.budget_fill`), `True` skips it and goes on.
    """
    if budget is not None and costs is None:
        raise ValueError("a budget needs costs")
    lazy = LazyGreedy(gains, weights, tau, costs if budget is not None else None)
    rows: list[int] = []
    skipped: list[int] = []
    spent = 0.0
    for i in lazy.picks():
        if k is not None and len(rows) >= k:
            break
        if budget is not None and spent + float(costs[i]) > budget:  # type: ignore[index]
            skipped.append(i)
            if not fill:
                break
            continue
        lazy.keep(i)
        rows.append(i)
        if budget is not None:
            spent += float(costs[i])  # type: ignore[index]
    return GreedyResult(rows, objective(gains, weights, tau, rows), lazy.evaluations, skipped)


def plain_greedy(
    gains: np.ndarray,
    weights: np.ndarray,
    tau: np.ndarray,
    *,
    k: int | None = None,
    costs: np.ndarray | None = None,
    budget: float | None = None,
    fill: bool = False,
) -> GreedyResult:
    """Reference greedy: every remaining gain re-evaluated at every step (O(n k G)); for tests."""
    lazy = LazyGreedy(gains, weights, tau, costs if budget is not None else None)
    left = np.arange(gains.shape[0])
    rows: list[int] = []
    skipped: list[int] = []
    spent = 0.0
    while len(left) and (k is None or len(rows) < k):
        j = int(np.argmax(lazy.gains_of(left)))  # the first maximum: the lowest row wins ties
        best = int(left[j])
        left = np.delete(left, j)
        if budget is not None and spent + float(costs[best]) > budget:  # type: ignore[index]
            skipped.append(best)
            if not fill:
                break
            continue
        lazy.keep(best)
        rows.append(best)
        if budget is not None:
            spent += float(costs[best])  # type: ignore[index]
    return GreedyResult(rows, objective(gains, weights, tau, rows), lazy.evaluations, skipped)


def consensus_votes(utilities: np.ndarray, top: int) -> np.ndarray:
    """For each row, the number of groups in whose top `top` it is (with utility > 0 there).

    Ranking is within each group's column, ties to the lower row index; NaN never votes. A row
    that hurts a group never gets that group's vote, even when the group has few helpful rows.
    """
    u = np.asarray(utilities, dtype=np.float64)
    n, n_groups = u.shape
    votes = np.zeros(n, dtype=np.int64)
    top = max(0, min(top, n))
    if not top:
        return votes
    idx = np.arange(n)
    for g in range(n_groups):
        col = np.where(np.isnan(u[:, g]), -np.inf, u[:, g])
        best = np.lexsort((idx, -col))[:top]
        votes[best[col[best] > 0.0]] += 1
    return votes


@dataclass
class GroupCoverage:
    """One anchor group's coverage: utility mass and main-benefit counts, kept vs pool.

    `weight` and `tau` are what the coverage objective used (None where none was computed).
    """

    mass_kept: float
    mass_pool: float
    mass_share: float | None
    main_kept: int
    main_pool: int
    weight: float | None = None
    tau: float | None = None


def coverage_by_group(
    groups: Sequence[str],
    utilities: np.ndarray,
    kept: np.ndarray,
    weights: np.ndarray | None = None,
    tau: np.ndarray | None = None,
) -> dict[str, GroupCoverage]:
    """Per group: sum of max(u, 0) kept vs in the pool, and rows whose argmax group it is.

    `utilities` are the raw per-group utilities of the scored pool rows (NaN = no evidence);
    a row whose group utilities are all <= 0 has no main benefit and is counted nowhere.
    """
    pos = positive_gains(np.asarray(utilities, dtype=np.float64).reshape(-1, len(groups)))
    kept = np.asarray(kept, dtype=bool)
    mass_pool = pos.sum(axis=0)
    mass_kept = pos[kept].sum(axis=0)
    main = np.argmax(pos, axis=1) if pos.shape[0] else np.zeros(0, dtype=np.int64)
    has_main = pos.max(axis=1) > 0.0 if pos.shape[0] else np.zeros(0, dtype=bool)
    main_pool = np.bincount(main[has_main], minlength=len(groups))
    main_kept = np.bincount(main[has_main & kept], minlength=len(groups))
    return {
        g: GroupCoverage(
            mass_kept=float(mass_kept[j]),
            mass_pool=float(mass_pool[j]),
            mass_share=float(mass_kept[j] / mass_pool[j]) if mass_pool[j] > 0 else None,
            main_kept=int(main_kept[j]),
            main_pool=int(main_pool[j]),
            weight=None if weights is None else float(weights[j]),
            tau=None if tau is None else float(tau[j]),
        )
        for j, g in enumerate(groups)
    }


def group_z(utilities: np.ndarray) -> np.ndarray:
    """Each column standardised (mean 0, sd 1, NaN ignored); a constant column becomes 0.

    Anchor groups differ in loss scale, so raw group utilities are not comparable; z-scores are.
    """
    u = np.asarray(utilities, dtype=np.float64)
    if not u.shape[0]:
        return u.copy()
    with np.errstate(all="ignore"):
        mean = np.nanmean(u, axis=0)
        sd = np.nanstd(u, axis=0)
    mean = np.nan_to_num(mean)
    sd = np.where(np.isfinite(sd) & (sd > 0), sd, np.inf)
    return (u - mean) / sd


def stratum_rank(utilities: np.ndarray, strata: Sequence[str]) -> np.ndarray:
    """Centred percentile ranks within each stratum, per column: in (-0.5, 0.5), > 0 above the
    stratum's median. Ties share their average rank; NaN stays NaN.

    A stratum whose samples all have small utilities (an easy category, a low-loss source) is
    then judged against itself, not against the strata with the largest gradients.
    """
    import pandas as pd

    u = np.asarray(utilities, dtype=np.float64)
    frame = pd.DataFrame(u.reshape(len(u), -1))
    by = frame.groupby(np.asarray(strata, dtype=object), sort=False)
    ranks = by.rank(method="average", ascending=False).to_numpy(dtype=np.float64)
    size = by.transform("count").to_numpy(dtype=np.float64)
    with np.errstate(all="ignore"):
        out = 0.5 - (ranks - 0.5) / size
    return out.reshape(u.shape)
