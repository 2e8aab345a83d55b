"""Per-sample gradients of a prepared batch in one pass (each equal to the sample's own gradient).

LoRA-only selections take one batched backward and rebuild each sample's LoRA gradient from the
captured activations (as fast as a plain backward); anything else runs `vmap(grad)` over the
rows of `per_sample_rows`, each sample its own batch of one. tests/test_proxy_batched.py checks
both against one-sample-at-a-time autograd.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ostselect.proxy.collate import Batch
from ostselect.proxy.lora import pair_keys
from ostselect.proxy.losses import attention_kernel, per_sample_loss
from ostselect.proxy.prefix import Prepared

if TYPE_CHECKING:
    from ostselect.proxy.model import Proxy


@dataclass
class RowSpec:
    """How to rebuild a one-sample `Prepared` from a row of `Proxy.per_sample_rows`."""

    kw_template: dict[str, Any]
    kw_slots: list[tuple[str, int | None]]  # (layer kwarg, tuple index) of each extra tensor
    kw_dims: list[int | None]  # where that tensor's batch dimension goes back (None: shared)
    start_layer: int
    embed_trainable: bool
    batch: Batch
    has_residuals: bool = False  # the row after `weights` holds this sample's [n, L, H] residuals


def per_sample_gradients(
    proxy: Proxy, prepared: Prepared, params: Mapping[str, torch.Tensor]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """([B] losses, {name: [B, ...]}) for a prepared batch in one pass.

    LoRA-only selections take one batched backward and rebuild each sample's LoRA gradient
    from the captured activations (as fast as a plain backward); anything else runs
    `vmap(grad)` over the samples, each its own batch of one (its padded row, its supervised
    positions padded to the batch's longest with weight 0). Either way a gradient is that of
    the sample's own loss; padding is masked exactly as in the one-sample case.
    """
    if prepared.hidden is not None and proxy.lora_adapters.only(params):
        return lora_per_sample_gradients(proxy, prepared, params)
    rows, spec = per_sample_rows(prepared)

    def one(p, *row):
        loss = row_loss(proxy, p, row, spec)
        return loss, loss.detach()

    grad_fn = torch.func.grad(one, argnums=0, has_aux=True)
    with torch.enable_grad():
        grads, losses = torch.func.vmap(grad_fn, in_dims=(None, *[0] * len(rows)))(
            dict(params), *rows
        )
    return losses, grads


def lora_per_sample_gradients(
    proxy: Proxy, prepared: Prepared, params: Mapping[str, torch.Tensor]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-sample LoRA gradients from one batched forward and backward.

    y = W x + s * B (A x): with h = A x and g = dL_i/d(B h) (one backward of sum_i L_i;
    sample i's loss reaches only row i), dB_i = sum_t g_t h_t^T and
    dA_i = sum_t (B^T g_t) x_t^T. Padded positions get g = 0 (masked keys), so they add 0.
    """
    layers = proxy.lora_adapters.layers()
    captured: dict[str, dict[str, torch.Tensor]] = {}
    handles = []
    for name, mod, adapter in layers:

        def at_a(_m, args, _out, name=name):
            captured.setdefault(name, {})["x"] = args[0]

        def at_b(_m, args, out, name=name):
            captured[name]["h"] = args[0]
            captured[name]["y"] = out

        handles.append(mod.lora_A[adapter].register_forward_hook(at_a))
        handles.append(mod.lora_B[adapter].register_forward_hook(at_b))
    leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    try:
        # fused attention computes in the model's dtype (HF's eager softmax is float32): a row
        # then depends on its batch's padding only at the dtype's round-off
        with torch.enable_grad(), attention_kernel(proxy.hf_model, "sdpa"):
            losses = per_sample_loss(proxy, prepared, leaves)
            order = list(captured)
            outs = torch.autograd.grad(
                losses.sum(), [captured[n]["y"] for n in order], allow_unused=True
            )
    finally:
        for h in handles:
            h.remove()
    grads: dict[str, torch.Tensor] = {}
    by_name = dict(zip(order, outs, strict=True))
    for name, _mod, adapter in layers:
        a_key, b_key = pair_keys(name, adapter)
        g = by_name.get(name)
        if g is None:  # the module did not take part in this loss
            for key in (a_key, b_key):
                grads[key] = params[key].new_zeros(len(prepared), *params[key].shape)
            continue
        x, h = captured[name]["x"].detach(), captured[name]["h"].detach()
        grads[b_key] = torch.einsum("bto,btr->bor", g, h)
        grads[a_key] = torch.einsum("btr,bti->bri", g @ params[b_key], x)
    return losses.detach(), {k: grads[k] for k in params}


def per_sample_rows(prepared: Prepared) -> tuple[tuple[torch.Tensor, ...], RowSpec]:
    """The prepared batch as flat tensors with the sample on dim 0 (what `vmap` or a
    `TensorDataset` slices); `row_loss(proxy, params, row, spec)` is one sample's loss."""
    if prepared.hidden is None:
        raise NotImplementedError("trainable weights outside the language model")
    b = len(prepared)
    n_max = int(prepared.counts.max())
    sup_pos = torch.zeros(b, n_max, dtype=torch.long, device=prepared.sup_pos.device)
    targets = torch.zeros_like(sup_pos)
    weights = torch.zeros(b, n_max, dtype=prepared.weights.dtype, device=sup_pos.device)
    slot = torch.zeros_like(prepared.sup_batch)
    for i in range(b):  # the k-th supervised position of sample i goes to column k
        where = (prepared.sup_batch == i).nonzero(as_tuple=True)[0]
        slot[where] = torch.arange(where.numel(), device=where.device)
    sup_pos[prepared.sup_batch, slot] = prepared.sup_pos
    targets[prepared.sup_batch, slot] = prepared.targets
    weights[prepared.sup_batch, slot] = 1.0 / prepared.counts[prepared.sup_batch].to(weights.dtype)
    names, dims, extra = [], [], []
    for k, v in prepared.layer_kwargs.items():
        for j, t in enumerate(v) if isinstance(v, tuple | list) else [(None, v)]:
            if not isinstance(t, torch.Tensor):
                continue
            dim = _batch_dim(t, b)
            names.append((k, j))
            dims.append(dim)
            extra.append(t.movedim(dim, 0) if dim is not None else t.expand(b, *t.shape))
    spec = RowSpec(
        kw_template=prepared.layer_kwargs,
        kw_slots=names,
        kw_dims=dims,
        start_layer=prepared.start_layer,
        embed_trainable=prepared.embed_trainable,
        batch=prepared.batch,
        has_residuals=prepared.residuals is not None,
    )
    residual_rows = () if prepared.residuals is None else (prepared.residuals.movedim(1, 0),)
    rows = (
        prepared.hidden,
        prepared.attention_mask,
        prepared.input_ids,
        prepared.image_mask,
        sup_pos,
        targets,
        weights,
        *residual_rows,
        *extra,
    )
    return rows, spec


def row_loss(
    proxy: Proxy, params: Mapping[str, torch.Tensor], row: Sequence[torch.Tensor], spec: RowSpec
) -> torch.Tensor:
    """One sample's loss from a row of `per_sample_rows` (sample dimension removed)."""
    hidden, mask, ids, image_mask, pos, tgt, w, *extra = row
    residuals = None
    if spec.has_residuals:
        residuals, *extra = extra
        residuals = residuals[:, None]
    kwargs = {k: list(v) if isinstance(v, tuple | list) else v for k, v in spec.kw_template.items()}
    for (k, j), dim, t in zip(spec.kw_slots, spec.kw_dims, extra, strict=True):
        one = t.unsqueeze(0).movedim(0, dim) if dim is not None else t
        if j is None:
            kwargs[k] = one
        else:
            kwargs[k][j] = one
    kwargs = {
        k: tuple(v) if isinstance(spec.kw_template[k], tuple) else v for k, v in kwargs.items()
    }
    single = Prepared(
        batch=spec.batch,
        hidden=hidden[None],
        layer_kwargs=kwargs,
        attention_mask=mask[None],
        input_ids=ids[None],
        image_mask=image_mask[None],
        sup_batch=torch.zeros_like(pos),
        sup_pos=pos,
        targets=tgt,
        weights=w[None],
        counts=(w > 0).sum()[None],
        start_layer=spec.start_layer,
        embed_trainable=spec.embed_trainable,
        residuals=residuals,
    )
    return per_sample_loss(proxy, single, params)[0]


def _batch_dim(value: torch.Tensor, batch: int) -> int | None:
    """Batch dimension of a cached layer argument: position ids [..., B, L], rotary cos/sin
    [..., B, L, D]; a size-1 batch dimension is shared (None)."""
    dim = value.ndim - 3 if value.is_floating_point() else value.ndim - 2
    if dim < 0 or value.shape[dim] == 1:
        return None
    if value.shape[dim] != batch:
        raise NotImplementedError(f"cannot find the batch dimension of a {tuple(value.shape)}")
    return dim
