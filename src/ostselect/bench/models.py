"""Random VLMs of benchmark-chosen sizes, built offline like `ost proxy init` builds its proxies.

`build_tiny_proxy` offers two fixed sizes; the benchmark needs a proxy and a somewhat larger target
that both learn something within CPU minutes, so it picks its own widths here. It reuses the proxy
package's architecture facts (config, processor, tokenizer), so the folders load with `load_proxy`
exactly like any proxy and go through the same loss, collation and scoring code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

# Every parameter, the vision tower included: the benchmark models start random, so "pretraining"
# must teach the vision tower to see digits.
ALL_PARAMS_REGEX = r"."


def build_bench_model(
    out_dir: str | Path,
    *,
    text: Mapping[str, int],
    vision: Mapping[str, int],
    corpus: Iterable[str],
    arch: str = "qwen2-vl",
    seed: int = 0,
    role: str = "model",
) -> Path:
    """Write a random `arch` VLM with the given text/vision widths and a BPE trained on `corpus`.

    `text` keys: hidden, layers, heads, kv_heads, intermediate, vocab; `vision` keys: hidden, layers,
    heads, intermediate (the same keys as `ostselect.proxy.arches.TEXT_SIZES` / `VISION_SIZES`).
    """
    import torch
    from transformers import AutoModelForImageTextToText

    from ostselect.proxy.arches import SPECS, token_ids
    from ostselect.proxy.folder import write_meta
    from ostselect.proxy.tokenizer_build import train_bpe_tokenizer

    spec = SPECS[arch]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    text_dims = dict(text)
    tokenizer = train_bpe_tokenizer(
        list(corpus),
        spec.special_tokens,
        vocab_size=text_dims["vocab"],
        bos=spec.bos,
        eos=spec.eos,
        pad=spec.pad,
        chat_template=spec.chat_template,
    )
    text_dims["vocab"] = len(tokenizer)
    config = spec.build_config(text_dims, dict(vision), token_ids(tokenizer, spec))
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    processor = spec.build_processor(tokenizer, spec.chat_template)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    write_meta(
        out,
        {
            "arch": arch,
            "params": {"params": ALL_PARAMS_REGEX},
            "built": {
                "role": role,
                "seed": seed,
                "text": text_dims,
                "vision": dict(vision),
                "n_parameters": sum(p.numel() for p in model.parameters()),
            },
            "metadata": {},
        },
    )
    return out
