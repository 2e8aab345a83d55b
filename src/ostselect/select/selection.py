"""`select()`: scores + pool + policy -> the kept ids, and why every other id was dropped.

Never recomputes scores. Candidates are offered to the limits (top-k, stratum quotas, the token
budget, dedup) one at a time, in an order the policy decides: rank order for "topk" (descending
utility; ties by the table's `rank`, i.e. pool order), votes for "consensus", and for "coverage"
the lazy greedy's next best marginal gain given what was kept. Every limit therefore keeps the
policy's preferred sample first, and the same inputs always give the same subset.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ostselect.data.sample import Sample
from ostselect.scores import Scores, rank_descending, read_scores
from ostselect.select import coverage as cov
from ostselect.select.allocation import allocate
from ostselect.select.dedup import Deduplicator, embed_texts
from ostselect.select.policy import SelectionPolicy
from ostselect.select.provenance import check_provenance, load_pool

TOKEN_ESTIMATE = "estimate: ceil(assistant characters / 4), no `tokens` column in the scores"
NO_STRATUM = "(all)"
MISSING_STRATUM = "(missing)"


@dataclass
class StratumCounts:
    pool: int = 0
    eligible: int = 0
    quota: int | None = None
    kept: int = 0
    tokens_kept: int = 0


@dataclass
class CoverageReport:
    """How the kept set covers the anchor groups (whenever the scores have group columns).

    `groups[g].mass_*` are raw per-group utility masses (sum of max(u, 0)) over the scored pool
    samples, `main_*` count samples whose largest group utility is g. `objective` is F of the
    kept set with these weights and tau, in the policy's (normalised) units, so any two
    selections from the same scores and limits can be compared on it.
    """

    groups: dict[str, cov.GroupCoverage]
    objective: float
    weights_source: str
    normalize: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "objective": self.objective,
            "weights_source": self.weights_source,
            "normalize": self.normalize,
            "groups": {g: asdict(c) for g, c in self.groups.items()},
        }


@dataclass
class Selection:
    """The decision: kept ids (in the policy's order), strata, tokens, thresholds, drop reasons."""

    kept_ids: list[str]
    dropped: dict[str, str]
    strata: dict[str, StratumCounts]
    tokens_kept: int
    tokens_scored: int
    token_source: str
    thresholds: dict[str, Any]
    policy: SelectionPolicy
    n_pool: int
    n_scored: int
    scores_provenance: dict[str, Any] = field(default_factory=dict)
    pool_fingerprint: str | None = None
    warnings: list[str] = field(default_factory=list)
    coverage: CoverageReport | None = None

    @property
    def drop_counts(self) -> dict[str, int]:
        return dict(Counter(r.split(":", 1)[0] for r in self.dropped.values()))

    def summary(self) -> dict[str, Any]:
        """Everything `selection.json` holds."""
        return {
            "kept": len(self.kept_ids),
            "pool": self.n_pool,
            "scored": self.n_scored,
            "tokens_kept": self.tokens_kept,
            "tokens_scored": self.tokens_scored,
            "token_source": self.token_source,
            "thresholds": self.thresholds,
            "policy": self.policy.model_dump(),
            "strata": {k: asdict(v) for k, v in self.strata.items()},
            "coverage": self.coverage.to_dict() if self.coverage is not None else None,
            "drop_counts": self.drop_counts,
            "warnings": self.warnings,
            "pool_fingerprint": self.pool_fingerprint,
            "scores_provenance": self.scores_provenance,
            "kept_ids": self.kept_ids,
            "dropped": self.dropped,
        }

    def write_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.summary(), indent=2, default=str) + "\n")
        return path


@dataclass
class _Candidate:
    sample: Sample
    utility: float
    rank: int
    tokens: int
    stratum: str
    ref: int = -1  # row in the usable (status ok, finite utility) scored pool samples
    score: float = math.nan  # the policy's ordering key: utility, or its normalised form


