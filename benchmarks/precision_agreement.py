"""bfloat16 / float16 scores against float32 on a tiny warmed-up proxy: rank agreement and time.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/precision_agreement.py
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/precision_agreement.py --size small --pool-n 200

The proxy is built offline (random weights), then warmed up a few AdamW steps in float32 so its
utilities are not degenerate, and saved with its optimizer state. Each selection (`--params`) and
mode is scored in float32, bfloat16 and float16 on the same pool and anchors (the proxy loaded in
that dtype; steps in float32 master precision, see `ostselect.scoring.updates`), and compared with
the float32 scores of the same mode: Spearman rank correlation, the overlap of the top
`--top` fraction (|top_k(low) & top_k(fp32)| / k) and the wall-time ratio to float32. The
acceptance figures of issue 14 are Spearman >= 0.99 and top-20% overlap >= 0.95.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ostselect.proxy import build_tiny_proxy, load_proxy
from ostselect.proxy.warmup import WarmupConfig, train_steps
from ostselect.scores import read_provenance
from ostselect.scoring import ScoreConfig, score
from ostselect.scoring.hybrid import spearman

sys.path.insert(0, str(Path(__file__).parent))
from score_speed import make_samples

DTYPES = ("float32", "bfloat16", "float16")
PARAMS = {"all": {"params": "all"}, "lora": {"params": "lora", "lora_layers": "top-half"}}


def top_overlap(reference: np.ndarray, other: np.ndarray, fraction: float) -> float:
    """|top_k(other) & top_k(reference)| / k over the rows finite in both."""
    ok = np.isfinite(reference) & np.isfinite(other)
    idx = np.flatnonzero(ok)
    k = max(1, math.ceil(fraction * idx.size))
    top_ref = set(idx[np.argsort(-reference[idx], kind="stable")[:k]])
    top_other = set(idx[np.argsort(-other[idx], kind="stable")[:k]])
    return len(top_ref & top_other) / k


def warmed_folder(root: Path, base: Path, params: str, steps: int, lr: float) -> Path:
    """`base` warmed up `steps` AdamW steps in float32 on its own samples, saved with state."""
    proxy = load_proxy(base, dtype="float32", **PARAMS[params])
    cfg = WarmupConfig(lr=lr, batch_size=8, warmup_ratio=0.0, schedule_steps=steps * 10)
    result = train_steps(proxy, make_samples(8 * steps, "w", 4), cfg)
    return proxy.save(root / f"warm-{params}", result.state)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="qwen2-vl")
    ap.add_argument("--size", default="tiny", help="tiny or small")
    ap.add_argument("--pool-n", type=int, default=300)
    ap.add_argument("--anchors", type=int, default=40)
    ap.add_argument("--params", default="all,lora", help="comma list of: all, lora")
    ap.add_argument("--modes", default="exact,first-order")
    ap.add_argument("--optimizer", default="adamw", help="adamw (warm-up state) or sgd")
    ap.add_argument("--eta", type=float, default=None, help="step size (sgd default 1e-2)")
    ap.add_argument("--warmup-steps", type=int, default=5)
    ap.add_argument("--warmup-lr", type=float, default=1e-3)
    ap.add_argument("--top", type=float, default=0.2)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars between the table's rows
    eta = args.eta if args.eta is not None or args.optimizer != "sgd" else 1e-2
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.arch}/{args.size}, "
        f"pool {args.pool_n}, {args.anchors} anchors, optimizer {args.optimizer}"
        + (f" eta={eta}" if eta is not None else " (warm-up's next lr)")
        + f", warm-up {args.warmup_steps} AdamW steps lr {args.warmup_lr}"
    )
    root = Path(tempfile.mkdtemp())
    base = build_tiny_proxy(root / "base", arch=args.arch, size=args.size)
    pool = make_samples(args.pool_n, "p", 3)
    anchors = make_samples(args.anchors, "a", 1)
    top = f"top-{args.top:.0%}"
    header = (
        f"{'params':6s} {'mode':12s} {'dtype':9s} {'spearman':>9s} {top:>8s}"
        f" {'ok':>5s} {'wall s':>8s} {'x fp32':>7s}"
    )
    print(header)
    for params in args.params.split(","):
        folder = warmed_folder(root, base, params, args.warmup_steps, args.warmup_lr)
        for mode in args.modes.split(","):
            reference: np.ndarray | None = None
            t_ref = math.nan
            for dtype in DTYPES:
                proxy = load_proxy(folder, dtype=dtype, params=None)
                cfg = ScoreConfig(
                    mode=mode,
                    optimizer=args.optimizer,
                    eta=eta,
                    dtype=dtype,
                    batch_size=8,
                    anchor_batch_size=40,
                )
                start = time.perf_counter()
                table = score(pool, anchors, proxy, cfg)
                wall = time.perf_counter() - start
                u = table.column("utility").to_numpy(zero_copy_only=False).astype(np.float64)
                n_ok = sum(s == "ok" for s in table.column("status").to_pylist())
                if reference is None:
                    reference, t_ref = u, wall
                ok = np.isfinite(reference) & np.isfinite(u)
                rho = spearman(reference[ok], u[ok])
                overlap = top_overlap(reference, u, args.top)
                print(
                    f"{params:6s} {mode:12s} {dtype:9s} {rho:9.4f} {overlap:8.3f} {n_ok:5d} "
                    f"{wall:8.1f} {wall / t_ref:7.2f}",
                    flush=True,
                )
    prov = read_provenance(table)
    memory = prov.get("memory") or prov.get("settings", {}).get("memory") or {}
    print(f"peak memory of the whole run ({memory.get('measure')}): ", end="")
    print(f"{memory.get('peak_bytes', 0) / 2**20:.0f} MiB")


if __name__ == "__main__":
    main(sys.argv[1:])
