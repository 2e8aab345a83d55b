"""Where DigitMath's seed-to-seed spread comes from, and whether averaging the weights removes it.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_seed_variance.py \
        --work runs/bench-full/work --lr 0.002 --seeds 0 1 2

Trains Full-SFT exactly as Protocol B does (the cached pretrained target, AdamW + cosine,
`epochs_a` pool epochs; seeds change only the data order) and grades the final weights and two
exponential moving averages of them (decay 0.98 and 0.995, updated every step) on the test split.
Prints accuracy per seed and per category, and the sample std over seeds. The benchmark's gate
asks for a std <= 2 points on Full-SFT; this script is how we measured that neither a lower
learning rate nor weight averaging gets it there (docs/benchmark.md, "Seed spread").
"""

from __future__ import annotations

import argparse
import json
import statistics
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any


def train_and_grade(args: tuple[str, str, int, float, int]) -> dict[str, Any]:
    work, target, seed, lr, steps = args
    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(1)
    hf_logging.disable_progress_bar()
    from ostselect.bench.target import evaluate
    from ostselect.data import iter_samples
    from ostselect.proxy import load_proxy
    from ostselect.proxy.warmup import WarmupConfig, train_steps

    pool = list(iter_samples(Path(work) / "data" / "pool.jsonl"))
    test = list(iter_samples(Path(work) / "data" / "test.jsonl"))
    model = load_proxy(target, params="all")
    params = model.trainable_parameters()
    emas = {d: {k: v.detach().clone() for k, v in params.items()} for d in (0.98, 0.995)}

    def average(_n: int, _loss: float) -> None:
        with torch.no_grad():
            for d, ema in emas.items():
                for k, v in params.items():
                    ema[k].mul_(d).add_(v.detach(), alpha=1 - d)

    config = WarmupConfig(
        fraction=1.0,
        lr=lr,
        batch_size=16,
        epochs=10**6,
        seed=seed,
        weight_decay=0.0,
        warmup_ratio=0.05,
        schedule_steps=steps,
    )
    torch.manual_seed(seed)
    train_steps(model, pool, config, max_steps=steps, progress=average)
    model.model.eval()
    out: dict[str, Any] = {"seed": seed}
    acc, _ = evaluate(model, test, max_new_tokens=40, batch_size=50)
    out["final"] = {"overall": acc.overall, **acc.per_category}
    with torch.no_grad():
        for d, ema in emas.items():
            for k, v in params.items():
                v.copy_(ema[k])
            acc, _ = evaluate(model, test, max_new_tokens=40, batch_size=50)
            out[f"ema {d}"] = {"overall": acc.overall, **acc.per_category}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("runs/bench-full/work"))
    parser.add_argument("--lr", type=float, default=0.002)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    results = json.loads((args.work.parent / "results.json").read_text())
    from ostselect.bench.cache import MODELS_VERSION, cache_root, model_folder
    from ostselect.bench.protocol import PRETRAIN_FIELDS

    c = results["config"]  # the run's cached target: the key `protocol.pretrain_key` makes
    key = {"role": "target", "version": MODELS_VERSION, "dims": c["target"]}
    target = str(
        model_folder(
            cache_root(c["cache_dir"]), "target", {**key, **{k: c[k] for k in PRETRAIN_FIELDS}}
        )
    )
    steps = int(results["protocol_b_steps"])
    jobs = [(str(args.work), target, s, args.lr, steps) for s in args.seeds]
    with ProcessPoolExecutor(args.workers) as pool:
        runs = list(pool.map(train_and_grade, jobs))
    print(f"Full-SFT, Protocol B ({steps} steps), lr {args.lr}, seeds {args.seeds}")
    for weights in ("final", "ema 0.98", "ema 0.995"):
        accs = [100 * r[weights]["overall"] for r in runs]
        cats = sorted(k for k in runs[0][weights] if k != "overall")
        per_cat = ", ".join(
            f"{c} std {statistics.stdev(100 * r[weights][c] for r in runs):.1f}" for c in cats
        )
        print(
            f"{weights:>9}: "
            + " / ".join(f"{a:.1f}" for a in accs)
            + f"  mean {statistics.mean(accs):.1f} std {statistics.stdev(accs):.1f}  ({per_cat})"
        )


if __name__ == "__main__":
    main()
