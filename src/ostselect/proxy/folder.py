"""The files ostselect adds to a Hugging Face proxy folder, written and read in one place."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

META_FILE = "ostselect.json"  # arch, trainable-parameter selection, free-form metadata
OPTIMIZER_FILE = "optimizer.pt"  # OptimizerState fields, tensors keyed by trainable parameter names
ADAPTER_DIR = "adapter"  # peft LoRA adapter, kept apart from the base weights


def read_meta(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / META_FILE
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def write_meta(folder: str | Path, meta: dict[str, Any]) -> Path:
    path = Path(folder) / META_FILE
    path.write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    return path
