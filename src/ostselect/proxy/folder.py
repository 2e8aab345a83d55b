"""The files ostselect adds to a Hugging Face proxy folder, written and read in one place."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

META_FILE = "ostselect.json"  # arch, trainable-parameter selection, free-form metadata
OPTIMIZER_FILE = "optimizer.pt"  # OptimizerState fields, tensors keyed by trainable parameter names
ADAPTER_DIR = "adapter"  # peft LoRA adapter, kept apart from the base weights
NOT_A_MODEL_FOLDER = (
    "not a model folder (no config.json with model_type); build one with `ost proxy init` or "
    "pass a Hugging Face model folder"
)


class NotAModelFolderError(ValueError):
    """A proxy path that exists but holds no Hugging Face model (instead of transformers'
    `Unrecognized model ...`, which names neither the cause nor the fix)."""


def check_model_folder(path: str | Path) -> None:
    """Raise `NotAModelFolderError` unless `path` has a config.json naming a `model_type`.

    Cheap (no torch, no transformers), so a driver can refuse a wrong --proxy before any work. A
    path that does not exist is left to the loader (it may be a hub name).
    """
    folder = Path(path)
    if not folder.exists():
        return
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, a file instead of a folder, not JSON
        config = None
    if not (isinstance(config, dict) and config.get("model_type")):
        raise NotAModelFolderError(f"{folder}: {NOT_A_MODEL_FOLDER}")


def read_meta(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / META_FILE
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def write_meta(folder: str | Path, meta: dict[str, Any]) -> Path:
    path = Path(folder) / META_FILE
    path.write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    return path


_IDENTITIES: dict[tuple[Any, ...], str] = {}


def proxy_identity(folder: str | Path) -> str:
    """A proxy's one identity: the content hash of its folder (every file's relative path and
    bytes). The engine's resume fingerprint, the scores' `proxy_fingerprint` and the benchmark's
    scores cache all use it, so "the same proxy" means the same thing everywhere.

    Hashing a billion-parameter folder takes seconds, and a local run asks twice (the driver's
    fingerprint, the worker's provenance): the hash is kept per process under the files' sizes
    and modification times, so an unchanged folder is read once."""
    from ostselect.data.fingerprint import pool_fingerprint

    root = Path(folder).resolve()
    files = sorted(q for q in root.rglob("*") if q.is_file()) if root.is_dir() else [root]
    stats = ((str(q), q.stat()) for q in files)
    key = (root, *((name, st.st_size, st.st_mtime_ns) for name, st in stats))
    if key not in _IDENTITIES:
        _IDENTITIES[key] = pool_fingerprint(root)
    return _IDENTITIES[key]
