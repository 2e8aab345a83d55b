"""Selection policies over a scores table: top-k, token budget, toxic tail, balance, dedup."""

from ostselect.select.allocation import allocate
from ostselect.select.policy import SelectionPolicy
from ostselect.select.provenance import ProvenanceMismatchError
from ostselect.select.selection import Selection, StratumCounts, select

__all__ = [
    "ProvenanceMismatchError",
    "Selection",
    "SelectionPolicy",
    "StratumCounts",
    "allocate",
    "select",
]
