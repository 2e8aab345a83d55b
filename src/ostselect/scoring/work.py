"""The model work a scoring run did (samples forwarded / back-propagated), for provenance."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class WorkCounter:
    forward: int = 0  # samples run forward (anchors count once per evaluation)
    backward: int = 0  # samples back-propagated

    def as_cost(self) -> dict[str, int]:
        """The counts under `scores.Cost`'s names, shared with every baseline."""
        return {"forward_passes": self.forward, "backward_passes": self.backward}
