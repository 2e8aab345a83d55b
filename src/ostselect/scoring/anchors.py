"""The anchor set V, prepared once: L_V(theta) = unweighted mean of per-sample anchor losses.

The frozen part of the anchors' computation (what `ScoringModel.prepare` runs) is done once here and
reused for every candidate step; per-group means give the `utility[<group>]` columns.

`losses_many` evaluates K candidates' stepped parameters in one batched pass per anchor chunk
(`torch.func.vmap` of `per_sample_loss` over parameters stacked on a leading candidate dimension;
for LoRA the per-candidate A/B pairs are stacked and folded into K weight copies): what the exact
mode's `--candidate-batch K` runs. A proxy whose `per_sample_loss` does not trace under `vmap` falls
back, with a one-line warning, to one candidate at a time: the same numbers, just not batched.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterable, Mapping, Sequence
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
        self._vmap_ok = True  # False once per_sample_loss failed under vmap (losses_many)

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

    def losses_many(
        self, params: Mapping[str, torch.Tensor] | Sequence[Mapping[str, torch.Tensor]]
    ) -> torch.Tensor:
        """[K, n_anchors] per-sample losses at K parameter sets, without grad.

        `params`: one mapping whose tensors carry a leading candidate dimension K (what an update
        rule's `apply` returns for stacked gradients), or a sequence of K plain mappings. Each
        anchor chunk runs once for all K (`vmap` over the stacked parameters: K x the chunk's
        activations in memory). Row k equals `losses(params[k])` up to round-off (on CPU in
        float64, bit for bit so far). Counts K forward passes per anchor. If `per_sample_loss`
        cannot run under `vmap` (an op without a batching rule that errors, data-dependent
        control flow on the parameters), the candidates are evaluated one at a time from then on,
        with a one-line warning; an out-of-memory error is raised as it is (the engine halves the
        batch).
        """
        stacked = _stack(params)
        k = _candidates(stacked)
        with torch.no_grad():
            parts = [self._chunk_many(chunk, stacked, k) for chunk in self.chunks]
        self.counter.forward += k * len(self.samples)
        return torch.cat(parts, dim=1)[:, self._unsort.to(parts[0].device)]

    def _chunk_many(self, chunk: Any, stacked: Mapping[str, torch.Tensor], k: int) -> torch.Tensor:
        if self._vmap_ok:
            try:
                with warnings.catch_warnings():
                    # CPU attention has no batching rule: vmap loops over K there (correct)
                    warnings.filterwarnings("ignore", message=".*batching rule.*")
                    return torch.func.vmap(lambda p: self.proxy.per_sample_loss(chunk, p))(
                        dict(stacked)
                    )
            except (MemoryError, torch.OutOfMemoryError):
                raise
            except Exception as err:
                self._vmap_ok = False
                warnings.warn(
                    f"candidate batching: the proxy's per_sample_loss does not run under "
                    f"torch.func.vmap ({type(err).__name__}: {' '.join(str(err).split())[:200]}); "
                    "evaluating the candidates one at a time (same numbers, K = 1's speed)",
                    RuntimeWarning,
                    stacklevel=3,
                )
        return torch.stack(
            [
                self.proxy.per_sample_loss(chunk, {n: t[i] for n, t in stacked.items()})
                for i in range(k)
            ]
        )

    def summarize(self, per_sample: torch.Tensor) -> tuple[float, dict[str, float]]:
        """(L_V, per-group means) of one [n_anchors] row of losses."""
        groups = {g: float(per_sample[idx].mean()) for g, idx in self.groups.items()}
        return float(per_sample.mean()), groups

    def values_many(
        self, params: Mapping[str, torch.Tensor] | Sequence[Mapping[str, torch.Tensor]]
    ) -> list[tuple[float, dict[str, float]]]:
        """`value` at each of K parameter sets, from one `losses_many` pass."""
        return [self.summarize(row) for row in self.losses_many(params)]

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
        return self.summarize(per_sample)

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


def _stack(
    params: Mapping[str, torch.Tensor] | Sequence[Mapping[str, torch.Tensor]],
) -> Mapping[str, torch.Tensor]:
    """K parameter sets as one mapping of [K, ...] tensors."""
    if isinstance(params, Mapping):
        return params
    if not params:
        raise ValueError("losses_many needs at least one parameter set")
    return {n: torch.stack([p[n] for p in params]) for n in params[0]}


def _candidates(stacked: Mapping[str, torch.Tensor]) -> int:
    sizes = {t.shape[0] if t.ndim else None for t in stacked.values()}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            "losses_many needs every parameter stacked on one leading candidate dimension, "
            f"got leading sizes {sorted(map(str, sizes))}"
        )
    return int(sizes.pop())


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
