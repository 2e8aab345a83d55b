"""Local vs Ray backend throughput on this machine, with Ray's fixed start-up cost stated apart.

The scorer burns a fixed amount of CPU per sample (repeated hashing, ~`--work-ms` ms), standing in
for a proxy forward/backward, so the numbers show the engine's overhead and the parallel speed-up
the machine's cores allow. Three figures: local samples/s; Ray samples/s once Ray is up (actor
start-up included, since every run pays it); and `ray.init` time on its own.

    .venv/bin/python benchmarks/ray_throughput.py [--samples 2000] [--work-ms 2] [--workers N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path


class BusyScorer:
    """Deterministic utility from the text after `rounds` of hashing (CPU work per sample)."""

    mode = "busy"

    def __init__(self, rounds: int):
        self.rounds = rounds

    def score_samples(self, samples):
        utility = []
        for s in samples:
            digest = s.assistant_text.encode()
            for _ in range(self.rounds):
                digest = hashlib.sha256(digest).digest()
            utility.append(int.from_bytes(digest[:6]) / 2**47 - 1.0)
        return {"id": [s.id for s in samples], "utility": utility, "status": ["ok"] * len(samples)}

    def provenance(self):
        return {"scorer": "busy", "rounds": self.rounds}


class BusyFactory:
    def __init__(self, rounds: int):
        self.rounds = rounds

    def __call__(self) -> BusyScorer:
        return BusyScorer(self.rounds)


def rounds_for(ms: float) -> int:
    """How many sha256 rounds take about `ms` milliseconds here."""
    n, start = 20000, time.perf_counter()
    digest = b"x"
    for _ in range(n):
        digest = hashlib.sha256(digest).digest()
    per_round = (time.perf_counter() - start) / n
    return max(1, int(ms / 1000 / per_round))


def write_pool(path: Path, n: int) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            record = {
                "id": f"r{i}",
                "messages": [
                    {"role": "user", "content": f"question {i}"},
                    {"role": "assistant", "content": f"answer {i}"},
                ],
            }
            fh.write(json.dumps(record) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--work-ms", type=float, default=2.0)
    ap.add_argument("--shard-size", type=int, default=100)
    ap.add_argument("--workers", type=int, default=None, help="Ray actors (default: CPUs)")
    args = ap.parse_args()

    import ray

    from ostselect.engine import run_scoring
    from ostselect.engine.ray_backend import start_ray

    factory = BusyFactory(rounds_for(args.work_ms))
    common = {"shard_size": args.shard_size, "batch_size": 16, "progress": False}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pool = folder / "pool.jsonl"
        write_pool(pool, args.samples)
        fp = {"bench": "ray_throughput", "n": args.samples}

        t0 = time.perf_counter()
        local = run_scoring(pool, factory, folder / "local" / "s.parquet", fingerprint=fp, **common)
        local_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        start_ray(None)
        init_s = time.perf_counter() - t0
        workers = args.workers or int(ray.cluster_resources().get("CPU", 1))
        t0 = time.perf_counter()
        remote = run_scoring(
            pool,
            factory,
            folder / "ray" / "s.parquet",
            fingerprint=fp,
            backend="ray",
            num_workers=workers,
            **common,
        )
        ray_s = time.perf_counter() - t0
        ray.shutdown()

    same = local.column("utility").equals(remote.column("utility"))
    n = args.samples
    print(f"machine: {os.cpu_count()} CPUs; {n:,} samples, ~{args.work_ms:g} ms of CPU per sample")
    print(f"local backend : {n / local_s:8.1f} samples/s ({local_s:.2f} s)")
    print(
        f"ray backend   : {n / ray_s:8.1f} samples/s ({ray_s:.2f} s, {workers} actors, "
        "actor start-up included)"
    )
    print(f"ray.init      : {init_s:.2f} s fixed start-up cost (not in the rate above)")
    print(f"ray / local   : {local_s / ray_s:.2f}x throughput; identical utilities: {same}")


if __name__ == "__main__":
    main()
