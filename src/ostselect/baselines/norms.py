"""`grand` and `el2n` (Paul et al. 2021, "Deep Learning on a Data Diet"), on an early (warm-up)
proxy.

- GraNd = ||d loss_i / d theta||_2 over the proxy's trainable parameters.
- EL2N  = ||softmax(logits_t) - onehot(y_t)||_2, averaged over the sample's supervised tokens.

Both are "how much the model still has to learn from this sample". The paper keeps high scores
(prunes easy samples), so `keep="high"` is the default; on noisy pools high scores also catch
broken samples, which is what `keep="low"` is for.

EL2N needs logits, which the `ScoringModel` protocol does not expose. In order of preference:
1. a proxy with the optional method `supervised_token_logits(prepared) -> [(logits [T_i, V],
   labels [T_i])]` gives them directly (`el2n_source = "logits"`);
2. a Hugging Face proxy (`ostselect.proxy.Proxy`: a `model` module, and `prepared.batch` holding the
   processor `inputs` and `labels` with -100 on unsupervised positions) is run once more in full
   through `hf_supervised_logits` (`el2n_source = "hf-logits"`, one extra forward per sample);
3. otherwise the score is approximated from the per-sample loss as 1 - exp(-loss), the error of a
   model putting the sample's geometric-mean probability on every target (`el2n_source =
   "loss-approximation"`, monotone in the loss, stated in the provenance).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ostselect.baselines.base import Baseline, check_keep, proxy_description
from ostselect.baselines.loss import ProxyBatchOptions
from ostselect.baselines.proxy_ops import batches, per_sample_gradients, per_sample_losses
from ostselect.baselines.registry import KeepOptions, register_baseline
from ostselect.data.sample import Sample
from ostselect.proxy.api import ScoringModel
from ostselect.scores import finite_status

LOGITS_METHOD = "supervised_token_logits"


def _oriented(values: np.ndarray, keep: str) -> np.ndarray:
    u = values if keep == "high" else -values
    return np.where(np.isfinite(u), u, np.nan)


@register_baseline(
    "grand",
    options=KeepOptions,
    proxy="required",
    summary="GraNd: per-sample gradient norm over the proxy's trainable parameters.",
    example="ost baseline grand --pool pool.jsonl --proxy warm/ --params lora --out "
    "scores.grand.parquet",
    utility="per-sample gradient norm",
    direction="high kept (Paul et al.)",
    cost=("forward_passes", "backward_passes"),
    order=30,
)
class GraNdBaseline(Baseline):
    def __init__(self, proxy: ScoringModel, keep: str = "high") -> None:
        super().__init__()
        self.proxy = proxy
        self.keep = check_keep(keep, self.mode)

    def _score(self, samples: list[Sample]) -> dict[str, list[Any]]:
        norms, losses = [], []
        for grad, loss in per_sample_gradients(self.proxy, samples, self.cost):
            norms.append(float(grad.double().norm()))
            losses.append(loss)
        norm = np.asarray(norms, dtype=np.float64)
        return {
            "id": [s.id for s in samples],
            "utility": _oriented(norm, self.keep).tolist(),
            "status": finite_status(norm),
            "grad_norm": norm.tolist(),
            "loss": losses,
        }

    def _settings(self) -> dict[str, Any]:
        return {**proxy_description(self.proxy), "keep": self.keep}


def el2n_from_logits(logits: Any, labels: Any) -> float:
    """Mean over tokens of ||softmax(logits_t) - onehot(labels_t)||_2."""
    import torch

    probs = torch.softmax(logits.double(), dim=-1)
    onehot = torch.nn.functional.one_hot(labels.long(), probs.shape[-1]).to(probs.dtype)
    if probs.shape[0] == 0:
        return float("nan")
    return float((probs - onehot).norm(dim=-1).mean())


def el2n_source(proxy: ScoringModel) -> str:
    if hasattr(proxy, LOGITS_METHOD):
        return "logits"
    if hasattr(proxy, "collate") and callable(getattr(proxy, "model", None)):
        return "hf-logits"
    return "loss-approximation"


def hf_supervised_logits(proxy: Any, prepared: Any) -> list[tuple[Any, Any]]:
    """Logits at the supervised positions of a Hugging Face proxy batch, one pair per sample.

    Runs `proxy.model(**prepared.batch.inputs)` in full: right whatever the proxy caches.
    """
    batch = getattr(prepared, "batch", None)
    if batch is None or not hasattr(batch, "inputs") or not hasattr(batch, "labels"):
        raise RuntimeError(
            "el2n: the prepared batch has no `batch.inputs`/`batch.labels`; give the proxy "
            f"a `{LOGITS_METHOD}` method"
        )
    logits = proxy.model(**batch.inputs, use_cache=False).logits[:, :-1]
    labels = batch.labels[:, 1:]
    pairs = []
    for row in range(logits.shape[0]):
        keep = labels[row] != -100
        pairs.append((logits[row][keep], labels[row][keep]))
    return pairs


@register_baseline(
    "el2n",
    options=ProxyBatchOptions,
    proxy="required",
    summary="EL2N: ||softmax(logits) - onehot||_2 averaged over the supervised tokens.",
    example="ost baseline el2n --pool pool.jsonl --proxy warm/ --out scores.el2n.parquet",
    utility="mean error L2 norm",
    direction="high kept (Paul et al.)",
    cost=("forward_passes",),
    order=40,
)
class EL2NBaseline(Baseline):
    def __init__(self, proxy: ScoringModel, keep: str = "high", batch_size: int = 8) -> None:
        super().__init__()
        self.proxy = proxy
        self.keep = check_keep(keep, self.mode)
        self.batch_size = batch_size
        self.source = el2n_source(proxy)

    def _score(self, samples: list[Sample]) -> dict[str, list[Any]]:
        if self.source in ("logits", "hf-logits"):
            scores = self._from_logits(samples)
        else:
            losses, _ = per_sample_losses(self.proxy, samples, self.cost, self.batch_size)
            scores = 1.0 - np.exp(-losses)
        return {
            "id": [s.id for s in samples],
            "utility": _oriented(scores, self.keep).tolist(),
            "status": finite_status(scores),
            "el2n": scores.tolist(),
        }

    def _from_logits(self, samples: list[Sample]) -> np.ndarray:
        import torch

        out: list[float] = []
        with torch.no_grad():
            for chunk in batches(samples, self.batch_size):
                prepared = self.proxy.prepare(chunk)
                if self.source == "logits":
                    pairs = getattr(self.proxy, LOGITS_METHOD)(prepared)
                else:
                    pairs = hf_supervised_logits(self.proxy, prepared)
                self.cost.forward_passes += len(chunk)
                out.extend(el2n_from_logits(lg, lb) for lg, lb in pairs)
        return np.asarray(out, dtype=np.float64)

    def _settings(self) -> dict[str, Any]:
        return {
            **proxy_description(self.proxy),
            "keep": self.keep,
            "el2n_source": self.source,
            "batch_size": self.batch_size,
        }
