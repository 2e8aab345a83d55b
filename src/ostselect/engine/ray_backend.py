"""The Ray backend: a pool of scoring actors, shards handed out as actors free up.

Each actor builds its scorer once from the factory (loading the proxy and preparing the anchor set a
single time per worker) and then scores whole shards with the same `score_shard` the local backend
uses, so both backends give identical rows. The driver keeps at most `depth` shards per actor in
flight, writes every finished shard to the shard store itself (so resume works across backends), and
hands the shard of an actor that died to a fresh actor, up to `max_attempts` times.
"""

from __future__ import annotations

import os
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ostselect.engine.api import ScorerFactory
from ostselect.engine.pool import Shard
from ostselect.engine.store import ShardResult
from ostselect.engine.worker import score_shard

DEFAULT_OBJECT_STORE_BYTES = 256 * 1024**2


class ShardFailedError(RuntimeError):
    """A shard whose workers kept dying; finished shards are kept, so the run can be resumed."""


class ScoringActor:
    """One scorer per worker process, built once; scores the shards it is given."""

    def __init__(self, factory: ScorerFactory):
        self._scorer = factory()

    def score(self, shard: Shard, batch_size: int) -> ShardResult:
        return score_shard(self._scorer, shard, batch_size)

    def pid(self) -> int:
        return os.getpid()


def start_ray(address: str | None = None, *, num_cpus: int | None = None) -> bool:
    """Join `address` ("auto" or "HOST:PORT"), or start a local instance; True if we started one.

    A Ray session already open in this process (e.g. a notebook's, or a test fixture's) is reused.
    """
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        store_bytes = int(os.environ.get("OST_RAY_OBJECT_STORE_BYTES", DEFAULT_OBJECT_STORE_BYTES))
        ray.init(
            num_cpus=num_cpus or os.cpu_count(),
            include_dashboard=False,
            object_store_memory=store_bytes,
        )
    return True


def default_num_workers(gpus_per_worker: float) -> int:
    """As many actors as the cluster has room for: one per CPU, or per `gpus_per_worker` GPUs."""
    import ray

    resources = ray.cluster_resources()
    if gpus_per_worker > 0:
        n = int(resources.get("GPU", 0) // gpus_per_worker)
        if n < 1:
            raise RuntimeError(
                f"the Ray cluster has {resources.get('GPU', 0)} GPU(s): not enough for one worker "
                f"with --gpus-per-worker {gpus_per_worker}"
            )
        return n
    return max(1, int(resources.get("CPU", 1)))


def check_room(workers: int, gpus_per_worker: float, *, strict: bool) -> None:
    """Actors that cannot be placed wait forever: say so up front (a cluster may autoscale)."""
    import ray

    resources = ray.cluster_resources()
    need = {"CPU": float(workers), "GPU": workers * float(gpus_per_worker)}
    short = [f"{need[k]:g} {k}" for k in need if need[k] > resources.get(k, 0.0)]
    if not short:
        return
    message = (
        f"{workers} worker(s) with {gpus_per_worker:g} GPU(s) each need {' and '.join(short)}, "
        f"but the Ray cluster has {resources.get('CPU', 0):g} CPU "
        f"and {resources.get('GPU', 0):g} GPU"
    )
    if strict:
        raise ValueError(message + ": lower --num-workers / --gpus-per-worker")
    warnings.warn(message + ": workers will wait until the cluster grows", stacklevel=3)


@dataclass
class _InFlight:
    actor: Any
    shard: Shard
    attempt: int


class RayBackend:
    """Actor pool over Ray; `run` streams shards through it and reports each result in any order.

    Progress therefore moves per finished shard, not per batch like the local backend: the
    batches run inside the actors, and streaming per-batch events back would cost a round trip
    each for a display.
    """

    name = "ray"

    def __init__(
        self,
        factory: ScorerFactory,
        batch_size: int,
        *,
        address: str | None = None,
        num_workers: int | None = None,
        gpus_per_worker: float = 0,
        depth: int = 2,
        max_attempts: int = 3,
    ):
        self._factory = factory
        self._batch_size = batch_size
        self._address = address
        self._num_workers = num_workers
        self._gpus = gpus_per_worker
        self._depth = depth
        self._max_attempts = max_attempts
        self._started = False
        self._actor_cls: Any = None
        self.workers = 0
        self.restarts = 0

    def _new_actor(self) -> Any:
        return self._actor_cls.remote(self._factory)

    def run(self, shards: Iterable[Shard], on_result: Callable[[ShardResult], None]) -> None:
        import ray
        from ray.exceptions import (
            NodeDiedError,
            ObjectLostError,
            OwnerDiedError,
            RayActorError,
            WorkerCrashedError,
        )

        lost_worker = (RayActorError, WorkerCrashedError, NodeDiedError, ObjectLostError)
        lost_worker = (*lost_worker, OwnerDiedError)

        self._started = start_ray(self._address)
        alive: set[Any] = set()
        try:
            self._run(shards, on_result, alive, lost_worker)
        finally:
            for actor in alive:
                ray.kill(actor, no_restart=True)
            self.close()

    def _run(
        self,
        shards: Iterable[Shard],
        on_result: Callable[[ShardResult], None],
        alive: set[Any],
        lost_worker: tuple[type[BaseException], ...],
    ) -> None:
        import ray

        self.workers = self._num_workers or default_num_workers(self._gpus)
        check_room(self.workers, self._gpus, strict=self._started)
        self._actor_cls = ray.remote(ScoringActor).options(
            num_cpus=1, num_gpus=self._gpus, max_restarts=0
        )
        slots: deque[Any] = deque()
        for _ in range(self.workers):
            actor = self._new_actor()
            alive.add(actor)
            slots.extend([actor] * self._depth)

        feed: Iterator[Shard] = iter(shards)
        retry: deque[tuple[Shard, int]] = deque()
        in_flight: dict[Any, _InFlight] = {}
        exhausted = False
        while True:
            while slots and (retry or not exhausted):
                if retry:
                    shard, attempt = retry.popleft()
                else:
                    nxt = next(feed, None)
                    if nxt is None:
                        exhausted = True
                        break
                    shard, attempt = nxt, 1
                actor = slots.popleft()
                ref = actor.score.remote(shard, self._batch_size)
                in_flight[ref] = _InFlight(actor, shard, attempt)
            if not in_flight:
                break
            done, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in done:
                job = in_flight.pop(ref)
                try:
                    result = ray.get(ref)
                except lost_worker as e:
                    if getattr(e, "actor_init_failed", False):
                        raise RuntimeError(
                            f"the scorer could not be built in a Ray worker: {e}"
                        ) from e
                    if job.attempt >= self._max_attempts:
                        raise ShardFailedError(
                            f"shard {job.shard.index} failed {job.attempt} times because its "
                            f"worker died (last error: {type(e).__name__}: {e}). "
                            "Finished shards are saved: fix the cause and rerun with --resume."
                        ) from e
                    retry.append((job.shard, job.attempt + 1))
                    if job.actor in alive:  # replace the dead actor once, not once per task
                        alive.discard(job.actor)
                        while job.actor in slots:
                            slots.remove(job.actor)
                        ray.kill(job.actor, no_restart=True)
                        fresh = self._new_actor()
                        alive.add(fresh)
                        slots.extend([fresh] * self._depth)
                        self.restarts += 1
                    continue
                on_result(result)
                if job.actor in alive:
                    slots.append(job.actor)

    def close(self) -> None:
        if self._started:
            import ray

            ray.shutdown()
            self._started = False
