"""InternVL (`internvl`, the `-hf` layout of InternVL3 that transformers ships as
`InternVLForConditionalGeneration`): an InternViT tower, pixel shuffle (0.5) and an MLP in front of
a Qwen2 decoder. An image is `<img><IMG_CONTEXT>...</img>`; the stock processor builds a video
processor (torchvision) and pads on the left by default (ostselect's collate asks for right)."""

from __future__ import annotations

from typing import Any

from ostselect.proxy.arches import CONTENT_MACRO, IMAGE_PX, PATCH, text_config, vision_config
from ostselect.proxy.families.registry import Family, TinySpec, register_family

INTERNVL_TEMPLATE = CONTENT_MACRO + (
    "{% for m in messages %}"
    "<|im_start|>{{ m['role'] }}\n{{ render(m['content'], '<IMG_CONTEXT>\n') }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
IMAGE_SEQ_LENGTH = (IMAGE_PX // PATCH) ** 2 // 4  # pixel shuffle 0.5 merges 2x2 patches


def _config(t: dict[str, int], v: dict[str, int], ids: dict[str, int]) -> Any:
    from transformers import InternVLConfig

    return InternVLConfig(
        vision_config=vision_config(v, image_size=[IMAGE_PX, IMAGE_PX], patch_size=[PATCH, PATCH]),
        text_config=dict(model_type="qwen2", **text_config(t, ids)),
        image_token_id=ids["image"],
        image_seq_length=IMAGE_SEQ_LENGTH,
        downsample_ratio=0.5,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        tie_word_embeddings=False,
    )


def _processor(tokenizer: Any, chat_template: str, image_pixels: int | None) -> Any:
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import (
        GotOcr2ImageProcessorPil,
    )

    from ostselect.proxy.processors import build_processor

    image_processor = GotOcr2ImageProcessorPil(
        size={"height": IMAGE_PX, "width": IMAGE_PX},
        crop_to_patches=False,
        min_patches=1,
        max_patches=1,
    )
    return build_processor(
        "InternVLProcessor",
        "InternVLVideoProcessor",
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_length=IMAGE_SEQ_LENGTH,
        chat_template=chat_template,
    )


register_family(
    Family(
        name="internvl",
        model_types=("internvl",),
        processor_class="InternVLProcessor",
        video_processor_class="InternVLVideoProcessor",
        tiny=TinySpec(
            special_tokens=(
                "<|endoftext|>",
                "<|im_end|>",
                "<|im_start|>",
                "<img>",
                "</img>",
                "<IMG_CONTEXT>",
                "<video>",
            ),
            eos="<|im_end|>",
            pad="<|endoftext|>",
            image_token="<IMG_CONTEXT>",
            chat_template=INTERNVL_TEMPLATE,
            tokenizer_attrs={
                "start_image_token": "<img>",
                "end_image_token": "</img>",
                "context_image_token": "<IMG_CONTEXT>",
                "video_token": "<video>",
            },
            build_config=_config,
            build_processor=_processor,
        ),
        notes="ChatML (InternVL3 uses Qwen2.5's); an image is rendered as `<IMG_CONTEXT>` and "
        "expanded by the processor to `<img>` + 256 context tokens per tile + `</img>`. Its "
        "processor pads on the left unless told otherwise; ostselect always asks for right.",
    )
)
