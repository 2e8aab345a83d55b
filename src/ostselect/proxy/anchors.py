"""Anchor sets: a small, stratified, seeded sample of held-out problems to measure utility on.

The paper draws 100 anchors stratified by difficulty/topic from 500 held-out problems. Allocation is
proportional with at least one anchor per stratum when the size allows (largest remainders, shared
with balanced selection), the draw within each stratum is seeded, and anchors that also sit in the
pool (same id or same content) are reported: scoring a sample against itself inflates its utility.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ostselect.data.sample import Sample
from ostselect.select.allocation import allocate

MISSING_STRATUM = "(missing)"


@dataclass
class AnchorSet:
    """The drawn anchors (in held-out order) and how they were drawn."""

    samples: list[Sample]
    seed: int
    stratify_by: str | None
    strata: dict[str, int]  # stratum -> anchors drawn
    available: dict[str, int]  # stratum -> held-out samples
    source: str | None = None

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.samples]

    def strata_record(self) -> dict[str, Any]:
        """What `FILE.strata.json` holds: enough to audit and reproduce the draw."""
        return {
            "size": len(self.samples),
            "seed": self.seed,
            "stratify_by": self.stratify_by,
            "source": self.source,
            "strata": self.strata,
            "available": self.available,
            "ids": self.ids,
            "stratum_of": {s.id: stratum_of(s, self.stratify_by) for s in self.samples},
        }


@dataclass(frozen=True)
class Overlap:
    anchor_id: str
    pool_id: str
    kind: str  # "id", "content" or "id+content"


@dataclass
class OverlapReport:
    overlaps: list[Overlap] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.overlaps)

    def lines(self) -> list[str]:
        return [
            f"anchor {o.anchor_id!r} overlaps pool sample {o.pool_id!r} (same {o.kind})"
            for o in self.overlaps
        ]


def stratum_of(sample: Sample, field_name: str | None) -> str:
    if field_name is None:
        return "(all)"
    value = sample.extra.get(field_name)
    return MISSING_STRATUM if value is None else str(value)


def build_anchor_set(
    samples: Sequence[Sample],
    size: int,
    *,
    stratify_by: str | None = None,
    seed: int = 0,
    source: str | None = None,
) -> AnchorSet:
    """Draw `size` anchors (all of them if fewer), proportionally per stratum, seeded.

    Every stratum gets at least one anchor when `size` >= the number of strata. The result depends
    only on the samples' order, their strata, `size` and `seed`.
    """
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    by_stratum: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        by_stratum.setdefault(stratum_of(s, stratify_by), []).append(i)
    available = {k: len(v) for k, v in by_stratum.items()}
    counts = allocate(
        size, {k: float(v) for k, v in available.items()}, available, at_least_one=True
    )
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for name in sorted(by_stratum):  # sorted: the draw does not depend on which stratum came first
        idx = by_stratum[name]
        if counts[name]:
            chosen.extend(int(i) for i in rng.choice(idx, size=counts[name], replace=False))
    chosen.sort()
    return AnchorSet(
        samples=[samples[i] for i in chosen],
        seed=seed,
        stratify_by=stratify_by,
        strata={k: counts[k] for k in sorted(counts)},
        available={k: available[k] for k in sorted(available)},
        source=source,
    )


def find_overlaps(anchors: Iterable[Sample], pool: Iterable[Sample]) -> OverlapReport:
    """Anchors that also appear in the pool, by id or by `Sample.content_hash()`."""
    anchors = list(anchors)
    by_id = {a.id: a for a in anchors}
    by_hash: dict[str, list[str]] = {}
    for a in anchors:
        by_hash.setdefault(a.content_hash(), []).append(a.id)
    found: dict[tuple[str, str], set[str]] = {}
    for p in pool:
        if p.id in by_id:
            found.setdefault((p.id, p.id), set()).add("id")
        for aid in by_hash.get(p.content_hash(), []):
            found.setdefault((aid, p.id), set()).add("content")
    overlaps = [
        Overlap(aid, pid, "+".join(sorted(kinds, key=["id", "content"].index)))
        for (aid, pid), kinds in sorted(found.items())
    ]
    return OverlapReport(overlaps)


def write_anchor_set(anchors: AnchorSet, out_path: str | Path) -> tuple[Path, Path]:
    """Write the anchors as messages JSONL (image paths rewritten relative to the new file, so it
    reads from anywhere) and `<out>.strata.json` beside it."""
    from ostselect.data import write_samples

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    write_samples(anchors.samples, out_path, format="messages")
    strata_path = out_path.with_name(out_path.name + ".strata.json")
    strata_path.write_text(json.dumps(anchors.strata_record(), indent=2) + "\n")
    return out_path, strata_path
