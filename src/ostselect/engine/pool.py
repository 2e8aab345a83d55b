"""Reading the pool on the driver and checking samples in the workers, via `ostselect.data`.

The driver only parses records (no image decoding) and cuts them into shards of consecutive valid
samples, so shard boundaries depend on the pool and `shard_size` alone. Images are decoded where the
scorer runs, by `check_sample`, so the driver's memory and CPU stay flat however large the images.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from ostselect.data.rejects import Reject, RejectsWriter
from ostselect.data.sample import Sample


@dataclass
class Shard:
    """A run of consecutive valid samples of the pool (images not loaded, `raw` dropped)."""

    index: int
    samples: list[Sample]

    @property
    def ids_digest(self) -> str:
        return ids_digest(s.id for s in self.samples)


def ids_digest(ids) -> str:
    h = hashlib.sha256()
    for i in ids:
        h.update(str(i).encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


def iter_shards(
    pool_path: str | Path,
    shard_size: int,
    *,
    image_root: str | Path | None,
    rejects: RejectsWriter,
    pool_format: str = "auto",
) -> Iterator[Shard]:
    """Consecutive runs of `shard_size` valid samples in pool order; never the whole pool."""
    from ostselect import data

    samples = data.iter_samples(
        pool_path, image_root=image_root, rejects=rejects, decode_images=False, format=pool_format
    )
    batch: list[Sample] = []
    index = 0
    for sample in samples:
        # `raw` (the original record text) is only needed to write subsets; keep what travels small.
        batch.append(replace(sample, raw=None))
        if len(batch) == shard_size:
            yield Shard(index, batch)
            index += 1
            batch = []
    if batch:
        yield Shard(index, batch)


def reject_if_unusable(sample: Sample) -> Reject | None:
    """A `Reject` when the sample cannot be scored (`check_sample`'s checks, images decoded)."""
    from ostselect.data import diagnose

    problem = diagnose(sample, decode_images=True)
    if problem is None:
        return None
    loc = sample.source
    reason = problem.reason
    if loc is not None and loc.line is None and loc.index is not None:
        reason = f"row {loc.index}: {reason}"
    return Reject(
        id=sample.id,
        file=loc.file if loc is not None else "?",
        line=loc.line if loc is not None else None,
        reason=reason,
        code=problem.code,
    )
