"""ostselect.proxy: proxy VLMs behind the `ScoringModel` seam.

`load_proxy` loads any `AutoModelForImageTextToText` folder; `build_tiny_proxy` writes a random one
offline. Heavy imports (torch, transformers) happen on first use of these names.
"""

from __future__ import annotations

from typing import Any

__all__ = ["OptimizerState", "Proxy", "ScoringModel", "build_tiny_proxy", "load_proxy"]

_LAZY = {
    "Proxy": "ostselect.proxy.model",
    "load_proxy": "ostselect.proxy.persist",
    "build_tiny_proxy": "ostselect.proxy.build",
    "OptimizerState": "ostselect.proxy.api",
    "ScoringModel": "ostselect.proxy.api",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ostselect.proxy' has no attribute {name!r}")
