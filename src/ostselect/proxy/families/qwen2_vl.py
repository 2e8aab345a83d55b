"""Qwen2-VL (`qwen2_vl`): Qwen2 decoder with 3-D (multimodal) rotary positions, dynamic-resolution
ViT whose 2x2-merged patches become `<|image_pad|>` tokens between `<|vision_start|>` and
`<|vision_end|>`. The stock processor builds a video processor (torchvision)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ostselect.proxy.arches import CONTENT_MACRO, IMAGE_PX, PATCH, text_config
from ostselect.proxy.families.registry import Family, TinySpec, register_family

QWEN_SPECIALS = (
    "<|endoftext|>",
    "<|im_end|>",
    "<|im_start|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
QWEN_CONFIG_TOKENS = {
    "video": "<|video_pad|>",
    "vision_start": "<|vision_start|>",
    "vision_end": "<|vision_end|>",
}

QWEN_TEMPLATE = CONTENT_MACRO + (
    "{% for m in messages %}"
    "{% if loop.first and m['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ m['role'] }}\n"
    f"{{{{ render(m['content'], '{QWEN_IMAGE}') }}}}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# ChatML without the default system prompt: ~10 fewer tokens per sample, which is ~15% of a
# benchmark (DigitMath) sequence and of every training step on CPU.
QWEN_COMPACT_TEMPLATE = CONTENT_MACRO + (
    "{% for m in messages %}"
    "<|im_start|>{{ m['role'] }}\n"
    f"{{{{ render(m['content'], '{QWEN_IMAGE}') }}}}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def qwen_vision_ids(ids: dict[str, int]) -> dict[str, int]:
    """The special-token ids every Qwen-VL config takes."""
    return dict(
        image_token_id=ids["image"],
        video_token_id=ids["video"],
        vision_start_token_id=ids["vision_start"],
        vision_end_token_id=ids["vision_end"],
    )


def qwen_image_processor(image_pixels: int | None, patch: int = PATCH) -> Any:
    """Qwen's dynamic-resolution image processor pinned to one image area (PIL backend)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    px = image_pixels or IMAGE_PX * IMAGE_PX
    return Qwen2VLImageProcessorPil(
        min_pixels=px, max_pixels=px, patch_size=patch, merge_size=2, temporal_patch_size=2
    )


def _config(t: dict[str, int], v: dict[str, int], ids: dict[str, int]) -> Any:
    from transformers import Qwen2VLConfig

    return Qwen2VLConfig(
        text_config=text_config(t, ids, mrope=True),
        vision_config=dict(
            depth=v["layers"],
            embed_dim=v["hidden"],
            hidden_size=t["hidden"],
            num_heads=v["heads"],
            mlp_ratio=v["intermediate"] // v["hidden"],
            patch_size=PATCH,
            spatial_merge_size=2,
            temporal_patch_size=2,
        ),
        **qwen_vision_ids(ids),
        tie_word_embeddings=False,
    )


def qwen_processor(
    processor_class: str, video_class: str, *, patch: int = PATCH, pixels: int | None = None
) -> Callable[[Any, str, int | None], Any]:
    """`TinySpec.build_processor` of a Qwen-VL family: its processor class (image-only where the
    video part needs torchvision) around `qwen_image_processor` (`pixels`: default image area)."""

    def build(tokenizer: Any, chat_template: str, image_pixels: int | None) -> Any:
        from ostselect.proxy.processors import build_processor

        return build_processor(
            processor_class,
            video_class,
            image_processor=qwen_image_processor(image_pixels or pixels, patch=patch),
            tokenizer=tokenizer,
            chat_template=chat_template,
        )

    return build


def qwen_tiny(
    build_config: Any,
    build_processor: Any,
    *,
    chat_template: str = QWEN_TEMPLATE,
    compact_template: str | None = QWEN_COMPACT_TEMPLATE,
) -> TinySpec:
    """The tiny offline build every Qwen-VL family shares (ChatML tokens, free image size); only
    the config and processor builders, and the template, differ between generations."""
    return TinySpec(
        special_tokens=QWEN_SPECIALS,
        eos="<|im_end|>",
        pad="<|endoftext|>",
        image_token="<|image_pad|>",
        chat_template=chat_template,
        compact_template=compact_template,
        config_tokens=QWEN_CONFIG_TOKENS,
        build_config=build_config,
        build_processor=build_processor,
        free_image_size=True,
    )


QWEN2_VL = register_family(
    Family(
        name="qwen2-vl",
        model_types=("qwen2_vl",),
        processor_class="Qwen2VLProcessor",
        video_processor_class="Qwen2VLVideoProcessor",
        tiny=qwen_tiny(_config, qwen_processor("Qwen2VLProcessor", "Qwen2VLVideoProcessor")),
        notes="ChatML; the stock template adds a default system prompt when none is given.",
    )
)
