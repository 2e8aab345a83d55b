"""What `memoized_collate` saves a training loop that sees each sample many times.

Protocol B trains a 20% subset for as many steps as Full-SFT takes, so every sample comes back
dozens of times; without the memo each visit re-renders the chat template three times, re-tokenizes
with offsets and re-decodes the image. Trains the same steps twice on a DigitMath subset with a
freshly built benchmark-sized target (float32, params all, one thread), once with collate
memoized (what `train_steps` does) and once with the memo switched off, checks that both runs
end with bit-identical weights, and prints seconds per step and the ratio.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/train_step_speed.py [--steps 120] [--subset 200]
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--subset", type=int, default=200, help="samples the steps cycle over")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    from ostselect.bench.config import full_config
    from ostselect.bench.data import make_digitmath
    from ostselect.bench.models import build_bench_model
    from ostselect.bench.pretrain import tokenizer_extras
    from ostselect.bench.target import train_model
    from ostselect.data import iter_samples
    from ostselect.proxy import load_proxy
    from ostselect.proxy import warmup as warmup_module

    c = full_config()
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_digitmath(
            Path(tmp) / "data", n_pool=args.subset, n_heldout=10, n_test=10, n_pretrain=50
        )
        samples = list(iter_samples(paths.pool))
        corpus = [t.content for s in samples for t in s.turns] + tokenizer_extras()
        folder = build_bench_model(
            Path(tmp) / "target", text=c.target.text(), vision=c.target.vision(), corpus=corpus
        )
        timings, weights = {}, {}
        real_memo = warmup_module.memoized_collate
        for memo in (True, False, True, False):
            if not memo:  # what collate did before: every visit renders and decodes again
                warmup_module.memoized_collate = contextlib.nullcontext  # type: ignore[assignment]
            model = load_proxy(folder, params="all")
            start = time.perf_counter()
            train_model(model, samples, lr=c.finetune_lr, batch_size=16, total_steps=args.steps)
            timings.setdefault(memo, []).append((time.perf_counter() - start) / args.steps)
            weights[memo] = [p.detach().clone() for p in model.model.parameters()]
            warmup_module.memoized_collate = real_memo
    same = all(torch.equal(a, b) for a, b in zip(weights[True], weights[False], strict=True))
    with_memo, without = min(timings[True]), min(timings[False])
    print(f"{args.steps} steps of batch 16 over {args.subset} samples (best of 2 each)")
    print(f"memoized collate: {with_memo * 1e3:.1f} ms/step; without: {without * 1e3:.1f} ms/step")
    print(f"ratio: {without / with_memo:.2f}x faster; final weights bit-identical: {same}")


if __name__ == "__main__":
    main()
