"""Random VLMs of benchmark-chosen sizes, built offline like `ost proxy init` builds its proxies.

`build_tiny_proxy` offers two fixed sizes; the benchmark needs a proxy and a somewhat larger target
that both learn something within CPU minutes, so it picks its own widths here. It reuses the proxy
package's architecture facts (config, processor, tokenizer), so the folders load with `load_proxy`
exactly like any proxy and go through the same loss, collation and scoring code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path


def digit_bpe_tokenizer(
    texts: list[str],
    special_tokens: tuple[str, ...],
    *,
    vocab_size: int,
    bos: str | None,
    eos: str,
    pad: str,
    chat_template: str,
    extra_special_tokens: dict[str, str] | None = None,
):
    """A byte-level BPE like `proxy.tokenizer_build.train_bpe_tokenizer`, but with every digit its
    own token, as the Qwen and Llama tokenizers do. A plain BPE on DigitMath merges "215" or "15"
    into one token, which turns reading and arithmetic into memorising hundreds of number tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        padding_side="right",
        **({"extra_special_tokens": extra_special_tokens} if extra_special_tokens else {}),
    )
    fast.chat_template = chat_template
    return fast


def build_bench_model(
    out_dir: str | Path,
    *,
    text: Mapping[str, int],
    vision: Mapping[str, int],
    corpus: Iterable[str],
    arch: str = "qwen2-vl",
    seed: int = 0,
    role: str = "model",
    image_pixels: int | None = 84 * 28,
) -> Path:
    """Write a random `arch` VLM with the given text/vision widths and a BPE trained on `corpus`.

    `text` keys: hidden, layers, heads, kv_heads, intermediate, vocab; `vision` keys: hidden,
    layers, heads, intermediate (the keys of `ostselect.proxy.arches.TEXT_SIZES`/`VISION_SIZES`).
    """
    import torch
    from transformers import AutoModelForImageTextToText

    from ostselect.proxy.families import get_family
    from ostselect.proxy.folder import write_meta

    spec = get_family(arch).tiny
    if spec is None:
        raise ValueError(f"family {arch!r} has no tiny build spec")
    # the family's template without a default system prompt (~15% of a DigitMath sequence)
    template = spec.compact_template or spec.chat_template
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    text_dims = dict(text)
    tokenizer = digit_bpe_tokenizer(
        list(corpus),
        spec.special_tokens,
        vocab_size=text_dims["vocab"],
        bos=spec.bos,
        eos=spec.eos,
        pad=spec.pad,
        chat_template=template,
        extra_special_tokens=dict(spec.tokenizer_attrs),
    )
    text_dims["vocab"] = len(tokenizer)
    config = spec.build_config(text_dims, dict(vision), spec.token_ids(tokenizer))
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    # Qwen-style processors keep DigitMath's 84x28 canvas as is: with 14-px patches merged 2x2,
    # each of the three image tokens then covers exactly one 28-px digit cell (3 tokens, not 8).
    pixels = image_pixels if spec.free_image_size else None
    processor = spec.build_processor(tokenizer, template, pixels)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    write_meta(
        out,
        {
            "arch": arch,
            "params": {"params": "all"},  # the language model; the reader is frozen
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
