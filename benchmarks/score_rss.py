"""Peak RSS of scoring 2,000 vs 20,000 samples: memory must stay flat as the pool grows.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/score_rss.py [--sizes 2000 20000]

Each size runs in its own subprocess (first-order on the tiny Qwen2-VL proxy, 10 anchors, the pool
generated lazily and streamed), which reports its own peak RSS; the ratio must stay <= 1.2.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = "--child"


def child(n: int, folder: str, batch_size: int) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from ostselect.proxy import load_proxy
    from ostselect.scoring import ScoreConfig, score
    from score_speed import make_samples, sample_stream

    proxy = load_proxy(folder, dtype="float32", params="lora", lora_layers="top-half")
    anchors = make_samples(10, "a", 1)
    config = ScoreConfig(mode="first-order", optimizer="sgd", eta=1e-2, batch_size=batch_size)
    start = time.perf_counter()
    table = score(sample_stream(n, "p", 3), anchors, proxy, config)
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: KiB
    print(json.dumps({"n": table.num_rows, "peak_mib": peak_kib / 1024, "seconds": seconds}))


def main(argv: list[str]) -> None:
    if argv and argv[0] == CHILD:
        child(int(argv[1]), argv[2], int(argv[3]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args(argv)
    from ostselect.proxy import build_tiny_proxy

    folder = build_tiny_proxy(Path(tempfile.mkdtemp()) / "proxy", arch="qwen2-vl", size="tiny")
    results = []
    for n in args.sizes:
        cmd = [sys.executable, __file__, CHILD, str(n), str(folder), str(args.batch_size)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        results.append(r)
        print(
            f"  {r['n']:6d} samples: peak RSS {r['peak_mib']:7.1f} MiB, {r['seconds']:6.1f} s "
            f"({r['n'] / r['seconds']:.1f} samples/s)",
            flush=True,
        )
    base, last = results[0], results[-1]
    print(
        f"peak RSS {last['n']} / {base['n']} samples: {last['peak_mib'] / base['peak_mib']:.3f}x "
        "(target <= 1.2x)"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
