"""What an execution backend needs from a scorer: score samples, say how they were scored.

Backends (local, Ray) decide *where* scoring runs, never *what* it computes. Every scorer (OST
modes and baselines alike) is a `SampleScorer` built in the worker by a picklable
`ScorerFactory`, so the expensive set-up (loading the proxy, preparing the anchor set) happens
once per worker, and shards of the pool are streamed through `score_samples`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ostselect.data.sample import Sample


@runtime_checkable
class SampleScorer(Protocol):
    mode: str  # e.g. "exact", "first-order", "loss", "judge"; written to the table's `mode` column

    def score_samples(self, samples: Sequence[Sample]) -> dict[str, list[Any]]:
        """Columns for these samples, in input order: `id`, `utility` (higher = keep), `status`
        ("ok" or the reason the value is not usable, e.g. "nonfinite"), and optionally `loss`,
        `tokens`, `utility[<group>]`. Must be deterministic: the same samples give the same rows
        whatever shard or worker they land on."""
        ...

    def provenance(self) -> dict[str, Any]:
        """How the scores were made (model path + hash, anchor hash, hyper-parameters, ...).

        A scorer may also offer `counters() -> dict[str, float]`, its cumulative cost (sample
        passes, tokens, seconds): the engine records each shard's difference and writes the sum
        under `cost`, so the numbers cover the whole table across workers and resumed runs."""
        ...


class ScorerFactory(Protocol):
    """Picklable recipe that builds a `SampleScorer` inside a worker process."""

    def __call__(self) -> SampleScorer: ...
