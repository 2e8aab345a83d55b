"""Dtypes, master precision and peak memory: one place, for every device.

Low-precision proxies (bfloat16, float16) keep their weights and run their forward and backward
passes in that dtype, but anything that *accumulates* or *steps* works in float32 ("master"
precision): a one-step update lr * g is often below a bfloat16 weight's rounding step, and
AdamW's second moment (g * g ~ 1e-10) underflows to 0 in float16, which turns the step into
m / eps. The code paths are the same on CPU and CUDA; only `peak_memory` asks which one it is on.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

import torch

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
LOW_PRECISION: frozenset[torch.dtype] = frozenset({torch.bfloat16, torch.float16})


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """'bfloat16' -> torch.bfloat16; a torch.dtype passes through; anything else is refused."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    return DTYPES[dtype]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def master_dtype(dtype: torch.dtype) -> torch.dtype:
    """Where steps, optimizer moments and sums are kept: float32 for a low-precision model,
    the model's own dtype otherwise (float64 stays float64 end to end)."""
    return torch.float32 if dtype in LOW_PRECISION else dtype


def to_master(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` in its master dtype (no copy when it already is)."""
    return tensor.to(master_dtype(tensor.dtype))


@contextlib.contextmanager
def autocast_to(device: torch.device | str, dtype: torch.dtype | None) -> Iterator[None]:
    """`torch.autocast` to a low dtype on `device` (CPU or CUDA alike), a no-op otherwise.

    Only for training float32 master weights (the warm-up): autocast rounds each weight to the
    low dtype inside every matmul, so it cannot help a one-step utility, whose step is smaller
    than that rounding; scoring loads the proxy in the low dtype instead.
    """
    if dtype is None or dtype not in LOW_PRECISION:
        yield
        return
    device_type = torch.device(device).type
    with torch.autocast(device_type=device_type, dtype=dtype):
        yield


def peak_memory(device: torch.device | str) -> dict[str, Any]:
    """This process's peak memory so far: CUDA's peak allocated bytes on a GPU, the process's
    peak resident set on CPU (what actually bounds a CPU run, model + activations + Python)."""
    device = torch.device(device)
    if device.type == "cuda":
        return {
            "device": str(device),
            "peak_bytes": int(torch.cuda.max_memory_allocated(device)),
            "measure": "torch.cuda.max_memory_allocated",
        }
    import resource  # POSIX only: imported here so the module loads everywhere

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024  # macOS reports bytes, Linux KiB
    return {"device": str(device), "peak_bytes": int(rss * scale), "measure": "process peak RSS"}


__all__ = [
    "DTYPES",
    "LOW_PRECISION",
    "autocast_to",
    "dtype_name",
    "master_dtype",
    "peak_memory",
    "resolve_dtype",
    "to_master",
]
