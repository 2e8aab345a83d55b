"""What to keep, as data: one `SelectionPolicy` that `ost select` and `select()` both take.

Scores are computed once and decided on many times, so every decision lives here and none of them
touches the scorer. All limits combine: a sample is kept only if every one of them allows it.
"""

from __future__ import annotations

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

    @model_validator(mode="after")
    def _balance_needs_field(self) -> SelectionPolicy:
        if self.balance == "equal" and self.balance_by is None:
            raise ValueError("balance='equal' needs balance_by (the field that defines the strata)")
        return self

    def top_count(self, n_scored: int) -> int | None:
        """The number of samples `top` asks for out of `n_scored` (None: no count limit)."""
        if self.top is None:
            return None
        if isinstance(self.top, int):
            return min(self.top, n_scored)
        pct = Decimal(self.top.rstrip("%"))
        return int((pct * n_scored / 100).to_integral_value(rounding=ROUND_HALF_UP))
