"""Sharded, resumable execution of any `SampleScorer`, locally or on a Ray cluster.

`run_scoring` is the entry point: it streams the pool, scores it shard by shard on the chosen
backend, keeps finished shards in `<out>.shards/` so a killed run resumes where it stopped, and
writes the merged scores table. `run_shards` is the same without the final writes, for a caller
that runs several passes and writes once (OST's hybrid). See docs/distributed.md.
"""

from ostselect.engine.api import SampleScorer, ScorerFactory
from ostselect.engine.run import ShardedRun, merge_shards, run_scoring, run_shards
from ostselect.engine.store import ShardStore, StoreError, fingerprint_differences, store_path_for
from ostselect.engine.worker import STATUS_NONFINITE, STATUS_OK, STATUS_OOM, score_shard

__all__ = [
    "STATUS_NONFINITE",
    "STATUS_OK",
    "STATUS_OOM",
    "SampleScorer",
    "ScorerFactory",
    "ShardStore",
    "ShardedRun",
    "StoreError",
    "fingerprint_differences",
    "merge_shards",
    "run_scoring",
    "run_shards",
    "score_shard",
    "store_path_for",
]
