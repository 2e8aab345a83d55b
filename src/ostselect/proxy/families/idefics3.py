"""Idefics3 (`idefics3`): SigLIP tower + pixel-shuffle connector in front of a Llama decoder; an
image becomes `<fake_token_around_image><global-img><image>...` (no splitting in the tiny
build). No video processor."""

from __future__ import annotations

from typing import Any

from ostselect.proxy.arches import CONTENT_MACRO, IMAGE_PX, PATCH, text_config, vision_config
from ostselect.proxy.families.registry import Family, TinySpec, register_family

IDEFICS3_SPECIALS = (
    "<|endoftext|>",
    "<end_of_utterance>",
    "<|im_start|>",
    "<fake_token_around_image>",
    "<image>",
    "<global-img>",
    *(f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)),
)

IDEFICS3_TEMPLATE = CONTENT_MACRO + (
    "<|im_start|>"
    "{% for m in messages %}"
    "{{ m['role'] | capitalize }}:{{ render(m['content'], '<image>') }}<end_of_utterance>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def idefics3_like_config(
    config_class: Any, t: dict[str, int], v: dict[str, int], ids: dict[str, int]
) -> Any:
    """A tiny config of the Idefics3 layout (SigLIP tower, 2x2 pixel shuffle, Llama decoder);
    SmolVLM shares it with its own config class."""
    from transformers import LlamaConfig

    return config_class(
        vision_config=vision_config(v),
        text_config=LlamaConfig(**text_config(t, ids)),
        image_token_id=ids["image"],
        scale_factor=2,
        pad_token_id=ids["pad"],
        tie_word_embeddings=False,
    )


def idefics3_like_processor(
    image_processor_class: Any,
    processor_class: str,
    video_processor_class: str | None,
    tokenizer: Any,
    chat_template: str,
) -> Any:
    """The stock processor of an Idefics3-layout family: one unsplit image of IMAGE_PX, whose
    2x2-merged patches give `image_seq_len` image tokens."""
    from ostselect.proxy.processors import build_processor

    image_processor = image_processor_class(
        do_image_splitting=False,
        size={"longest_edge": IMAGE_PX},
        max_image_size={"longest_edge": IMAGE_PX},
    )
    return build_processor(
        processor_class,
        video_processor_class,
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=(IMAGE_PX // PATCH) ** 2 // 4,  # scale_factor 2 merges 2x2 patches
        chat_template=chat_template,
    )


def _config(t: dict[str, int], v: dict[str, int], ids: dict[str, int]) -> Any:
    from transformers import Idefics3Config

    return idefics3_like_config(Idefics3Config, t, v, ids)


def _processor(tokenizer: Any, chat_template: str, image_pixels: int | None) -> Any:
    from transformers.models.idefics3.image_processing_pil_idefics3 import (
        Idefics3ImageProcessorPil,
    )

    return idefics3_like_processor(
        Idefics3ImageProcessorPil, "Idefics3Processor", None, tokenizer, chat_template
    )


register_family(
    Family(
        name="idefics3",
        model_types=("idefics3",),
        processor_class="Idefics3Processor",
        tiny=TinySpec(
            special_tokens=IDEFICS3_SPECIALS,
            bos="<|im_start|>",
            eos="<end_of_utterance>",
            pad="<|endoftext|>",
            image_token="<image>",
            chat_template=IDEFICS3_TEMPLATE,
            build_config=_config,
            build_processor=_processor,
        ),
        notes="`User:`/`Assistant:` turns ended by `<end_of_utterance>`.",
    )
)
