"""Samples and the formats they come in (messages JSONL, LLaVA JSON/JSONL, Parquet, HF datasets)."""

from ostselect.data.sample import IMAGE_PLACEHOLDER, ImageRef, Sample, SourceLoc, Turn

__all__ = ["IMAGE_PLACEHOLDER", "ImageRef", "Sample", "SourceLoc", "Turn"]
