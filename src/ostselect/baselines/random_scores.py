"""`random`: a seeded uniform draw per sample id, the floor every method must beat.

The draw is a hash of (seed, id), not a stream of random numbers, so a sample gets the same utility
whatever its position, shard or worker.
"""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import Field

from ostselect.baselines.base import Baseline
from ostselect.baselines.registry import BaselineOptions, register_baseline
from ostselect.data.sample import Sample
from ostselect.scores import Status


def seeded_uniform(sample_id: str, seed: int) -> float:
    """A number in [0, 1) fixed by (seed, id)."""
    digest = hashlib.sha256(f"{seed}\0{sample_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


class RandomOptions(BaselineOptions):
    seed: int = Field(0, description="Same seed and id -> same utility.")


@register_baseline(
    "random",
    options=RandomOptions,
    summary="Seeded uniform utility per sample id (independent of order and sharding).",
    example="ost baseline random --pool pool.jsonl --out scores.random.parquet --seed 1",
    utility="seeded uniform draw per id",
    direction="—",
    in_benchmark=False,  # the benchmark's Random-k rows draw one per seed instead
    order=0,
)
class RandomBaseline(Baseline):
    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.seed = int(seed)

    def _score(self, samples: list[Sample]) -> dict[str, list[Any]]:
        return {
            "id": [s.id for s in samples],
            "utility": [seeded_uniform(s.id, self.seed) for s in samples],
            "status": [Status.OK] * len(samples),
        }

    def _settings(self) -> dict[str, Any]:
        return {"seed": self.seed}
