"""Scores of a fixed fixture, for checking that a refactor leaves every number bit-identical.

Builds a tiny Qwen2-VL proxy (seed 0, float64, LoRA, SGD), a 12-sample pool with an empty answer
and an unparseable line, and 4 anchors; scores it in every mode through `score_pool` (engine,
shards of 4) and in process through `score`; writes each table's columns, the rejects file and
the output folder's listing to a JSON file. Run it on two source trees and compare:

    PYTHONPATH=/tmp/before/src python benchmarks/scores_fixture.py /tmp/fx-before before.json
    python benchmarks/scores_fixture.py /tmp/fx-after after.json
    python benchmarks/scores_fixture.py --compare before.json after.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

MODES = ("exact", "first-order", "hybrid", "naive")


def _samples(n: int, prefix: str, seed: int):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_scoring_proxies import samples

    return samples(n, prefix, seed)


def make(root: Path, out: Path) -> None:
    import torch

    from ostselect.data import write_samples
    from ostselect.data.sample import Sample, Turn
    from ostselect.proxy import build_tiny_proxy, load_proxy
    from ostselect.scoring import ScoreConfig, score

    try:
        from ostselect.scoring.driver import OSTScorerFactory, score_pool
    except ImportError:  # the tree before the driver split
        from ostselect.scoring.engine_scorer import OSTScorerFactory, score_pool

    root.mkdir(parents=True, exist_ok=True)
    proxy_dir = root / "proxy"
    if not proxy_dir.exists():
        build_tiny_proxy(proxy_dir, arch="qwen2-vl", size="tiny", seed=0)
    pool = _samples(11, "p", 1)
    empty = Sample(id="empty", turns=[Turn("user", "q"), Turn("assistant", "")])
    pool.insert(3, empty)
    write_samples(pool, root / "pool.jsonl")
    with open(root / "pool.jsonl", "a") as fh:
        fh.write("{not json\n")
    write_samples(_samples(4, "a", 2), root / "anchors.jsonl")
    result = {}
    for mode in MODES:
        cfg = ScoreConfig(
            optimizer="sgd", eta=0.05, dtype="float64", device="cpu", group_field="topic",
            batch_size=4, mode=mode, calibration_size=4,
        )  # fmt: skip
        factory = OSTScorerFactory(proxy_dir, root / "anchors.jsonl", cfg, params="lora")
        run = root / f"run-{mode}"
        run.mkdir(exist_ok=True)
        table = score_pool(root / "pool.jsonl", factory, run / "scores.parquet", shard_size=4)
        rejects = (run / "rejects.jsonl").read_text().replace(str(root), "ROOT")
        listing = sorted(p.name for p in run.iterdir())
        result[f"engine {mode}"] = {
            "table": table.to_pydict(),
            "rejects": rejects,
            "files": listing,
        }
        torch.manual_seed(0)
        proxy = load_proxy(proxy_dir, dtype="float64", params="lora")
        got: list = []
        table = score(root / "pool.jsonl", root / "anchors.jsonl", proxy, cfg, on_reject=got.append)
        result[f"in-process {mode}"] = {
            "table": table.to_pydict(),
            "rejects": "\n".join(str(r) for r in got).replace(str(root), "ROOT"),
        }
    out.write_text(json.dumps(result, default=repr))
    rows = ", ".join(f"{k} {len(v['table']['id'])}" for k, v in result.items())
    print(f"wrote {out}: {rows} rows")


def _same(x, y) -> bool:
    both_nan = isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y)
    return x == y or both_nan


def compare(a: Path, b: Path) -> int:
    left, right = json.loads(a.read_text()), json.loads(b.read_text())
    bad = 0
    for key in left:
        ta, tb = left[key]["table"], right[key]["table"]
        cols = [c for c in ta if c not in tb or not all(map(_same, ta[c], tb[c]))]
        cols += [c for c in tb if c not in ta]
        other = [f for f in ("rejects", "files") if left[key].get(f) != right[key].get(f)]
        bad += bool(cols or other)
        print(f"{key:24s} {'identical' if not (cols or other) else f'DIFFERS: {cols + other}'}")
    return 1 if bad else 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("paths", nargs=2, type=Path)
    ap.add_argument("--compare", action="store_true", help="compare two JSON files")
    args = ap.parse_args()
    sys.exit(compare(*args.paths) if args.compare else make(*args.paths))
