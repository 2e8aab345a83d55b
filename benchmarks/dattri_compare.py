"""First-order OST utilities vs the `dattri` library's Grad-Dot/TracIn on the same proxy and data.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dattri_compare.py [--size small] [--pool-n 64]

With SGD, first-order utility_i = eta * <grad l(z_i), mean_v grad l(v)>: dattri's TracIn with one
checkpoint, weight eta, no gradient normalisation and no random projection (its projector is
cleared after construction) computes eta * <grad l(z_i), grad l(v)> for every pair; the row mean
is the same quantity. Both see the same prepared tensors (frozen prefix cached) and the same loss
function (`Proxy.row_loss`), so the comparison is about how the gradients are batched and reduced.
Needs `pip install --no-deps dattri` (its base imports need only numpy/scipy/tqdm/pyyaml).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from ostselect.proxy import build_tiny_proxy, load_proxy
from ostselect.scoring import ScoreConfig, score
from score_speed import make_samples


def dattri_grad_dot(proxy, pool, anchors, eta: float, batch_size: int) -> np.ndarray:
    import dattri.algorithm.tracin as tracin_module
    from dattri.algorithm.tracin import TracInAttributor
    from dattri.task import AttributionTask
    from torch.utils.data import DataLoader, TensorDataset

    tracin_module.tqdm = lambda iterable, **_: iterable  # its progress bars drown the output
    names = list(proxy.trainable_parameters())
    with torch.no_grad():
        pool_rows, spec = proxy.per_sample_rows(proxy.prepare(pool))
        anchor_rows, anchor_spec = proxy.per_sample_rows(proxy.prepare(anchors))

    def loss_for(row_spec):
        def loss_func(params, data):
            return proxy.row_loss({k: params[k] for k in names}, data, row_spec)

        return loss_func

    # the pool and the anchors are padded separately: the loss (train) and target (test)
    # functions each rebuild their own layout
    task = AttributionTask(
        loss_func=loss_for(spec),
        target_func=loss_for(anchor_spec),
        model=proxy.model,
        checkpoints=proxy.model.state_dict(),
    )
    attributor = TracInAttributor(
        task, weight_list=torch.tensor([eta]), normalized_grad=False, layer_name=names
    )
    attributor.projector_kwargs = None  # exact Grad-Dot: dattri projects unless cleared
    train = DataLoader(TensorDataset(*pool_rows), batch_size=batch_size)
    test = DataLoader(TensorDataset(*anchor_rows), batch_size=batch_size)
    scores = attributor.attribute(train, test)  # [n_pool, n_anchors]
    return scores.mean(dim=1).double().numpy()


def main(argv: list[str] | None = None) -> None:
    from scipy.stats import pearsonr, spearmanr

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--arch", default="qwen2-vl")
    ap.add_argument("--pool-n", type=int, default=64)
    ap.add_argument("--anchors", type=int, default=100)
    ap.add_argument("--eta", type=float, default=1e-2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    folder = build_tiny_proxy(Path(tempfile.mkdtemp()) / "proxy", arch=args.arch, size=args.size)
    proxy = load_proxy(folder, dtype="float32", params="lora", lora_layers="top-half")
    with torch.no_grad():  # fresh LoRA B is zero: move it so every gradient is non-trivial
        gen = torch.Generator().manual_seed(0)
        for t in proxy.trainable_parameters().values():
            t.add_(0.02 * torch.randn(t.shape, generator=gen))
    pool = make_samples(args.pool_n, "p", 3)
    anchors = make_samples(args.anchors, "a", 1)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.arch}/{args.size}, "
        f"LoRA top-half, {args.pool_n} candidates x {args.anchors} anchors, SGD eta={args.eta}"
    )
    cfg = ScoreConfig(mode="first-order", optimizer="sgd", eta=args.eta, batch_size=args.batch_size)
    start = time.perf_counter()
    ours = score(pool, anchors, proxy, cfg).column("utility").to_numpy()
    t_ours = time.perf_counter() - start
    start = time.perf_counter()
    theirs = dattri_grad_dot(proxy, pool, anchors, args.eta, args.batch_size)
    t_theirs = time.perf_counter() - start
    print(
        f"  ostselect first-order {args.pool_n / t_ours:7.2f} samples/s ({t_ours:.1f} s) | dattri "
        f"Grad-Dot {args.pool_n / t_theirs:7.2f} samples/s ({t_theirs:.1f} s) | speed ratio "
        f"{t_theirs / t_ours:.2f}x"
    )
    rel = np.abs(ours - theirs).max() / np.abs(ours).max()
    print(
        f"  scores: Pearson {pearsonr(ours, theirs).statistic:.6f}, Spearman "
        f"{spearmanr(ours, theirs).statistic:.6f}, max |diff| / max |u| {rel:.2e}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
