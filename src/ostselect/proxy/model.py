"""`Proxy`: a Hugging Face VLM behind the `ScoringModel` seam, and `load_proxy`.

Scoring evaluates the same anchors under many parameter perturbations, so `prepare` runs once,
without grad, everything that cannot change (vision tower + projector, 3-D rotary position ids,
layers below the lowest trainable one) and `per_sample_loss` runs only the rest: the trainable
layers, the final norm and the LM head at supervised positions only. `per_sample_loss_reference` is
the plain HF forward that tests and the naive scorer compare against.

Fast paths, each the same function computed another way (tests/test_proxy_batched.py): evaluation
without grad folds LoRA into the base weights and uses fused attention (float32/bf16);
`per_sample_gradients` differentiates a whole prepared batch at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ostselect.data.sample import Sample
from ostselect.precision import DTYPES, LOW_PRECISION, master_dtype
from ostselect.proxy.api import OptimizerState
from ostselect.proxy.collate import IGNORE_INDEX, Batch, collate
from ostselect.proxy.folder import ADAPTER_DIR, OPTIMIZER_FILE, read_meta, write_meta
from ostselect.proxy.params import ParamsSpec, default_lora_targets, family_of, find_text_model


class _StopForward(Exception):
    """Raised by a hook to end a forward pass once the frozen prefix has been captured."""


@dataclass
class Prepared:
    """Frozen-prefix outputs for one batch; reused for every candidate step."""

    batch: Batch
    hidden: torch.Tensor | None  # [B, L, H] entering layer `start_layer` (None: vision trains)
    layer_kwargs: dict[str, Any]  # position_embeddings (cos, sin), position_ids for the layers
    attention_mask: torch.Tensor  # [B, L] padding mask; the 4-D mask is rebuilt per call
    input_ids: torch.Tensor
    image_mask: torch.Tensor  # [B, L] positions holding image features
    sup_batch: torch.Tensor  # [N] sample index of each supervised prediction
    sup_pos: torch.Tensor  # [N] position whose hidden state predicts a supervised token
    targets: torch.Tensor  # [N] the supervised token ids
    weights: torch.Tensor  # [B, N]: 1/count_b where sup_batch == b, so per-sample mean = W @ ce
    counts: torch.Tensor  # [B]
    start_layer: int
    embed_trainable: bool
    # [n, B, L, H] added to the hidden states after layer i < n (a family's `layer_residuals`,
    # e.g. Qwen3-VL's deepstack visual features); None for most families
    residuals: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.batch)


def _supervision(labels: torch.Tensor, dtype: torch.dtype):
    """Positions t whose logits predict labels[t+1] (the causal shift), and per-sample averaging."""
    shifted = labels[:, 1:]
    sup_batch, sup_pos = (shifted != IGNORE_INDEX).nonzero(as_tuple=True)
    targets = shifted[sup_batch, sup_pos]
    counts = (shifted != IGNORE_INDEX).sum(dim=1)
    dtype = master_dtype(dtype)  # 1/count exactly enough (float32 for bf16/fp16 models)
    if (counts == 0).any():
        raise ValueError("a sample has no supervised tokens left after masking")
    weights = torch.zeros(labels.shape[0], sup_batch.numel(), dtype=dtype, device=labels.device)
    weights[sup_batch, torch.arange(sup_batch.numel(), device=labels.device)] = 1.0
    weights = weights / counts[:, None].to(dtype)
    return sup_batch, sup_pos, targets, weights, counts


def causal_padding_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive [B, 1, L, L] mask (0 = attend, dtype min = blocked), as HF's eager path has it."""
    length = attention_mask.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=attention_mask.device).tril()
    allowed = causal[None, None] & attention_mask[:, None, None, :].bool()
    zeros = torch.zeros(allowed.shape, dtype=dtype, device=attention_mask.device)
    return zeros.masked_fill(~allowed, torch.finfo(dtype).min)


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