def select(
    scores: Scores | str | Path,
    pool: Sequence[Sample] | str | Path,
    policy: SelectionPolicy | None = None,
    *,
    force: bool = False,
    image_root: str | Path | None = None,
    rejects: Any = None,
) -> Selection:
    """Apply `policy` to `scores` over `pool` (samples, or a pool path read with `iter_samples`).

    Raises `ProvenanceMismatchError` when scored ids are missing from the pool or the scores were
    made on a pool with a different fingerprint, unless `force=True` (then it becomes a warning).
    Unusable pool records go to `rejects` (an open `RejectsWriter`), never stopping the run.
    """
    policy = policy or SelectionPolicy()
    scores_path = None if isinstance(scores, Scores) else Path(scores)
    if not isinstance(scores, Scores):
        scores = read_scores(scores)
    groups = cov.group_names(scores.table.column_names)
    if policy.needs_groups and not groups:
        raise ValueError(_no_groups_message(policy, scores_path))
    samples, pool_fp = load_pool(pool, image_root=image_root, rejects=rejects)
    warnings = check_provenance(
        scores,
        samples,
        pool_fp,
        force=force,
        scores_path=scores_path,
        pool_path=pool if isinstance(pool, str | Path) else None,
    )
    table = scores.to_pandas()
    table["id"] = table["id"].astype(str)
    if "rank" not in table.columns:
        table["rank"] = rank_descending(table["utility"].to_numpy())
    # Plain dicts: per-row pandas lookups would dominate on pools of 10^5+ samples.
    records = table.to_dict("records")
    by_id = {r["id"]: r for r in records}
    row_of = {r["id"]: i for i, r in enumerate(records)}
    has_tokens = "tokens" in table.columns
    dropped: dict[str, str] = {}
    strata: dict[str, StratumCounts] = {}
    candidates: list[_Candidate] = []
    usable_rows: list[int] = []  # scored pool samples with status ok and a finite utility
    usable_strata: list[str] = []
    tokens_scored = 0
    for s in samples:
        stratum = _stratum_of(s, policy.balance_by)
        strata.setdefault(stratum, StratumCounts()).pool += 1
        row = by_id.get(s.id)
        if row is None:
            dropped[s.id] = "not scored"
            continue
        tokens = _tokens(row, s, has_tokens)
        tokens_scored += tokens
        ref = -1
        if _usable(row):
            ref = len(usable_rows)
            usable_rows.append(row_of[s.id])
            usable_strata.append(stratum)
        reason = _filter_reason(row, policy)
        if reason:
            dropped[s.id] = reason
            continue
        strata[stratum].eligible += 1
        u = float(row["utility"])
        candidates.append(_Candidate(s, u, int(row["rank"]), tokens, stratum, ref, u))
    n_scored = sum(1 for s in samples if s.id in by_id)
    k = policy.top_count(n_scored)
    ctx = _GroupContext.build(table, groups, usable_rows, usable_strata, scores.provenance, policy)
    if ctx is not None:
        warnings.extend(ctx.warnings(policy))
    _normalise_scores(candidates, policy, ctx, usable_rows, usable_strata, table)
    candidates.sort(key=lambda c: (-c.score, c.rank))
    k_eff = _effective_k(k, policy.budget_tokens, candidates)
    order: _Order
    gains = tau = None  # per usable row, and the policy's tau
    cand_ref = np.array([c.ref for c in candidates], dtype=np.int64)
    if ctx is not None:
        gains = cov.positive_gains(ctx.values)
        tau = (
            np.full(len(groups), policy.coverage_tau)
            if policy.coverage_tau is not None
            else cov.default_tau(gains[cand_ref], k_eff)
        )
    if policy.policy == "consensus":
        assert ctx is not None
        votes = cov.consensus_votes(ctx.values[cand_ref], round(k_eff))
        rank_of = np.lexsort((np.arange(len(candidates)), -votes))
        candidates = [candidates[i] for i in rank_of]
        order = _RankOrder(candidates)
    elif policy.policy == "coverage":
        assert ctx is not None and gains is not None and tau is not None
        costs = np.array([c.tokens for c in candidates], dtype=np.float64)
        lazy = cov.LazyGreedy(
            gains[cand_ref], ctx.weights, tau, costs if policy.budget_tokens is not None else None
        )
        order = _GreedyOrder(candidates, lazy)
    else:
        order = _RankOrder(candidates)
    kept = _walk(candidates, strata, k, policy, dropped, order)
    kept_set = set(kept)
    for c in candidates:
        if c.sample.id in kept_set:
            strata[c.stratum].kept += 1
            strata[c.stratum].tokens_kept += c.tokens
    kept_utils = [c.utility for c in candidates if c.sample.id in kept_set]
    thresholds = {
        "top_k": k,
        "utility_cutoff": min(kept_utils) if kept_utils else None,
        "min_utility": policy.min_utility,
        "drop_toxic": policy.drop_toxic,
        "budget_tokens": policy.budget_tokens,
        "dedup": policy.dedup,
        "dedup_threshold": policy.dedup_threshold if policy.dedup == "embedding" else None,
    }
    coverage = None
    if ctx is not None and gains is not None and tau is not None:
        kept_ref = np.array([c.ref for c in candidates if c.sample.id in kept_set], dtype=np.int64)
        kept_mask = np.zeros(len(usable_rows), dtype=bool)
        kept_mask[kept_ref] = True
        coverage = CoverageReport(
            groups=cov.coverage_by_group(groups, ctx.raw, kept_mask, ctx.weights, tau),
            objective=cov.objective(gains, ctx.weights, tau, kept_ref),
            weights_source=ctx.weights_source,
            normalize=policy.normalize,
        )
    return Selection(
        kept_ids=kept,
        dropped=dropped,
        strata=strata,
        tokens_kept=sum(strata[s].tokens_kept for s in strata),
        tokens_scored=tokens_scored,
        token_source="scores column `tokens`" if has_tokens else TOKEN_ESTIMATE,
        thresholds=thresholds,
        policy=policy,
        n_pool=len(samples),
        n_scored=n_scored,
        scores_provenance=scores.provenance,
        pool_fingerprint=pool_fp,
        warnings=warnings,
        coverage=coverage,
    )


