"""Peak RSS reading 10k vs 100k text-only records: streaming keeps memory flat as files grow.

Each measurement runs in a fresh subprocess (peak RSS is per process). For each size and container
(JSONL, JSON array) it reports the peak after imports ("base") and the peak after reading, for
`read_pool` (the reader) and `validate_pool` (reader + checks + duplicate-id set + rejects file).

    .venv/bin/python benchmarks/read_rss.py [--sizes 10000 100000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys
from ostselect.data import read_pool, validate_pool

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

path, mode, out = sys.argv[1], sys.argv[2], sys.argv[3]
base = peak_mb()
if mode == "read_pool":
    n = sum(1 for _ in read_pool(path))
else:
    n = validate_pool(path, out).total
print(json.dumps({"records": n, "base_mb": base, "peak_mb": peak_mb()}))
"""


def write_pool(path: Path, n: int, container: str) -> None:
    """Text-only messages records of a realistic size (~400 bytes each)."""

    def record(i: int) -> dict:
        return {
            "id": f"q{i}",
            "messages": [
                {"role": "user", "content": f"Question {i}: what is {i} * 7? " + "Explain. " * 10},
                {"role": "assistant", "content": f"{i} * 7 = {i * 7}. " + "Step by step. " * 10},
            ],
            "source": "bench",
        }

    with path.open("w", encoding="utf-8") as fh:
        if container == "jsonl":
            for i in range(n):
                fh.write(json.dumps(record(i)) + "\n")
        else:
            fh.write("[\n")
            for i in range(n):
                fh.write(("" if i == 0 else ",\n") + json.dumps(record(i), indent=2))
            fh.write("\n]\n")


def measure(path: Path, mode: str, out: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), mode, str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[10_000, 100_000])
    args = parser.parse_args()
    small, large = args.sizes
    with tempfile.TemporaryDirectory(prefix="ost-rss-") as tmp:
        root = Path(tmp)
        print(
            f"{'container':<9} {'call':<13} {'records':>8} {'file MB':>8} {'base MB':>8} "
            f"{'peak MB':>8} {'growth MB':>9}"
        )
        for container in ("jsonl", "array"):
            for mode in ("read_pool", "validate_pool"):
                peaks = []
                for n in (small, large):
                    path = root / f"pool_{n}.{'jsonl' if container == 'jsonl' else 'json'}"
                    if not path.exists():
                        write_pool(path, n, container)
                    r = measure(path, mode, root / "out")
                    assert r["records"] == n, r
                    size_mb = path.stat().st_size / 2**20
                    growth = r["peak_mb"] - r["base_mb"]
                    peaks.append(r["peak_mb"])
                    print(
                        f"{container:<9} {mode:<13} {n:>8} {size_mb:>8.1f} {r['base_mb']:>8.1f} "
                        f"{r['peak_mb']:>8.1f} {growth:>9.1f}"
                    )
                print(
                    f"{'':<9} {mode:<13} peak RSS ratio {large}/{small} records: "
                    f"{peaks[1] / peaks[0]:.3f} (file ratio {large / small:.0f}x)"
                )


if __name__ == "__main__":
    main()
