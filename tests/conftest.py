"""Shared fixtures: tiny PNGs made with Pillow, and pools written in each supported format.

Everything is generated inside the test's tmp_path: no fixture files are checked in.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

POOL_KINDS = ("jsonl", "json", "parquet", "hf")


def png_bytes(size: tuple[int, int] = (8, 8), color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A small, valid RGB PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def truncated_png_bytes(size: tuple[int, int] = (32, 32)) -> bytes:
    """A PNG cut off in its image data: the header reads, the pixels do not decode."""
    import random

    from PIL import Image

    rng = random.Random(0)  # noisy pixels so the compressed data is long enough to cut
    im = Image.new("RGB", size)
    im.putdata([tuple(rng.randrange(256) for _ in range(3)) for _ in range(size[0] * size[1])])
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    data = buf.getvalue()
    return data[: len(data) // 2]


@pytest.fixture
def make_png(tmp_path: Path) -> Callable[..., Path]:
    """`make_png("a.png", size=(8, 8), color=(r, g, b), truncated=False)` -> path under tmp_path."""

    def make(
        name: str = "img.png",
        size: tuple[int, int] = (8, 8),
        color: tuple[int, int, int] = (200, 30, 30),
        truncated: bool = False,
    ) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(truncated_png_bytes(size) if truncated else png_bytes(size, color))
        return path

    return make


def write_pool_file(
    records: list[dict[str, Any]], path: Path, kind: str, *, image_feature: bool = False
) -> Path:
    """Write `records` as JSONL, a JSON array (indent 2), Parquet, or a `datasets` folder.

    With `image_feature`, the HF folder stores the `images` column as `List(Image())`, the way
    `datasets` users save images (bytes inside the Arrow file).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    elif kind == "json":
        path.write_text(json.dumps(records, indent=2) + "\n", encoding="utf-8")
    elif kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(records), path)
    elif kind == "hf":
        import datasets

        ds = datasets.Dataset.from_list(records)
        if image_feature:
            ds = ds.cast_column("images", datasets.List(datasets.Image()))
        datasets.disable_progress_bars()
        ds.save_to_disk(str(path))
    else:
        raise ValueError(kind)
    return path


@pytest.fixture
def write_pool(tmp_path: Path) -> Callable[..., Path]:
    """`write_pool(records, kind, name=None, image_feature=False)` -> the pool's path."""
    suffix = {"jsonl": ".jsonl", "json": ".json", "parquet": ".parquet", "hf": ""}

    def write(
        records: list[dict[str, Any]],
        kind: str = "jsonl",
        name: str | None = None,
        image_feature: bool = False,
    ) -> Path:
        path = tmp_path / (name or f"pool_{kind}{suffix[kind]}")
        return write_pool_file(records, path, kind, image_feature=image_feature)

    return write


@pytest.fixture
def good_records(make_png: Callable[..., Path]) -> list[dict[str, Any]]:
    """Four valid messages-format records: string content, typed parts, text only, and no `id`."""
    make_png("images/a.png", color=(255, 0, 0))
    make_png("images/b.png", color=(0, 255, 0))
    return [
        {
            "id": "s1",
            "messages": [
                {"role": "user", "content": "<image>What colour is this?"},
                {"role": "assistant", "content": "Red."},
            ],
            "images": ["images/a.png"],
            "source": "synthetic",
        },
        {
            "id": "s2",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {
                    "role": "user",
                    "content": [{"type": "image"}, {"type": "text", "text": "And this one?"}],
                },
                {"role": "assistant", "content": [{"type": "text", "text": "Green."}]},
            ],
            "images": ["images/b.png"],
            "source": "synthetic",
        },
        {
            "id": "s3",
            "messages": [
                {"role": "user", "content": "What is 2 + 3?"},
                {"role": "assistant", "content": "5"},
            ],
            "images": [],
            "source": "text",
        },
        {
            "messages": [
                {"role": "user", "content": "Name a prime."},
                {"role": "assistant", "content": "7"},
            ],
            "images": [],
            "source": "text",
        },
    ]


@pytest.fixture(autouse=True, scope="session")
def _private_model_cache(tmp_path_factory: pytest.TempPathFactory):
    """Benchmark pretraining caches models under $OSTSELECT_CACHE: tests use their own folder,
    never the user's ~/.cache (and never a model cached by an earlier, different run)."""
    import os

    old = os.environ.get("OSTSELECT_CACHE")
    os.environ["OSTSELECT_CACHE"] = str(tmp_path_factory.mktemp("ostselect-cache"))
    yield
    if old is None:
        os.environ.pop("OSTSELECT_CACHE", None)
    else:
        os.environ["OSTSELECT_CACHE"] = old