def _no_groups_message(policy: SelectionPolicy, path: Path | None) -> str:
    what = (
        f"policy {policy.policy!r}"
        if policy.policy != "topk"
        else f"normalize {policy.normalize!r}"
    )
    return (
        f"{what} needs per-anchor-group utilities (`utility[<group>]` columns), but the scores "
        f"{'table' if path is None else path} has none: score with `ost score --group-field FIELD` "
        "(FIELD: the anchors' field that names their group, e.g. category), or use "
        "--policy topk --normalize none"
    )


@dataclass
class _GroupContext:
    """Per-anchor-group utilities of the usable scored pool samples, raw and normalised."""

    groups: list[str]
    raw: np.ndarray  # (usable rows, groups), NaN where a group has no value
    values: np.ndarray  # the same after `policy.normalize`
    weights: np.ndarray
    weights_source: str

    @classmethod
    def build(
        cls,
        table: Any,
        groups: list[str],
        usable_rows: list[int],
        usable_strata: list[str],
        provenance: dict[str, Any],
        policy: SelectionPolicy,
    ) -> _GroupContext | None:
        if not groups:
            return None
        columns = [f"utility[{g}]" for g in groups]
        raw = table[columns].to_numpy(dtype=np.float64)[np.asarray(usable_rows, dtype=np.int64)]
        raw = raw.reshape(len(usable_rows), len(groups))
        if policy.normalize == "group-z":
            values = cov.group_z(raw)
        elif policy.normalize == "stratum-rank":
            values = cov.stratum_rank(raw, usable_strata)
        else:
            values = raw
        weights, source = cov.group_weights(groups, provenance, policy.group_weights)
        return cls(groups, raw, values, weights, source)

    def warnings(self, policy: SelectionPolicy) -> list[str]:
        out = []
        uses_weights = policy.policy == "coverage" or policy.normalize == "group-z"
        if uses_weights and self.weights_source.startswith("equal"):
            out.append(f"group weights: {self.weights_source}; pass group_weights to set them")
        if policy.policy == "consensus" and policy.group_weights is not None:
            out.append("group_weights are not used by policy 'consensus' (one vote per group)")
        return out


def _normalise_scores(
    candidates: list[_Candidate],
    policy: SelectionPolicy,
    ctx: _GroupContext | None,
    usable_rows: list[int],
    usable_strata: list[str],
    table: Any,
) -> None:
    """Set each candidate's ordering key: its utility, or the normalised total."""
    if policy.normalize == "none" or not candidates:
        return
    if policy.normalize == "group-z":
        assert ctx is not None
        total = np.nan_to_num(ctx.values) @ ctx.weights
    else:
        u = table["utility"].to_numpy(dtype=np.float64)[np.asarray(usable_rows, dtype=np.int64)]
        total = cov.stratum_rank(u, usable_strata)
    for c in candidates:
        c.score = float(total[c.ref])


