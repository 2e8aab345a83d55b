"""Peak RSS of scoring 2,000 vs 20,000 samples through the engine: flat means it streams the pool.

Each size runs in its own subprocess (peak RSS is per process), with two scorers:
- `cheap`: a deterministic hash, so the engine's own memory is what is measured (reading, sharding,
  the shard store, the final merge);
- `ost`: the real OST scorer (first-order, a tiny random Qwen2-VL proxy, 4 anchors) via
  `ostselect.scoring.driver.score_pool`, i.e. what `ost score` runs.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/engine_rss.py [--scorers cheap ost]
        [--sizes 2000 20000] [--shard-size 256]
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


def write_short_pool(path: Path, n: int, prefix: str = "r") -> None:
    """Short text conversations: the OST scorer's cost per sample grows with the tokens."""
    words = ["red", "blue", "cat", "dog", "two", "three", "line", "dot", "big", "small"]
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            q = " ".join(words[(i * k) % len(words)] for k in (1, 3, 7))
            a = " ".join(words[(i + k) % len(words)] for k in range(1 + i % 4))
            record = {
                "id": f"{prefix}{i}",
                "messages": [
                    {"role": "user", "content": f"what about {q}?"},
                    {"role": "assistant", "content": a},
                ],
            }
            fh.write(json.dumps(record) + "\n")


def run_cheap(n: int, shard_size: int, folder: Path):
    from ostselect.engine import run_scoring

    pool = folder / "pool.jsonl"
    write_pool(pool, n)
    return run_scoring(
        pool,
        CheapFactory(),
        folder / "out" / "scores.parquet",
        shard_size=shard_size,
        batch_size=32,
        fingerprint={"bench": "engine_rss", "n": n},
        progress=False,
    )


def run_ost(n: int, shard_size: int, folder: Path):
    from ostselect.proxy import build_tiny_proxy
    from ostselect.scoring import ScoreConfig
    from ostselect.scoring.driver import OSTScorerFactory, score_pool

    proxy = build_tiny_proxy(folder / "proxy", arch="qwen2-vl", size="tiny", seed=0)
    pool, anchors = folder / "pool.jsonl", folder / "anchors.jsonl"
    write_short_pool(pool, n)
    write_short_pool(anchors, 4, prefix="anchor")
    config = ScoreConfig(mode="first-order", optimizer="sgd", eta=1e-3, batch_size=16)
    factory = OSTScorerFactory(proxy, anchors, config, params="all")
    return score_pool(pool, factory, folder / "out" / "scores.parquet", shard_size=shard_size)


def child(scorer: str, n: int, shard_size: int, folder: Path) -> None:
    start = time.perf_counter()
    table = (run_ost if scorer == "ost" else run_cheap)(n, shard_size, folder)
    elapsed = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    ok = sum(s == "ok" for s in table.column("status").to_pylist())
    result = {"n": n, "rows": table.num_rows, "ok": ok, "peak_mib": peak_kib / 1024, "s": elapsed}
    print(json.dumps(result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scorers", nargs="+", choices=["cheap", "ost"], default=["cheap", "ost"])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    ap.add_argument("--shard-size", type=int, default=256)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-scorer", default="cheap", help=argparse.SUPPRESS)
    ap.add_argument("--folder", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        child(args.child_scorer, args.child, args.shard_size, args.folder)
        return
    for scorer in args.scorers:
        results = []
        for n in args.sizes:
            with tempfile.TemporaryDirectory() as tmp:
                cmd = [sys.executable, __file__, "--child", str(n), "--folder", tmp]
                cmd += ["--shard-size", str(args.shard_size), "--child-scorer", scorer]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                results.append(json.loads(out.strip().splitlines()[-1]))
        print(f"[{scorer} scorer]")
        for r in results:
            print(
                f"{r['n']:>7,} samples: peak RSS {r['peak_mib']:7.1f} MiB "
                f"({r['rows']:,} rows, {r['ok']:,} ok, {r['s']:.1f} s, "
                f"{r['n'] / r['s']:,.0f} samples/s)"
            )
        if len(results) >= 2:
            ratio = results[-1]["peak_mib"] / results[0]["peak_mib"]
            size_ratio = results[-1]["n"] / results[0]["n"]
            verdict = "within" if ratio <= 1.2 else "ABOVE"
            print(
                f"peak RSS ratio {ratio:.2f} for {size_ratio:.0f}x the samples "
                f"({verdict} the 1.2x target; flat = streaming)"
            )


if __name__ == "__main__":
    main()
