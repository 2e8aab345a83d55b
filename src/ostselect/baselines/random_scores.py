"""`random`: a seeded uniform draw per sample id, the floor every method must beat.

The draw is a hash of (seed, id), not a stream of random numbers, so a sample gets the same utility
whatever its position, shard or worker.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ostselect.baselines.base import Baseline
from ostselect.data.sample import Sample


def seeded_uniform(sample_id: str, seed: int) -> float:
    """A number in [0, 1) fixed by (seed, id)."""
    digest = hashlib.sha256(f"{seed}\0{sample_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


class RandomBaseline(Baseline):
    mode = "random"

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.seed = int(seed)

    def _score(self, samples: list[Sample]) -> dict[str, list[Any]]:
        return {
            "id": [s.id for s in samples],
            "utility": [seeded_uniform(s.id, self.seed) for s in samples],
            "status": ["ok"] * len(samples),
        }

    def _settings(self) -> dict[str, Any]:
        return {"seed": self.seed}