def _effective_k(k: int | None, budget: int | None, candidates: list[_Candidate]) -> float:
    """How many samples the limits will keep, roughly: k, or the average-cost samples that fit."""
    n = len(candidates)
    out = float(n)
    if k is not None:
        out = min(out, k)
    if budget is not None and n:
        mean_cost = sum(c.tokens for c in candidates) / n
        out = min(out, budget / max(mean_cost, 1e-9))
    return out


def _stratum_of(sample: Sample, balance_by: str | None) -> str:
    if balance_by is None:
        return NO_STRATUM
    value = sample.extra.get(balance_by)
    return MISSING_STRATUM if value is None else str(value)


def _tokens(row: dict[str, Any], sample: Sample, has_tokens: bool) -> int:
    if has_tokens and row["tokens"] is not None and not _isnan(row["tokens"]):
        return int(row["tokens"])
    return max(1, math.ceil(len(sample.assistant_text) / 4))


def _isnan(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x)


def _usable(row: dict[str, Any]) -> bool:
    """Scored with status ok and a finite utility: counts as part of the scored pool."""
    return row.get("status", "ok") == "ok" and not math.isnan(float(row["utility"]))


def _filter_reason(row: dict[str, Any], policy: SelectionPolicy) -> str | None:
    """Per-sample filters that do not depend on other samples."""
    status = row.get("status", "ok")
    if status != "ok":
        return f"status: {status}"
    u = float(row["utility"])
    if math.isnan(u):
        return "utility is NaN"
    toxic = bool(row["toxic"]) if "toxic" in row else u < 0
    if policy.drop_toxic and toxic:
        return f"toxic: utility {u:.6g} < 0"
    if policy.min_utility is not None and u < policy.min_utility:
        return f"below min_utility: {u:.6g} < {policy.min_utility:g}"
    return None


class _Order(Protocol):
    """The order candidates are offered in; `keep` tells it what was accepted."""

    def __iter__(self) -> Any: ...
    def keep(self, c: _Candidate) -> None: ...
    def stop(self) -> None: ...
    def arrange(self, kept: list[str]) -> list[str]: ...


class _RankOrder:
    """A fixed order (rank, or consensus votes); the kept ids come back in it."""

    def __init__(self, candidates: list[_Candidate]) -> None:
        self._candidates = candidates

    def __iter__(self) -> Any:
        return iter(self._candidates)

    def keep(self, c: _Candidate) -> None:
        pass

    def stop(self) -> None:
        pass

    def arrange(self, kept: list[str]) -> list[str]:
        index = {c.sample.id: i for i, c in enumerate(self._candidates)}
        return sorted(kept, key=index.__getitem__)


class _GreedyOrder:
    """The coverage lazy greedy: the next candidate depends on what was kept; pick order out."""

    def __init__(self, candidates: list[_Candidate], lazy: cov.LazyGreedy) -> None:
        self._candidates = candidates
        self._lazy = lazy
        self._index = {c.sample.id: i for i, c in enumerate(candidates)}

    def __iter__(self) -> Any:
        return (self._candidates[i] for i in self._lazy.picks())

    def keep(self, c: _Candidate) -> None:
        self._lazy.keep(self._index[c.sample.id])

    def stop(self) -> None:
        self._lazy.stop()

    def arrange(self, kept: list[str]) -> list[str]:
        return kept


