"""Peak RSS of `run_scoring` on 2,000 vs 20,000 samples: flat means the engine streams the pool.

Each size runs in its own subprocess (peak RSS is per process), with a cheap deterministic scorer so
the engine's own memory is what is measured: reading, sharding, the shard store, the final merge.

    .venv/bin/python benchmarks/engine_rss.py [--sizes 2000 20000] [--shard-size 256]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


class CheapScorer:
    mode = "cheap"

    def score_samples(self, samples):
        ids = [s.id for s in samples]
        utility = [
            int.from_bytes(hashlib.sha256(s.assistant_text.encode()).digest()[:6]) / 2**47 - 1.0
            for s in samples
        ]
        return {"id": ids, "utility": utility, "status": ["ok"] * len(ids)}

    def provenance(self):
        return {"scorer": "cheap"}


class CheapFactory:
    def __call__(self) -> CheapScorer:
        return CheapScorer()


def write_pool(path: Path, n: int) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            record = {
                "id": f"r{i}",
                "messages": [
                    {"role": "user", "content": f"Describe item {i} in detail. " * 8},
                    {"role": "assistant", "content": f"Item {i} is number {i}. " * 20},
                ],
            }
            fh.write(json.dumps(record) + "\n")


def child(n: int, shard_size: int, folder: Path) -> None:
    from ostselect.engine import run_scoring

    pool = folder / "pool.jsonl"
    write_pool(pool, n)
    start = time.perf_counter()
    table = run_scoring(
        pool,
        CheapFactory(),
        folder / "out" / "scores.parquet",
        shard_size=shard_size,
        batch_size=32,
        fingerprint={"bench": "engine_rss", "n": n},
        progress=False,
    )
    elapsed = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"n": n, "rows": table.num_rows, "peak_mib": peak_kib / 1024, "s": elapsed}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    ap.add_argument("--shard-size", type=int, default=256)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--folder", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        child(args.child, args.shard_size, args.folder)
        return
    results = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, __file__, "--child", str(n), "--folder", tmp]
            cmd += ["--shard-size", str(args.shard_size)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            results.append(json.loads(out.strip().splitlines()[-1]))
    for r in results:
        print(
            f"{r['n']:>7,} samples: peak RSS {r['peak_mib']:7.1f} MiB "
            f"({r['rows']:,} rows, {r['s']:.1f} s, {r['n'] / r['s']:,.0f} samples/s)"
        )
    if len(results) >= 2:
        ratio = results[-1]["peak_mib"] / results[0]["peak_mib"]
        size_ratio = results[-1]["n"] / results[0]["n"]
        print(f"peak RSS ratio {ratio:.2f} for {size_ratio:.0f}x the samples (flat = streaming)")


if __name__ == "__main__":
    main()
