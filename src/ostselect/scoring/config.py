"""`ScoreConfig`: every knob of a scoring run, validated once and recorded in the provenance."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

Mode = Literal["naive", "exact", "first-order", "hybrid"]
MODES: tuple[str, ...] = ("naive", "exact", "first-order", "hybrid")


def parse_fraction(value: str | float) -> float:
    """'20%' -> 0.2, '0.2' -> 0.2, 0.2 -> 0.2; must lie in (0, 1]."""
    # One message for both failures: float()'s own ("could not convert string to float") does not
    # say what is expected.
    message = f"must be a fraction in (0, 1] such as 20% or 0.2, not {value!r}"
    try:
        if isinstance(value, str):
            text = value.strip()
            frac = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        else:
            frac = float(value)
    except (TypeError, ValueError):
        raise ValueError(message) from None
    if not 0 < frac <= 1:
        raise ValueError(message)
    return frac


class ScoreConfig(BaseModel):
    """How to score. `eta` (alias `lr`) defaults to the warm-up state's next lr for AdamW."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    mode: Mode = "exact"
    optimizer: Literal["auto", "sgd", "adamw"] = "auto"
    # The step size, `eta` everywhere (flag, provenance); `lr` is still accepted as input.
    eta: float | None = Field(
        default=None, validation_alias=AliasChoices("eta", "lr"), gt=0, allow_inf_nan=False
    )
    dtype: Literal["float32", "bfloat16", "float16", "float64"] | None = None
    device: str = "auto"
    batch_size: int = Field(default=8, ge=1)
    anchor_batch_size: int = Field(default=32, ge=1)
    # exact (and hybrid's exact rounds): K candidates' stepped parameters evaluated against the
    # anchors in one batched pass. Worth it on an accelerator; slower on CPU, hence 1. Rows agree
    # with 1 to round-off, not bit for bit, so it is part of the resume fingerprint like batch_size.
    candidate_batch: int = Field(default=1, ge=1)
    cutoff: float = 0.2
    seed: int = 0
    group_field: str | None = None
    calibration_size: int = Field(default=64, ge=2)
    band_safety: float = Field(default=2.0, ge=1.0)

    @property
    def lr(self) -> float | None:
        """The step size under its old name (code written before `eta` was the one name)."""
        return self.eta

    @field_validator("cutoff", mode="before")
    @classmethod
    def _cutoff(cls, value: str | float) -> float:
        return parse_fraction(value)

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, value: str) -> str:
        return value.replace("_", "-") if isinstance(value, str) else value

    @field_validator("candidate_batch")
    @classmethod
    def _candidate_batch(cls, value: int, info: ValidationInfo) -> int:
        mode = info.data.get("mode")
        if value > 1 and mode not in ("exact", "hybrid", None):
            raise ValueError(
                f"batches exact evaluations, so it applies to mode exact and hybrid (its exact "
                f"rounds), not {mode}; leave it at 1"
            )
        return value