def _walk(
    candidates: list[_Candidate],
    strata: dict[str, StratumCounts],
    k: int | None,
    policy: SelectionPolicy,
    dropped: dict[str, str],
    order: _Order | None = None,
) -> list[str]:
    """Accept candidates in the policy's order under quotas, the token budget and dedup.

    A stratum that runs out of candidates (or loses them to dedup) hands its unfilled quota to the
    others; the walk repeats with the new quotas until nothing changes. Once nothing more can be
    kept (k reached, or the whole budget closed) the order is told to stop choosing, so a greedy
    order only labels the rest.
    """
    order = order if order is not None else _RankOrder(candidates)
    names = list(strata)
    weights = {s: float(strata[s].pool if policy.balance == "proportional" else 1) for s in names}
    capacity = {s: strata[s].eligible for s in names}
    quota = allocate(k, weights, capacity) if k is not None else dict(capacity)
    budget = policy.budget_tokens
    wsum = sum(weights.values()) or 1.0
    stratum_budget = {
        s: (budget * weights[s] / wsum if policy.balance_by and budget is not None else budget)
        for s in names
    }
    dedup = _deduplicator(candidates, policy)
    counts = dict.fromkeys(names, 0)
    tokens = dict.fromkeys(names, 0)
    closed: set[str] = set()  # strata whose token budget is spent (prefix mode)
    min_tokens = min((c.tokens for c in candidates), default=0)
    kept: list[str] = []
    pending: dict[str, str] = {}
    while True:
        for c in order:
            sid, s = c.sample.id, c.stratum
            if sid in dropped or (sid in pending and pending[sid] == "kept"):
                continue
            if k is not None and len(kept) >= k:
                pending[sid] = (
                    f"below top-k cutoff: rank {c.rank}, k = {k}"
                    if policy.policy == "topk"
                    else f"below top-k cutoff: not among the {k} that policy "
                    f"{policy.policy!r} keeps (utility rank {c.rank})"
                )
                order.stop()  # a later pass may start full: only labels are left to give
                continue
            if counts[s] >= quota[s]:
                pending[sid] = f"stratum quota full: {s!r} keeps {quota[s]}"
                continue
            if budget is not None:
                if s in closed:
                    pending[sid] = "token budget spent"
                    if closed.issuperset(names):
                        order.stop()
                    continue
                total = sum(tokens.values())
                if total + c.tokens > budget or tokens[s] + c.tokens > stratum_budget[s]:
                    pending[sid] = "token budget spent"
                    if not policy.budget_fill:
                        closed.update([s] if policy.balance_by else names)
                    if closed.issuperset(names) or budget - total < min_tokens:
                        order.stop()  # nothing else can fit
                    continue
            if dedup is not None:
                dup = dedup.duplicate_of(c.sample)
                if dup is not None:
                    dropped[sid] = f"duplicate of {dup[0]}: {dup[1]}"
                    continue
                dedup.add(c.sample)
            pending[sid] = "kept"
            kept.append(sid)
            order.keep(c)
            counts[s] += 1
            tokens[s] += c.tokens
            if k is not None and len(kept) >= k:
                order.stop()
        if k is None or policy.balance_by is None:
            break
        lost = Counter(
            c.stratum for c in candidates if dropped.get(c.sample.id, "").startswith("dup")
        )
        capacity = {s: strata[s].eligible - lost[s] for s in names}
        new_quota = allocate(k, weights, capacity)
        new_quota = {s: max(new_quota[s], counts[s]) for s in names}
        if new_quota == quota:
            break
        quota = new_quota
    for s in names:
        strata[s].quota = quota[s] if k is not None else None
    for sid, reason in pending.items():
        if reason != "kept":
            dropped[sid] = reason
    return order.arrange(kept)


def _deduplicator(candidates: list[_Candidate], policy: SelectionPolicy) -> Deduplicator | None:
    if policy.dedup == "none":
        return None
    if policy.dedup == "hash":
        return Deduplicator("hash")
    return Deduplicator(
        "embedding",
        threshold=policy.dedup_threshold,
        embeddings=_LazyEmbeddings([c.sample for c in candidates]),
    )


class _LazyEmbeddings(dict):
    """Embeds candidates in rank-order chunks on first access: the walk usually stops early."""

    def __init__(self, samples: list[Sample], chunk: int = 256) -> None:
        super().__init__()
        self._samples = samples
        self._pos = {s.id: i for i, s in enumerate(samples)}
        self._chunk = chunk

    def __missing__(self, sid: str) -> np.ndarray:
        start = (self._pos[sid] // self._chunk) * self._chunk
        part = self._samples[start : start + self._chunk]
        vecs = embed_texts([f"{s.user_text}\n{s.assistant_text}" for s in part])
        for s, v in zip(part, vecs, strict=True):
            self[s.id] = v
        return self[sid]
