"""What to keep, as data: one `SelectionPolicy` that `ost select` and `select()` both take.

Scores are computed once and decided on many times, so every decision lives here and none of them
touches the scorer. All limits combine: a sample is kept only if every one of them allows it.
"""

from __future__ import annotations

import math
import re
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


class SelectionPolicy(BaseModel):
    """How to turn a scores table into a subset.

    - `top`: "20%" (of the scored pool samples, rounded half up) or an absolute count.
    - `budget_tokens`: keep samples by descending utility until their supervised tokens would exceed
      the budget (the fixed-compute setting). `budget_fill=False` stops at the first sample that
      does not fit, so the subset is a strict utility prefix; `True` skips it and keeps filling.
    - `drop_toxic`: drop utility < 0 (the step on the sample raised the anchor loss).
    - `min_utility`: drop utility below this value.
    - `balance_by`: a `Sample.extra` field; quotas per stratum, `proportional` to the pool's strata
      or `equal`; quota a stratum cannot fill goes to the others.
    - `dedup`: "hash" (same normalised text and same images, perceptual average-hash) or
      "embedding" (hash, plus MiniLM text cosine >= `dedup_threshold` with matching images);
      the higher-utility copy is kept.
    - `policy`: the order candidates are offered to the limits above. "topk" (default):
      descending utility. "coverage": lazy greedy on F(S) = sum_g w_g log1p(mass_g(S) / tau_g)
      over the per-anchor-group utilities (`ostselect.select.coverage`), so every anchor group
      keeps samples that help it; per token under `budget_tokens`. "consensus": the samples in
      the top k of the most anchor groups first (ICONS-style votes), ties by total utility.
    - `normalize`: applied to the utilities before any policy (filters always see the raw
      utility). "group-z": each anchor group standardised over the scored pool (the total is
      then the w-weighted sum of z-scores); "stratum-rank": centred percentile ranks within each
      `balance_by` stratum, so strata with larger utilities do not crowd out the others.
    - `group_weights`: w_g per anchor group (relative; must name every group). Default: the
      group's share of the anchor set, from the scores provenance.
    - `coverage_tau`: one tau for every group, in (normalised) utility units. Default: per group,
      the mass a random subset of the same size would hold (see `coverage.default_tau`).
    """

    model_config = ConfigDict(extra="forbid")

    top: str | int | None = None
    budget_tokens: int | None = Field(default=None, ge=0)
    budget_fill: bool = False
    drop_toxic: bool = False
    min_utility: float | None = None
    balance_by: str | None = None
    balance: Literal["proportional", "equal"] = "proportional"
    dedup: Literal["none", "hash", "embedding"] = "none"
    dedup_threshold: float = Field(default=0.95, gt=0.0, le=1.0)
    policy: Literal["topk", "coverage", "consensus"] = "topk"
    normalize: Literal["none", "group-z", "stratum-rank"] = "none"
    group_weights: dict[str, float] | None = None
    coverage_tau: float | None = Field(default=None, gt=0.0)

    @field_validator("top")
    @classmethod
    def _check_top(cls, v: str | int | None) -> str | int | None:
        if v is None:
            return None
        if isinstance(v, int):
            if v < 0:
                raise ValueError(f"top must be >= 0, got {v}")
            return v
        text = str(v).strip()
        if text.isdigit():
            return int(text)
        m = _PERCENT.match(text)
        if not m or Decimal(m.group(1)) > 100:
            raise ValueError(f"top must be a count like 5000 or a percentage like '20%', got {v!r}")
        return f"{m.group(1)}%"

    @field_validator("group_weights", mode="before")
    @classmethod
    def _parse_group_weights(cls, v: object) -> object:
        return parse_group_weights(v) if isinstance(v, str) else v

    @model_validator(mode="after")
    def _balance_needs_field(self) -> SelectionPolicy:
        if self.balance == "equal" and self.balance_by is None:
            raise ValueError("balance='equal' needs balance_by (the field that defines the strata)")
        if self.normalize == "stratum-rank" and self.balance_by is None:
            raise ValueError("normalize='stratum-rank' needs balance_by (the field to rank within)")
        if self.group_weights is not None:
            w = list(self.group_weights.values())
            if not w or any(not math.isfinite(x) or x < 0 for x in w) or sum(w) <= 0:
                raise ValueError(
                    f"group_weights must be finite, >= 0 and not all 0, got {self.group_weights}"
                )
        return self

    @property
    def has_limit(self) -> bool:
        """Whether anything bounds the subset; without a limit every scored sample is kept
        (dedup aside), which is rarely what a selection run is for."""
        return (
            self.top is not None
            or self.budget_tokens is not None
            or self.drop_toxic
            or self.min_utility is not None
        )

    @property
    def needs_groups(self) -> bool:
        """Whether this policy reads the per-anchor-group `utility[<group>]` columns."""
        return self.policy != "topk" or self.normalize == "group-z"

    def top_count(self, n_scored: int) -> int | None:
        """The number of samples `top` asks for out of `n_scored` (None: no count limit)."""
        if self.top is None:
            return None
        if isinstance(self.top, int):
            return min(self.top, n_scored)
        pct = Decimal(self.top.rstrip("%"))
        return int((pct * n_scored / 100).to_integral_value(rounding=ROUND_HALF_UP))


def parse_group_weights(text: str) -> dict[str, float]:
    """ "read=2,add=1" -> {"read": 2.0, "add": 1.0} (the `--group-weights` syntax)."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.rpartition("=")
        name = name.strip()
        try:
            weight = float(value)
        except ValueError:
            weight = math.nan
        if not sep or not name or math.isnan(weight):
            raise ValueError(f"group weights look like 'read=2,add=1', got {text!r}")
        if name in out:
            raise ValueError(f"group {name!r} appears twice in group weights {text!r}")
        out[name] = weight
    if not out:
        raise ValueError(f"group weights look like 'read=2,add=1', got {text!r}")
    return out
