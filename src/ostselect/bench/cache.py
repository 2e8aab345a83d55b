"""Where the benchmark keeps its pretrained models between runs, and when it may reuse them.

Pretraining (digit reader, caption + arithmetic alignment) is the same for every row, seed and
selection method, and costs minutes; `ost demo` and `ost bench run` share it through a cache
folder keyed by a hash of everything a pretrained model depends on: the data configuration, the
model sizes, the stage settings and `MODELS_VERSION` (bumped whenever the pretraining code changes
what it produces). A changed setting gives another key, so a stale model is never reused.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

# 2: cell-aligned images, frozen 33-way reader, arithmetic facts;
# 3: read facts, digit-free fact prompts, FACT_REPEATS
MODELS_VERSION = 3
CACHE_ENV = "OSTSELECT_CACHE"
RECORD = "bench_pretrain.json"


def cache_root(explicit: str | Path | None = None) -> Path:
    """`explicit`, else $OSTSELECT_CACHE, else $XDG_CACHE_HOME (or ~/.cache) / ostselect."""
    if explicit:
        return Path(explicit)
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ostselect"


def key_hash(key: dict[str, Any]) -> str:
    """A short stable hash of a JSON-able key (sorted keys, so dict order does not matter)."""
    blob = json.dumps(key, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def model_folder(root: Path, role: str, key: dict[str, Any]) -> Path:
    return root / "bench-models" / f"{role}-{key_hash(key)}"


def cached_result(folder: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The recorded pretraining result if `folder` holds a model made under exactly `key`."""
    record = folder / RECORD
    if not record.is_file():
        return None
    try:
        saved = json.loads(record.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return saved.get("result") if saved.get("key") == key else None


def write_record(folder: Path, key: dict[str, Any], result: dict[str, Any]) -> None:
    (folder / RECORD).write_text(json.dumps({"key": key, "result": result}, indent=1))