class _LossTail(nn.Module):
    """Holds the model as a submodule so `functional_call` can swap its parameters."""

    def __init__(self, proxy: Proxy):
        super().__init__()
        self.model = proxy.model
        self._proxy = [proxy]  # a list hides the proxy from nn.Module registration

    def forward(self, prepared: Prepared) -> torch.Tensor:
        return self._proxy[0]._tail_loss(prepared)


class Proxy:
    """A VLM + processor with a trainable-parameter selection, implementing `ScoringModel`."""

    def __init__(
        self,
        model: nn.Module,
        processor: Any,
        *,
        name: str,
        arch: str,
        params_spec: ParamsSpec,
        optimizer_state: OptimizerState | None = None,
        metadata: Mapping[str, Any] | None = None,
    ):
        self.model = model
        self.processor = processor
        self.name = name
        self.arch = arch
        self.params_spec = params_spec
        self.metadata = dict(metadata or {})
        self._optimizer_state = optimizer_state
        self.model.eval()  # scoring never uses dropout
        self._tail = _LossTail(self)
        self._lora_cache: list[tuple[str, nn.Module, str]] | None = None

    # ---- structure -------------------------------------------------------------------------
    @property
    def hf_model(self) -> nn.Module:
        """The underlying transformers model (unwrapped from peft)."""
        m = self.model
        return m.get_base_model() if hasattr(m, "get_base_model") else m

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _layout(self):
        """(text model, lowest trainable layer, embeddings train?, names trainable elsewhere)."""
        hf = self.hf_model
        text = find_text_model(hf)
        layer_of = {}
        for i, layer in enumerate(text.layers):
            for p in layer.parameters():
                layer_of[id(p)] = i
        embed_ids = {id(p) for p in text.embed_tokens.parameters()}
        after_ids = {id(p) for p in text.norm.parameters()}
        head = hf.get_output_embeddings()
        after_ids |= {id(p) for p in head.parameters()}
        start, embed, other = len(text.layers), False, []
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            if id(p) in layer_of:
                start = min(start, layer_of[id(p)])
            elif id(p) in embed_ids:
                embed, start = True, 0
            elif id(p) not in after_ids:
                other.append(name)
        return text, start, embed, other

    def trainable_parameters(self) -> dict[str, torch.Tensor]:
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    def frozen_description(self) -> str:
        """What is frozen (and hence cached by `prepare`), in words."""
        text, start, embed, other = self._layout()
        n_layers = len(text.layers)
        total = sum(p.numel() for p in self.model.parameters())
        trainable = sum(p.numel() for p in self.trainable_parameters().values())
        described = self.params_spec.describe(default_lora_targets(self.hf_model))
        lines = [f"params: {described} ({trainable:,} of {total:,} trainable)"]
        if other:
            lines.append(
                f"trainable outside the language model ({len(other)} tensors, e.g. {other[0]}): "
                "nothing is cached; every loss runs the full forward"
            )
            return "\n".join(lines)
        lines.append("frozen: vision tower + projector -> image embeddings cached once per batch")
        lines.append("cached: attention padding mask and (3-D) rotary position embeddings")
        if embed:
            lines.append("trainable: token embeddings -> text embeddings recomputed per call")
        elif start > 0:
            lines.append(
                f"frozen: embeddings and layers 0..{start - 1} of {n_layers} -> hidden states "
                f"entering layer {start} cached"
            )
        else:
            lines.append("frozen: token embeddings -> inputs embeddings cached")
        lines.append(f"computed per call: layers {start}..{n_layers - 1}, final norm, LM head")
        lines.append("LM head evaluated at supervised (assistant) positions only")
        return "\n".join(lines)

    # ---- data ------------------------------------------------------------------------------
    def collate(self, samples: Sequence[Sample]) -> Batch:
        return collate(self.processor, samples, dtype=self.dtype, device=self.device)

    @torch.no_grad()
    def prepare(self, samples: Sequence[Sample]) -> Prepared:
        batch = self.collate(samples)
        text, start, embed, other = self._layout()
        sup_batch, sup_pos, targets, weights, counts = _supervision(batch.labels, self.dtype)
        input_ids = batch.inputs["input_ids"]
        image_id = self._image_token_id()
        image_mask = input_ids == image_id if image_id is not None else torch.zeros_like(input_ids)
        common = dict(
            batch=batch,
            attention_mask=batch.inputs["attention_mask"],
            input_ids=input_ids,
            image_mask=image_mask.bool(),
            sup_batch=sup_batch,
            sup_pos=sup_pos,
            targets=targets,
            weights=weights,
            counts=counts,
            start_layer=start,
            embed_trainable=embed,
        )
        if other:
            return Prepared(hidden=None, layer_kwargs={}, **common)
        captured: dict[str, Any] = {}

        def at_text_model(_mod, _args, kwargs):
            captured["inputs_embeds"] = kwargs.get("inputs_embeds")
            captured["text_kwargs"] = kwargs

        def at_layer(_mod, args, kwargs):
            captured["hidden"] = args[0] if args else kwargs["hidden_states"]
            captured["kwargs"] = kwargs
            raise _StopForward

        def at_layer0(_mod, _args, kwargs):
            captured["kwargs"] = kwargs

        def at_norm(_mod, args):
            captured["hidden"] = args[0]
            raise _StopForward

        handles = [text.register_forward_pre_hook(at_text_model, with_kwargs=True)]
        if start < len(text.layers):
            handles.append(text.layers[start].register_forward_pre_hook(at_layer, with_kwargs=True))
        else:  # only norm / head train: capture the final hidden states
            handles.append(text.norm.register_forward_pre_hook(at_norm))
            handles.append(text.layers[0].register_forward_pre_hook(at_layer0, with_kwargs=True))
        try:
            self.hf_model.model(**batch.inputs, use_cache=False)
        except _StopForward:
            pass
        finally:
            for h in handles:
                h.remove()
        kw = captured["kwargs"]
        layer_kwargs = {
            "position_embeddings": kw.get("position_embeddings"),
            "position_ids": kw.get("position_ids"),
        }
        hidden = captured["hidden"]
        family = family_of(self.hf_model)
        residuals = None
        if family is not None and family.layer_residuals is not None:
            residuals = family.layer_residuals(captured["text_kwargs"], hidden)
        if embed:
            hidden = captured["inputs_embeds"]
            if not torch.equal(hidden, captured.get("hidden", hidden)):
                raise NotImplementedError(
                    "this text model transforms its input embeddings before layer 0; "
                    "train the embeddings with a regex that excludes them instead"
                )
            text_embeds = text.embed_tokens(input_ids)
            m = ~common["image_mask"]
            if not torch.equal(hidden[m], text_embeds[m]):
                raise NotImplementedError("cannot separate image features from token embeddings")
        return Prepared(hidden=hidden, layer_kwargs=layer_kwargs, residuals=residuals, **common)

    def _image_token_id(self) -> int | None:
        """The id of the tokens image features replace (the family's rule, else the config's)."""
        cfg = self.hf_model.config
        family = family_of(self.hf_model)
        if family is not None and family.image_token_id is not None:
            return family.image_token_id(cfg)
        for key in ("image_token_id", "image_token_index"):
            value = getattr(cfg, key, None)
            if value is not None:
                return int(value)
        return None

    def supervised_token_counts(self, prepared: Prepared) -> torch.Tensor:
        return prepared.counts

    # ---- losses ----------------------------------------------------------------------------
    def per_sample_loss(
        self, prepared: Prepared, params: Mapping[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """[B] mean cross-entropy over each sample's assistant tokens (the frozen prefix reused)."""
        if params is None:
            return self._tail_loss(prepared)
        if not torch.is_grad_enabled():  # evaluation only (the exact scorer's anchor passes)
            return self._evaluate(prepared, params)
        swapped = {f"model.{k}": v for k, v in params.items()}
        return torch.func.functional_call(self._tail, swapped, (prepared,), strict=False)

    def _evaluate(self, prepared: Prepared, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The same function as the differentiable path, computed the cheapest exact way:
        LoRA folded into the base weights (W + s*B@A, no side branch per call), and fused SDPA
        attention. A float64 model keeps the kernel it was loaded with (SDPA by default, so
        float64 throughout; an explicitly eager one then matches its eager naive reference)."""
        merged = self._merged_lora(params)
        swapped = {f"model.{k}": v for k, v in (merged or params).items()}
        with contextlib.ExitStack() as stack:
            if merged is not None:
                stack.enter_context(self._lora_branches_off())
            if self.dtype != torch.float64 and prepared.hidden is not None:
                stack.enter_context(self._attention("sdpa"))
            return torch.func.functional_call(self._tail, swapped, (prepared,), strict=False)

    @contextlib.contextmanager
    def _attention(self, implementation: str):
        """Temporarily switch the language model's attention kernel (config-driven in HF)."""
        text = find_text_model(self.hf_model)
        configs = {id(c): c for m in text.layers.modules() if (c := getattr(m, "config", None))}
        saved = {k: c._attn_implementation for k, c in configs.items()}
        try:
            for c in configs.values():
                c._attn_implementation = implementation
            yield
        finally:
            for k, c in configs.items():
                c._attn_implementation = saved[k]

    def per_sample_gradients(
        self, prepared: Prepared, params: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """([B] losses, {name: [B, ...]}) for a prepared batch in one pass.

        LoRA-only selections take one batched backward and rebuild each sample's LoRA gradient
        from the captured activations (as fast as a plain backward); anything else runs
        `vmap(grad)` over the samples, each its own batch of one (its padded row, its supervised
        positions padded to the batch's longest with weight 0). Either way a gradient is that of
        the sample's own loss; padding is masked exactly as in the one-sample case.
        """
        if prepared.hidden is not None and self._lora_only(params):
            return self._lora_per_sample_gradients(prepared, params)
        rows, spec = self.per_sample_rows(prepared)

        def one(p, *row):
            loss = self.row_loss(p, row, spec)
            return loss, loss.detach()

        grad_fn = torch.func.grad(one, argnums=0, has_aux=True)
        with torch.enable_grad():
            grads, losses = torch.func.vmap(grad_fn, in_dims=(None, *[0] * len(rows)))(
                dict(params), *rows
            )
        return losses, grads

    def _lora_only(self, params: Mapping[str, torch.Tensor]) -> bool:
        """True when the trainable parameters are exactly the LoRA pairs (plain linear LoRA)."""
        layers = self._lora_layers()
        names = {f"{n}.lora_{ab}.{a}.weight" for n, _, a in layers for ab in "AB"}
        return bool(layers) and set(params) == names

    def _lora_per_sample_gradients(
        self, prepared: Prepared, params: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Per-sample LoRA gradients from one batched forward and backward.

        y = W x + s * B (A x): with h = A x and g = dL_i/d(B h) (one backward of sum_i L_i;
        sample i's loss reaches only row i), dB_i = sum_t g_t h_t^T and
        dA_i = sum_t (B^T g_t) x_t^T. Padded positions get g = 0 (masked keys), so they add 0.
        """
        captured: dict[str, dict[str, torch.Tensor]] = {}
        handles = []
        for name, mod, adapter in self._lora_layers():

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
            with torch.enable_grad(), self._attention("sdpa"):
                losses = self.per_sample_loss(prepared, leaves)
                order = list(captured)
                outs = torch.autograd.grad(
                    losses.sum(), [captured[n]["y"] for n in order], allow_unused=True
                )
        finally:
            for h in handles:
                h.remove()
        grads: dict[str, torch.Tensor] = {}
        by_name = dict(zip(order, outs, strict=True))
        for name, _mod, adapter in self._lora_layers():
            a_key = f"{name}.lora_A.{adapter}.weight"
            b_key = f"{name}.lora_B.{adapter}.weight"
            g = by_name.get(name)
            if g is None:  # the module did not take part in this loss
                for key in (a_key, b_key):
                    grads[key] = params[key].new_zeros(len(prepared), *params[key].shape)
                continue
            x, h = captured[name]["x"].detach(), captured[name]["h"].detach()
            grads[b_key] = torch.einsum("bto,btr->bor", g, h)
            grads[a_key] = torch.einsum("btr,bti->bri", g @ params[b_key], x)
        return losses.detach(), {k: grads[k] for k in params}

    def per_sample_rows(self, prepared: Prepared) -> tuple[tuple[torch.Tensor, ...], RowSpec]:
        """The prepared batch as flat tensors with the sample on dim 0 (what `vmap` or a
        `TensorDataset` slices); `row_loss(params, row, spec)` is one sample's loss."""
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
        weights[prepared.sup_batch, slot] = 1.0 / prepared.counts[prepared.sup_batch].to(
            weights.dtype
        )
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
        self, params: Mapping[str, torch.Tensor], row: Sequence[torch.Tensor], spec: RowSpec
    ) -> torch.Tensor:
        """One sample's loss from a row of `per_sample_rows` (sample dimension removed)."""
        hidden, mask, ids, image_mask, pos, tgt, w, *extra = row
        residuals = None
        if spec.has_residuals:
            residuals, *extra = extra
            residuals = residuals[:, None]
        kwargs = {
            k: list(v) if isinstance(v, tuple | list) else v for k, v in spec.kw_template.items()
        }
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
        return self.per_sample_loss(single, params)[0]

    # ---- LoRA merged into the base weights (exact; removes the side branch per call) ----------
    def _lora_layers(self) -> list[tuple[str, nn.Module, str]]:
        """(module name, LoRA layer, adapter) for every mergeable LoRA linear; [] if any is not."""
        if self._lora_cache is not None:
            return self._lora_cache
        out: list[tuple[str, nn.Module, str]] = []
        try:
            from peft.tuners.lora import LoraLayer
        except ImportError:  # pragma: no cover - peft is a dependency
            LoraLayer = ()
        for name, mod in self.model.named_modules():
            if not isinstance(mod, LoraLayer):
                continue
            active = list(getattr(mod, "active_adapters", []))
            mergeable = (
                len(active) == 1
                and isinstance(mod.base_layer, nn.Linear)
                and not getattr(mod, "fan_in_fan_out", False)
                and not mod.merged
                and active[0] in mod.lora_A
                and active[0] not in getattr(mod, "lora_variant", {})  # DoRA etc.
            )
            if not mergeable:
                out = []
                break
            out.append((name, mod, active[0]))
        self._lora_cache = out
        return out

    def _merged_lora(self, params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
        """`params` with each LoRA pair folded into its base weight, or None when not possible."""
        layers = self._lora_layers()
        if not layers:
            return None
        merged = dict(params)
        for name, mod, adapter in layers:
            a_key = f"{name}.lora_A.{adapter}.weight"
            b_key = f"{name}.lora_B.{adapter}.weight"
            if a_key not in params or b_key not in params:
                return None
            # in master precision, rounded once: a bf16 product-then-sum rounds three times
            base = mod.base_layer.weight
            work = master_dtype(base.dtype)
            delta = (params[b_key].to(work) @ params[a_key].to(work)) * mod.scaling[adapter]
            merged[f"{name}.base_layer.weight"] = (base.to(work) + delta).to(base.dtype)
        return merged

    @contextlib.contextmanager
    def _lora_branches_off(self):
        layers = self._lora_layers()
        flags = [mod._disable_adapters for _, mod, _ in layers]
        try:
            for _, mod, _ in layers:
                mod._disable_adapters = True
            yield
        finally:
            for (_, mod, _), flag in zip(layers, flags, strict=True):
                mod._disable_adapters = flag

    def _tail_loss(self, prepared: Prepared) -> torch.Tensor:
        if prepared.hidden is None:  # something outside the LM trains: full forward
            logits = self.model(**prepared.batch.inputs, use_cache=False).logits
            picked = logits[prepared.sup_batch, prepared.sup_pos]
            return self._weighted_ce(picked, prepared)
        text = find_text_model(self.hf_model)
        hidden = prepared.hidden
        if prepared.embed_trainable:
            embeds = text.embed_tokens(prepared.input_ids)
            hidden = torch.where(prepared.image_mask[..., None], hidden, embeds)
        mask = causal_padding_mask(prepared.attention_mask, hidden.dtype)
        residuals = prepared.residuals
        for i in range(prepared.start_layer, len(text.layers)):
            layer = text.layers[i]
            hidden = layer(hidden, attention_mask=mask, use_cache=False, **prepared.layer_kwargs)
            if isinstance(hidden, tuple):
                hidden = hidden[0]
            if residuals is not None and i < residuals.shape[0]:
                hidden = hidden + residuals[i]
        hidden = text.norm(hidden)
        picked = hidden[prepared.sup_batch, prepared.sup_pos]
        return self._weighted_ce(self.hf_model.get_output_embeddings()(picked), prepared)

    @staticmethod
    def _weighted_ce(logits: torch.Tensor, prepared: Prepared) -> torch.Tensor:
        """Token CE at supervised positions, averaged per sample (bf16/fp16 logits upcast).

        A masked sum, not `weights @ ce`: 0 * NaN is NaN, and one sample's non-finite loss must
        not reach its batch neighbours (candidates are differentiated as a batch)."""
        if logits.dtype in LOW_PRECISION:
            logits = logits.float()
        ce = nn.functional.cross_entropy(logits, prepared.targets, reduction="none")
        weights = prepared.weights.to(ce.dtype)
        return torch.where(weights != 0, weights * ce, 0.0).sum(dim=1)

    def per_sample_loss_reference(self, samples: Sequence[Sample]) -> torch.Tensor:
        """The independent reference: plain `model(**inputs)` on a fresh batch, same masking."""
        batch = self.collate(samples)
        logits = self.model(**batch.inputs, use_cache=False).logits
        return masked_per_sample_loss(logits, batch.labels)

    # ---- state -----------------------------------------------------------------------------
    def optimizer_state(self) -> OptimizerState | None:
        return self._optimizer_state

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(json.dumps(self.params_spec.to_json(), sort_keys=True).encode())
        for name, t in sorted(self.model.state_dict().items()):
            h.update(name.encode())
            h.update(str(t.dtype).encode())
            h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()[:16]

    def save(
        self,
        out_dir: str | Path,
        optimizer_state: OptimizerState | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Path:
        from ostselect.proxy.persist import save_proxy

        return save_proxy(self, out_dir, optimizer_state, metadata)


def _batch_dim(value: torch.Tensor, batch: int) -> int | None:
    """Batch dimension of a cached layer argument: position ids [..., B, L], rotary cos/sin
    [..., B, L, D]; a size-1 batch dimension is shared (None)."""
    dim = value.ndim - 3 if value.is_floating_point() else value.ndim - 2
    if dim < 0 or value.shape[dim] == 1:
        return None
    if value.shape[dim] != batch:
        raise NotImplementedError(f"cannot find the batch dimension of a {tuple(value.shape)}")
    return dim


def masked_per_sample_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample mean CE over positions whose label is not -100 (causal shift applied here)."""
    shift_logits = logits[:, :-1]
    if shift_logits.dtype in LOW_PRECISION:
        shift_logits = shift_logits.float()
    shift_labels = labels[:, 1:]
    ce = nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(shift_labels.shape)
    counts = (shift_labels != IGNORE_INDEX).sum(dim=1)
    return ce.sum(dim=1) / counts.to(ce.dtype)


__all__ = [
    "ADAPTER_DIR",
    "DTYPES",
    "OPTIMIZER_FILE",
    "Prepared",
    "Proxy",
    "causal_padding_mask",
    "masked_per_sample_loss",
    "read_meta",
    "write_meta",
]
