"""Proxy folders: `load_proxy` and `save_proxy` (HF weights + processor, LoRA adapter,
ostselect.json, optimizer state)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ostselect.precision import master_dtype, resolve_dtype
from ostselect.proxy.api import OptimizerState
from ostselect.proxy.folder import (
    ADAPTER_DIR,
    OPTIMIZER_FILE,
    check_model_folder,
    read_meta,
    write_meta,
)
from ostselect.proxy.model import Proxy
from ostselect.proxy.params import ParamsSpec, apply_lora, select_all, select_regex
from ostselect.proxy.processors import load_processor


def arch_of_model_type(model_type: str) -> str:
    """The family name of an HF model_type (the model_type itself for unregistered ones)."""
    from ostselect.proxy.families import family_for_model_type

    family = family_for_model_type(model_type)
    return family.name if family is not None else model_type


def load_proxy(
    path: str | Path,
    *,
    dtype: str | torch.dtype = "float32",
    device: str = "cpu",
    attn_implementation: str | None = None,
    params: str | None = "all",
    lora_targets: list[str] | None = None,
    lora_rank: int = 8,
    lora_layers: str = "all",
) -> Proxy:
    """Load a proxy folder (any `AutoModelForImageTextToText` checkpoint) with its processor.

    `params=None` uses the selection saved in the folder's ostselect.json (else "all"). A saved LoRA
    adapter is loaded when the selection is LoRA, and merged into the weights otherwise. A folder
    without a model raises `NotAModelFolderError` (a `ValueError`), a missing one
    `FileNotFoundError`. `attn_implementation=None` picks SDPA for float64 (the only kernel that
    keeps attention in float64) and eager otherwise (vmap-friendly on CPU). A bfloat16 or float16
    proxy keeps its saved AdamW moments in float32, where the scorer steps (`scoring.updates`).
    """
    from transformers import AutoConfig, AutoModelForImageTextToText

    folder = Path(path)
    looks_like_hub_name = str(path).count("/") == 1 and not str(path).startswith((".", "/", "~"))
    if not folder.exists() and not looks_like_hub_name:
        raise FileNotFoundError(
            f"proxy folder {folder} not found (build one with `ost proxy init {folder}`)"
        )
    check_model_folder(folder)
    meta = read_meta(folder)
    config = AutoConfig.from_pretrained(str(path))
    torch_dtype = resolve_dtype(dtype)
    if attn_implementation is None:
        # HF's eager attention takes its softmax in float32 even in a float64 model; SDPA computes
        # in the input dtype, so float64 is float64 end to end (exact vs naive to ~1e-15)
        attn_implementation = "sdpa" if torch_dtype == torch.float64 else "eager"
    model = AutoModelForImageTextToText.from_pretrained(
        str(path), dtype=torch_dtype, attn_implementation=attn_implementation
    )
    model.to(device)
    processor = load_processor(str(path), config.model_type)
    saved = ParamsSpec.from_json(meta.get("params"))
    if params is None:
        spec = saved
    else:
        spec = ParamsSpec(
            params=params,
            lora_targets=list(lora_targets) if lora_targets else None,
            lora_rank=lora_rank,
            lora_layers=lora_layers,
        )
    adapter = folder / ADAPTER_DIR
    if adapter.is_dir():
        from peft import PeftModel

        peft_model = PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
        if spec.params == "lora":
            spec = saved if params is None else spec
            model = peft_model
        else:
            model = peft_model.merge_and_unload()
    if spec.params == "all":
        select_all(model)
    elif spec.params == "lora":
        if not adapter.is_dir():
            model = apply_lora(model, spec)
    else:
        select_regex(model, spec.params)
    model.to(device=device, dtype=torch_dtype)
    opt_state = _load_optimizer_state(folder / OPTIMIZER_FILE, device, torch_dtype)
    arch = meta.get("arch") or arch_of_model_type(config.model_type)
    proxy = Proxy(
        model,
        processor,
        name=str(path),
        arch=arch,
        params_spec=spec,
        optimizer_state=opt_state,
        metadata=meta.get("metadata"),
        source=folder if folder.is_dir() else None,
    )
    if opt_state is not None:
        missing = set(proxy.trainable_parameters()) - set(opt_state.exp_avg)
        if missing:
            raise ValueError(
                f"{folder / OPTIMIZER_FILE} has no state for {len(missing)} trainable parameters "
                f"(e.g. {sorted(missing)[0]}); load with the params selection it was saved with"
            )
    return proxy


def _load_optimizer_state(path: Path, device: str, dtype: torch.dtype) -> OptimizerState | None:
    if not path.is_file():
        return None
    raw = torch.load(path, map_location=device, weights_only=True)
    dtype = master_dtype(dtype)  # bf16/fp16 proxies: moments stay float32 (see scoring.updates)
    state = OptimizerState(
        step=int(raw["step"]),
        lr=float(raw["lr"]),
        betas=tuple(raw["betas"]),
        eps=float(raw["eps"]),
        weight_decay=float(raw["weight_decay"]),
        exp_avg={k: v.to(dtype) for k, v in raw["exp_avg"].items()},
        exp_avg_sq={k: v.to(dtype) for k, v in raw["exp_avg_sq"].items()},
    )
    return state


def _base_state_dict(proxy: Proxy) -> dict[str, torch.Tensor]:
    """Base-model weights without LoRA tensors, under the names the plain model uses."""
    base = proxy.hf_model
    out = {}
    for name, tensor in base.state_dict().items():
        if "lora_" in name:
            continue
        out[name.replace(".base_layer.", ".")] = tensor
    return out


def save_proxy(
    proxy: Proxy,
    out_dir: str | Path,
    optimizer_state: OptimizerState | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    is_lora = hasattr(proxy.model, "peft_config")
    if is_lora:
        proxy.hf_model.save_pretrained(out, state_dict=_base_state_dict(proxy))
        proxy.model.save_pretrained(str(out / ADAPTER_DIR))
    else:
        proxy.model.save_pretrained(out)
    proxy.processor.save_pretrained(out)
    state = optimizer_state if optimizer_state is not None else proxy.optimizer_state()
    if state is not None:
        names = set(proxy.trainable_parameters())
        if set(state.exp_avg) != names or set(state.exp_avg_sq) != names:
            raise ValueError("optimizer state must be keyed by the trainable parameter names")
        torch.save(asdict(state), out / OPTIMIZER_FILE)
    old = read_meta(out)
    meta = {
        "arch": proxy.arch,
        "params": proxy.params_spec.to_json(),
        "metadata": {**proxy.metadata, **dict(metadata or {})},
    }
    if "built" in old:
        meta["built"] = old["built"]
    write_meta(out, json.loads(json.dumps(meta, default=str)))
    return out
