"""What would make OST win on DigitMath? Step sizes and per-anchor-group normalisation, measured.

    .venv/bin/python benchmarks/bench_ost_variants.py [--work runs/bench-full/work] \
        [--out runs/bench-variants]

Runs the full benchmark configuration plus an "OST variants" stage (`BenchConfig.variants`):
OST-exact re-scored at other SGD step sizes and with the warm-up's next AdamW step (the paper's
simulated step), and the main scores ranked after z-scoring each
anchor group's utilities (`--normalize group-z`), each variant's top 20% trained under Protocol B
on every seed. Pointed at the work folder of a finished `ost bench run`, every cached stage
(pretrained models, scores, the 96 main training jobs) is reused and only the variants cost
time. The variants table lands in OUT/results.md; the main table is the same as the run's.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ostselect.bench.config import OSTVariant, full_config
from ostselect.bench.demo import run_and_write

VARIANTS = (
    OSTVariant("eta 0.002", eta=0.002),
    OSTVariant("eta 0.02", eta=0.02),
    OSTVariant("eta 0.05", eta=0.05),
    OSTVariant("eta 0.1", eta=0.1),
    OSTVariant("adamw", optimizer="adamw"),
    OSTVariant("group-z", normalize="group-z"),
    OSTVariant("group-z, balanced", normalize="group-z", balance_by="category"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("runs/bench-full/work"))
    parser.add_argument("--out", type=Path, default=Path("runs/bench-variants"))
    args = parser.parse_args()
    config = full_config().with_overrides(variants=VARIANTS)
    started = time.perf_counter()
    results, _ = run_and_write(
        config,
        args.out,
        work_dir=args.work,
        command="python benchmarks/bench_ost_variants.py",
        log=lambda m: print(m, flush=True),
    )
    for v in results["variants"]:
        print(
            f"{v['row']}: AUROC {v['auroc']:.3f}, noisy {v['noisy_share']:.0%}, accuracy "
            f"{100 * v['accuracy_mean']:.1f} ± {100 * v['accuracy_std']:.1f}, kept "
            + ", ".join(f"{k} {n}" for k, n in v["kept_per_category"].items())
        )
    print(f"{(time.perf_counter() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
