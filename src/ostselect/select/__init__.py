"""Selection policies over a scores table: top-k, coverage-aware greedy, consensus, token budget,
toxic tail, balance, dedup."""

from ostselect.select.allocation import allocate
from ostselect.select.coverage import GroupCoverage, greedy_cover
from ostselect.select.policy import SelectionPolicy, parse_group_weights
from ostselect.select.provenance import ProvenanceMismatchError
from ostselect.select.selection import CoverageReport, Selection, StratumCounts, select

__all__ = [
    "CoverageReport",
    "GroupCoverage",
    "ProvenanceMismatchError",
    "Selection",
    "SelectionPolicy",
    "StratumCounts",
    "allocate",
    "greedy_cover",
    "parse_group_weights",
    "select",
]
