"""`select()`: scores + pool + policy -> the kept ids, and why every other id was dropped.

Never recomputes scores. Candidates are walked in rank order (descending utility; ties by the
table's `rank`, i.e. pool order), so every limit (top-k, stratum quotas, the token budget, dedup)
keeps the higher-utility sample first, and the same inputs always give the same subset.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ostselect.data.sample import Sample
from ostselect.scores import Scores, rank_descending, read_scores
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
class Selection:
    """The decision: kept ids (rank order), stratum counts, tokens, thresholds, drop reasons."""

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
    if not isinstance(scores, Scores):
        scores = read_scores(scores)
    samples, pool_fp = load_pool(pool, image_root=image_root, rejects=rejects)
    warnings = check_provenance(scores, samples, pool_fp, force=force)
    table = scores.to_pandas()
    table["id"] = table["id"].astype(str)
    if "rank" not in table.columns:
        table["rank"] = rank_descending(table["utility"].to_numpy())
    # Plain dicts: per-row pandas lookups would dominate on pools of 10^5+ samples.
    by_id = {r["id"]: r for r in table.to_dict("records")}
    has_tokens = "tokens" in table.columns
    dropped: dict[str, str] = {}
    strata: dict[str, StratumCounts] = {}
    candidates: list[_Candidate] = []
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
        reason = _filter_reason(row, policy)
        if reason:
            dropped[s.id] = reason
            continue
        strata[stratum].eligible += 1
        candidates.append(_Candidate(s, float(row["utility"]), int(row["rank"]), tokens, stratum))
    candidates.sort(key=lambda c: (-c.utility, c.rank))
    n_scored = sum(1 for s in samples if s.id in by_id)
    k = policy.top_count(n_scored)
    kept = _walk(candidates, strata, k, policy, dropped)
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
    )


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


def _walk(
    candidates: list[_Candidate],
    strata: dict[str, StratumCounts],
    k: int | None,
    policy: SelectionPolicy,
    dropped: dict[str, str],
) -> list[str]:
    """Accept candidates in rank order under quotas, the token budget and dedup.

    A stratum that runs out of candidates (or loses them to dedup) hands its unfilled quota to the
    others; the walk repeats with the new quotas until nothing changes.
    """
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
    kept: list[str] = []
    pending: dict[str, str] = {}
    while True:
        for c in candidates:
            sid, s = c.sample.id, c.stratum
            if sid in dropped or (sid in pending and pending[sid] == "kept"):
                continue
            if k is not None and len(kept) >= k:
                pending[sid] = f"below top-k cutoff: rank {c.rank}, k = {k}"
                continue
            if counts[s] >= quota[s]:
                pending[sid] = f"stratum quota full: {s!r} keeps {quota[s]}"
                continue
            if budget is not None:
                if s in closed:
                    pending[sid] = "token budget spent"
                    continue
                total = sum(tokens.values())
                if total + c.tokens > budget or tokens[s] + c.tokens > stratum_budget[s]:
                    pending[sid] = "token budget spent"
                    if not policy.budget_fill:
                        closed.update([s] if policy.balance_by else names)
                    continue
            if dedup is not None:
                dup = dedup.duplicate_of(c.sample)
                if dup is not None:
                    dropped[sid] = f"duplicate of {dup[0]}: {dup[1]}"
                    continue
                dedup.add(c.sample)
            pending[sid] = "kept"
            kept.append(sid)
            counts[s] += 1
            tokens[s] += c.tokens
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
    order = {c.sample.id: i for i, c in enumerate(candidates)}
    return sorted(kept, key=order.__getitem__)


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
