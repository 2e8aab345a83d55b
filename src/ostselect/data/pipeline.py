"""Valid samples out of a pool, every bad one sent to a rejects file: the loop all stages use."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ostselect.data.checks import diagnose
from ostselect.data.formats import read_pool
from ostselect.data.rejects import DUPLICATE_ID, Reject, RejectsWriter
from ostselect.data.sample import Sample


class SeenIds:
    """Remembers ids by a 16-byte digest: memory per id stays small and independent of id length."""

    def __init__(self) -> None:
        self._seen: set[bytes] = set()

    def add(self, sample_id: str) -> bool:
        """True the first time an id is seen."""
        key = hashlib.blake2b(sample_id.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        if key in self._seen:
            return False
        self._seen.add(key)
        return True


def iter_samples(
    path: str | Path,
    *,
    image_root: str | Path | None = None,
    rejects: RejectsWriter | None = None,
    decode_images: bool = False,
    format: str = "auto",
    max_chars: int | None = None,
    on_record: Callable[[Sample | Reject], None] | None = None,
) -> Iterator[Sample]:
    """Usable samples only, in pool order; each unusable record goes to `rejects` (if given).

    Image files are always checked for existence; `decode_images` also decodes them fully. A
    repeated id is rejected after its first occurrence. `on_record` sees every record (progress).
    """
    seen = SeenIds()
    for item in read_pool(path, image_root=image_root, format=format):
        if isinstance(item, Sample):
            problem = diagnose(item, decode_images=decode_images, max_chars=max_chars)
            if problem is None and not seen.add(item.id):
                item_reject = _reject(item, DUPLICATE_ID, f"id {item.id!r} appeared before")
            elif problem is not None:
                item_reject = _reject(item, problem.code, problem.reason)
            else:
                item_reject = None
            if item_reject is None:
                if on_record is not None:
                    on_record(item)
                yield item
                continue
            item = item_reject
        if rejects is not None:
            rejects.add(item)
        if on_record is not None:
            on_record(item)


def _reject(sample: Sample, code: str, reason: str) -> Reject:
    src = sample.source
    file = src.file if src is not None else "?"
    line = src.line if src is not None else None
    if src is not None and src.line is None and src.index is not None:
        reason = f"row {src.index}: {reason}"
    return Reject(sample.id, file, line, reason, code)


@dataclass
class ValidationSummary:
    """What `validate_pool` found: record counts, rejects per code, and where the rejects went."""

    pool: str
    total: int = 0
    valid: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    rejects_path: Path | None = None

    @property
    def n_rejected(self) -> int:
        return sum(self.rejected.values())

    def as_dict(self) -> dict[str, object]:
        return {
            "pool": self.pool,
            "total": self.total,
            "valid": self.valid,
            "rejected": dict(self.rejected),
            "rejects_path": str(self.rejects_path) if self.rejects_path else None,
        }


def validate_pool(
    path: str | Path,
    out_dir: str | Path,
    *,
    image_root: str | Path | None = None,
    format: str = "auto",
    max_chars: int | None = None,
    on_record: Callable[[Sample | Reject], None] | None = None,
) -> ValidationSummary:
    """Check every record (images decoded) and write `<out_dir>/rejects.jsonl` afresh.

    Raises `PoolError` only when the pool cannot be read at all; bad records are counted.
    """
    summary = ValidationSummary(pool=str(path))

    def count(item: Sample | Reject) -> None:
        summary.total += 1
        if on_record is not None:
            on_record(item)

    with RejectsWriter(out_dir, stage="validate", truncate=True) as writer:
        summary.rejects_path = writer.path
        for _ in iter_samples(
            path,
            image_root=image_root,
            rejects=writer,
            decode_images=True,
            format=format,
            max_chars=max_chars,
            on_record=count,
        ):
            summary.valid += 1
        summary.rejected = Counter(writer.counts)
    return summary
