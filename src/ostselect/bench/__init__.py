"""The embedded DigitMath benchmark: real handwritten digits, realistic synthetic noise, metrics.

Phase 1 (here): data (`make_digitmath`), hidden noise labels (`noise_labels`, `pool_truth`), and
metrics. The full protocol (warm-up -> scoring -> selection -> target training -> evaluation) builds
on these. Nothing here imports torch.
"""

from ostselect.bench.data import (
    DigitMathPaths,
    load_records,
    make_digitmath,
    noise_labels,
    pool_truth,
    read_manifest,
)
from ostselect.bench.metrics import (
    Accuracy,
    aggregate_seeds,
    exact_match,
    mean_std,
    noise_auroc,
    noise_auroc_by_type,
    precision_at_k,
)
from ostselect.bench.noise import CLEAN, DEFAULT_NOISE_MIX, DEFAULT_NOISE_RATE, NOISE_TYPES
from ostselect.bench.tasks import CATEGORIES, extract_answer

__all__ = [
    "CATEGORIES",
    "CLEAN",
    "DEFAULT_NOISE_MIX",
    "DEFAULT_NOISE_RATE",
    "NOISE_TYPES",
    "Accuracy",
    "DigitMathPaths",
    "aggregate_seeds",
    "exact_match",
    "extract_answer",
    "load_records",
    "make_digitmath",
    "mean_std",
    "noise_auroc",
    "noise_auroc_by_type",
    "noise_labels",
    "pool_truth",
    "precision_at_k",
    "read_manifest",
]
