"""The local backend: one scorer in this process, shards scored one after another.

Being in-process, it can report progress per batch (`on_batch`), not only per finished shard.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ostselect.engine.api import SampleScorer, ScorerFactory
from ostselect.engine.pool import Shard
from ostselect.engine.store import ShardResult
from ostselect.engine.worker import score_shard


class LocalBackend:
    """Builds the scorer once (on first use) and streams shards through it."""

    name = "local"
    restarts = 0  # the scorer runs in this process: if it dies, so does the run (resume it)

    def __init__(self, factory: ScorerFactory, batch_size: int):
        self._factory = factory
        self._batch_size = batch_size
        self._scorer: SampleScorer | None = None

    @property
    def workers(self) -> int:
        return 1

    def scorer(self) -> SampleScorer:
        if self._scorer is None:
            self._scorer = self._factory()
        return self._scorer

    def run(
        self,
        shards: Iterable[Shard],
        on_result: Callable[[ShardResult], None],
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        for shard in shards:
            on_result(score_shard(self.scorer(), shard, self._batch_size, on_batch))

    def close(self) -> None:
        self._scorer = None
