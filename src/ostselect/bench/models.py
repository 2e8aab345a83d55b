"""Random VLMs of benchmark-chosen sizes, built offline like `ost proxy init` builds its proxies.

`build_tiny_proxy` offers two fixed sizes; the benchmark needs a proxy and a somewhat larger target
that both learn something within CPU minutes, so it picks its own widths here. It reuses the proxy
package's architecture facts (config, processor, tokenizer), so the folders load with `load_proxy`
exactly like any proxy and go through the same loss, collation and scoring code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

# Qwen's ChatML without the default system prompt: ~10 fewer tokens per sample, which is ~15% of a
# DigitMath sequence and of every training step on CPU.
BENCH_QWEN_TEMPLATE = (
    "{% for m in messages %}"
    "<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def digit_bpe_tokenizer(
    texts: list[str],
    special_tokens: tuple[str, ...],
    *,
    vocab_size: int,
    bos: str | None,
    eos: str,
    pad: str,
    chat_template: str,
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
        tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad, padding_side="right"
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

    from ostselect.proxy.arches import SPECS, token_ids
    from ostselect.proxy.folder import write_meta

    spec = SPECS[arch]
    template = BENCH_QWEN_TEMPLATE if arch == "qwen2-vl" else spec.chat_template
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
    )
    text_dims["vocab"] = len(tokenizer)
    config = spec.build_config(text_dims, dict(vision), token_ids(tokenizer, spec))
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    processor = spec.build_processor(tokenizer, template)
    if image_pixels is not None and arch == "qwen2-vl":
        # Keep DigitMath's 84x28 canvas as is: with 14-px patches merged 2x2, each of the three
        # image tokens then covers exactly one 28-px digit cell (3 tokens instead of 8 at 112x56).
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
            Qwen2VLImageProcessorPil,
        )

        from ostselect.proxy.processors import Qwen2VLImageOnlyProcessor

        image_processor = Qwen2VLImageProcessorPil(
            min_pixels=image_pixels,
            max_pixels=image_pixels,
            patch_size=14,
            merge_size=2,
            temporal_patch_size=2,
        )
        processor = Qwen2VLImageOnlyProcessor(
            image_processor=image_processor, tokenizer=tokenizer, chat_template=template
        )
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
