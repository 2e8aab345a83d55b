"""What every baseline shares: cost accounting and the `SampleScorer` shape.

Cost is counted in *sample passes*: one sample through a forward (or backward) pass counts once,
whether it ran alone or in a batch, so the numbers compare across batch sizes and against OST's own
counts.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ostselect.data.sample import Sample
    from ostselect.proxy.api import ScoringModel


@dataclass
class CostMeter:
    """Running totals that end up in the scores file's provenance under `cost`."""

    wall_s: float = 0.0
    forward_passes: int = 0
    backward_passes: int = 0
    judge_requests: int = 0
    judge_tokens_in: int = 0
    judge_tokens_out: int = 0

    @contextmanager
    def timed(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.wall_s += time.perf_counter() - start

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["wall_s"] = round(self.wall_s, 4)
        return out


class Baseline:
    """Base for baseline scorers: subclasses implement `_score` and `_settings`.

    `mode` (the registered name) and `pool_level` (whether a pool pass follows) are set by
    `register_baseline`, so a method states them once, in its registration.
    """

    mode: str = "baseline"
    pool_level: bool = False

    def __init__(self) -> None:
        self.cost = CostMeter()

    def score_samples(self, samples: Sequence[Sample]) -> dict[str, list[Any]]:
        with self.cost.timed():
            columns = self._score(list(samples))
        n = len(samples)
        bad = [k for k, v in columns.items() if len(v) != n]
        if bad:
            raise RuntimeError(f"{self.mode}: columns {bad} do not have one value per sample")
        return columns

    def counters(self) -> dict[str, float]:
        """Cumulative cost so far; the engine sums each shard's difference into `cost`."""
        return {k: v for k, v in asdict(self.cost).items() if isinstance(v, int | float)}

    def provenance(self) -> dict[str, Any]:
        """The `scores.Provenance` record: shared keys (proxy, seed, anchors, ...) on top, the
        method's own settings under `settings`."""
        from ostselect.scores import split_settings

        return split_settings(
            {
                "scorer": self.mode,
                "mode": self.mode,
                "pool_level": self.pool_level,
                **self._settings(),
                "cost": self.cost.as_dict(),
            }
        )

    def _score(self, samples: list[Sample]) -> dict[str, list[Any]]:  # pragma: no cover
        raise NotImplementedError

    def _settings(self) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError


def proxy_description(proxy: ScoringModel) -> dict[str, Any]:
    """Proxy name and weight hash under OST's provenance names (the hash is None if the proxy
    cannot give one)."""
    info: dict[str, Any] = {"proxy": str(getattr(proxy, "name", type(proxy).__name__))}
    try:
        info["proxy_fingerprint"] = proxy.fingerprint()
    except (AttributeError, NotImplementedError):
        info["proxy_fingerprint"] = None
    return info


def require_proxy(proxy: ScoringModel | None, mode: str) -> ScoringModel:
    if proxy is None:
        raise ValueError(f"baseline '{mode}' needs a proxy model (--proxy DIR)")
    return proxy


def check_keep(keep: str, mode: str) -> str:
    if keep not in ("low", "high"):
        raise ValueError(f"{mode}: keep must be 'low' or 'high', not {keep!r}")
    return keep
