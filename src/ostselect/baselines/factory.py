"""A picklable recipe that builds a baseline scorer inside a worker (the engine's `ScorerFactory`).

It carries paths and options only; the proxy and the anchor set are loaded where the scorer runs,
once per worker. Pool-level baselines (DEITA) should not be sharded: their filter would only see
one shard.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ostselect.baselines.base import Baseline


@dataclass(frozen=True)
class BaselineFactory:
    name: str
    proxy_dir: str | Path | None = None
    anchors_path: str | Path | None = None
    params: str | None = None
    dtype: str = "float32"
    device: str = "cpu"
    image_root: str | Path | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __call__(self) -> Baseline:
        from ostselect.baselines import make_baseline

        proxy = None
        if self.proxy_dir is not None:
            from ostselect.proxy import load_proxy

            proxy = load_proxy(
                self.proxy_dir, dtype=self.dtype, device=self.device, params=self.params
            )
        anchors = None
        if self.anchors_path is not None:
            from ostselect.data import iter_samples

            anchors = list(iter_samples(self.anchors_path, image_root=self.image_root))
        return make_baseline(self.name, proxy=proxy, anchors=anchors, **self.options)
