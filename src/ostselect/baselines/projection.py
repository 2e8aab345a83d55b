"""Seeded random projections for gradient features (LESS / TRAK style), memory-bounded.

The D x k matrix is never needed whole: it is generated block by block from (seed, block index), so
the same seed gives the same projection in every process, and a matrix too large to keep is rebuilt
per call instead of being stored.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

BLOCK_ELEMENTS = 1 << 22  # rows per generated block = this // dim (16 MB of float32)
CACHE_LIMIT_ELEMENTS = 1 << 27  # keep the matrix when it fits in 512 MB of float32


class RademacherProjector:
    """x -> x @ R / sqrt(k) with R in {-1, +1}^(D x k), entries fixed by the seed."""

    kind = "rademacher"

    def __init__(self, input_dim: int, dim: int, seed: int = 0) -> None:
        if dim <= 0:
            raise ValueError(f"projection dim must be positive, not {dim}")
        self.input_dim = int(input_dim)
        self.dim = int(dim)
        self.seed = int(seed)
        self.block_rows = max(1, BLOCK_ELEMENTS // self.dim)
        self._cache: list[torch.Tensor] | None = None

    def _block(self, index: int, rows: int) -> torch.Tensor:
        import torch

        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        bits = torch.randint(0, 2, (rows, self.dim), generator=gen, dtype=torch.float32)
        return bits.mul_(2).sub_(1)

    def _blocks(self) -> list[torch.Tensor] | None:
        if self._cache is None and self.input_dim * self.dim <= CACHE_LIMIT_ELEMENTS:
            self._cache = [
                self._block(i, min(self.block_rows, self.input_dim - start))
                for i, start in enumerate(range(0, self.input_dim, self.block_rows))
            ]
        return self._cache

    def project(self, vectors: torch.Tensor) -> torch.Tensor:
        """[B, D] -> [B, k] (float64 accumulation of float32 blocks)."""
        import torch

        if vectors.shape[-1] != self.input_dim:
            raise ValueError(
                f"expected vectors of length {self.input_dim}, got {vectors.shape[-1]}"
            )
        cached = self._blocks()
        # Blocks come from a CPU generator (the same numbers on every device), then move.
        out = torch.zeros(vectors.shape[0], self.dim, dtype=torch.float64, device=vectors.device)
        for i, start in enumerate(range(0, self.input_dim, self.block_rows)):
            rows = min(self.block_rows, self.input_dim - start)
            block = cached[i] if cached is not None else self._block(i, rows)
            part = vectors[:, start : start + rows].to(torch.float32) @ block.to(vectors.device)
            out += part.double()
        return out / math.sqrt(self.dim)
