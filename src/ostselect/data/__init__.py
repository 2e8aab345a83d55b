"""Samples and the formats they come in (messages JSONL, LLaVA JSON/JSONL, Parquet, HF datasets).

Reading streams (`read_pool`, `iter_samples`); bad records become `Reject`s in a rejects file,
not errors; `write_subset` writes kept records back unchanged in the pool's own format.
pyarrow / datasets / Pillow are imported only when a Parquet, HF or image is actually touched.
"""

from ostselect.data.checks import Problem, check_sample, diagnose, image_error
from ostselect.data.fingerprint import pool_fingerprint
from ostselect.data.formats import FORMATS, container_of, count_records, detect_format, read_pool
from ostselect.data.jsontext import PoolError
from ostselect.data.pipeline import ValidationSummary, iter_samples, validate_pool
from ostselect.data.rejects import (
    DATA_REJECT_CODES,
    REJECT_CODES,
    REJECTS_FILENAME,
    Reject,
    RejectsWriter,
    read_rejects,
)
from ostselect.data.sample import IMAGE_PLACEHOLDER, ImageRef, Sample, SourceLoc, Turn
from ostselect.data.writers import write_samples, write_subset

__all__ = [
    "DATA_REJECT_CODES",
    "FORMATS",
    "IMAGE_PLACEHOLDER",
    "REJECTS_FILENAME",
    "REJECT_CODES",
    "ImageRef",
    "PoolError",
    "Problem",
    "Reject",
    "RejectsWriter",
    "Sample",
    "SourceLoc",
    "Turn",
    "ValidationSummary",
    "check_sample",
    "container_of",
    "count_records",
    "detect_format",
    "diagnose",
    "image_error",
    "iter_samples",
    "pool_fingerprint",
    "read_pool",
    "read_rejects",
    "validate_pool",
    "write_samples",
    "write_subset",
]
