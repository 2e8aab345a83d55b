"""The anchor set V, prepared once: L_V(theta) = unweighted mean of per-sample anchor losses.

The frozen part of the anchors' computation (what `ScoringModel.prepare` runs) is done once here and
reused for every candidate step; per-group means give the `utility[<group>]` columns.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from ostselect.data.sample import Sample
from ostselect.precision import master_dtype
from ostselect.proxy.api import ScoringModel
from ostselect.scoring.work import WorkCounter


def anchor_hash(samples: Iterable[Sample]) -> str:
    """Order-independent hash of the anchors' ids and contents (provenance)."""
    h = hashlib.sha256()
    for key in sorted(f"{s.id}\0{s.content_hash()}" for s in samples):
        h.update(key.encode())
        h.update(b"\n")
    return h.hexdigest()


def _length_hint(sample: Sample) -> int:
    """Rough token length (characters, images counted as a block) for grouping anchors."""
    return sum(len(t.content) for t in sample.turns) + 64 * len(sample.images)


class PreparedAnchors:
    """Anchors prepared on a proxy in chunks of `batch_size`; optional groups from
    `extra[group_field]`. (The drawn anchor *samples* are `ostselect.proxy.anchors.AnchorSet`.)"""

    def __init__(
        self,
        proxy: ScoringModel,
        samples: Iterable[Sample],
        *,
        batch_size: int = 32,
        group_field: str | None = None,
        counter: WorkCounter | None = None,
    ) -> None:
        self.samples = list(samples)
        if not self.samples:
            raise ValueError("the anchor set is empty: give at least one anchor sample")
        self.proxy = proxy
        self.counter = counter or WorkCounter()
        self.hash = anchor_hash(self.samples)
        self.groups: dict[str, list[int]] = {}
        if group_field:
            for i, s in enumerate(self.samples):
                if group_field in s.extra and s.extra[group_field] is not None:
                    self.groups.setdefault(str(s.extra[group_field]), []).append(i)
        # Chunks hold anchors of similar length (less padding: every candidate step pays for it).
        self.order = sorted(range(len(self.samples)), key=lambda i: _length_hint(self.samples[i]))
        ordered = [self.samples[i] for i in self.order]
        self.sample_chunks = [
            ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)
        ]
        self.chunks: list[Any] = [self._prepare(chunk) for chunk in self.sample_chunks]
        self._unsort = torch.empty(len(self.order), dtype=torch.long)
        self._unsort[torch.tensor(self.order)] = torch.arange(len(self.order))

    def __len__(self) -> int:
        return len(self.samples)

    def _prepare(self, chunk: list[Sample]) -> Any:
        try:
            return self.proxy.prepare(chunk)
        except Exception:
            for s in chunk:  # find and name the bad anchor: anchors define the objective
                try:
                    self.proxy.prepare([s])
                except Exception as err:
                    where = f" ({s.source})" if s.source else ""
                    raise ValueError(
                        f"anchor {s.id!r}{where} cannot be prepared: {err}; fix or drop it"
                    ) from err
            raise

    def _in_input_order(self, chunked: torch.Tensor) -> torch.Tensor:
        return chunked[self._unsort.to(chunked.device)]

    def losses(self, params: Mapping[str, torch.Tensor] | None) -> torch.Tensor:
        """[n_anchors] per-sample losses at `params` (None: the live parameters), without grad."""
        with torch.no_grad():
            out = torch.cat([self.proxy.per_sample_loss(c, params) for c in self.chunks])
        self.counter.forward += len(self.samples)
        return self._in_input_order(out)

    def reference_losses(self) -> torch.Tensor:
        """[n_anchors] losses at the live parameters through the proxy's plain full forward
        (`per_sample_loss_reference(samples)`, nothing cached) when it has one."""
        reference = getattr(self.proxy, "per_sample_loss_reference", None)
        if reference is None:
            return self.losses(None)
        with torch.no_grad():
            out = torch.cat([reference(chunk) for chunk in self.sample_chunks])
        self.counter.forward += len(self.samples)
        return self._in_input_order(out)

    def value(
        self, params: Mapping[str, torch.Tensor] | None, *, reference: bool = False
    ) -> tuple[float, dict[str, float]]:
        """L_V and the per-group means (`reference`: uncached forward at the live parameters)."""
        per_sample = self.reference_losses() if reference else self.losses(params)
        groups = {g: float(per_sample[idx].mean()) for g, idx in self.groups.items()}
        return float(per_sample.mean()), groups

    def gradients(
        self, params: Mapping[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]]]:
        """grad L_V and grad of each group's mean loss at `params` (a backward per chunk+group).

        Summed over chunks in master precision (float32 for a bf16/fp16 proxy), on the
        parameters' device."""
        leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        names = list(leaves)

        def zeros() -> dict[str, torch.Tensor]:
            return {k: torch.zeros_like(v, dtype=master_dtype(v.dtype)) for k, v in leaves.items()}

        total = zeros()
        per_group = {g: zeros() for g in self.groups}
        start = 0
        for chunk in self.chunks:
            with torch.enable_grad():
                losses = self.proxy.per_sample_loss(chunk, leaves)
            n = losses.shape[0]
            like = {"dtype": losses.dtype, "device": losses.device}
            weights = [(total, torch.full((n,), 1.0 / len(self.samples), **like))]
            chunk_of = {orig: j for j, orig in enumerate(self.order[start : start + n])}
            for g, idx in self.groups.items():
                w = torch.zeros(n, **like)
                members = [chunk_of[i] for i in idx if i in chunk_of]
                if members:
                    w[members] = 1.0 / len(idx)
                    weights.append((per_group[g], w))
            for j, (acc, w) in enumerate(weights):
                grads = torch.autograd.grad(
                    (losses * w).sum(),
                    [leaves[k] for k in names],
                    retain_graph=j < len(weights) - 1,
                    allow_unused=True,
                )
                for k, gr in zip(names, grads, strict=True):
                    if gr is not None:
                        acc[k] += gr
            start += n
            self.counter.forward += n
            self.counter.backward += n
        return total, per_group


def __getattr__(name: str) -> Any:
    """`AnchorSet`, this class's old name, still imports (with a warning): it clashed with the
    drawn anchor set of `ostselect.proxy.anchors`."""
    if name == "AnchorSet":
        import warnings

        warnings.warn(
            "ostselect.scoring.anchors.AnchorSet is now PreparedAnchors",
            DeprecationWarning,
            stacklevel=2,
        )
        return PreparedAnchors
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
