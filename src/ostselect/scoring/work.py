"""The model work a scoring run did (samples forwarded / back-propagated), for provenance."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class WorkCounter:
    forward: int = 0  # samples run forward (anchors count once per evaluation)
    backward: int = 0  # samples back-propagated

    def as_dict(self) -> dict[str, int]:
        return {f"{k}_samples": v for k, v in asdict(self).items()}
