"""LLaVA-OneVision (`llava_onevision`): a SigLIP tower + MLP in front of a Qwen2 decoder, with
"anyres" images (a base view plus grid tiles chosen from `image_grid_pinpoints`, unpadded to the
image's aspect ratio, a newline embedding after each row). The tiny build allows one 56x56 grid.
Its stock processor builds a video processor (torchvision)."""

from __future__ import annotations

from typing import Any

from ostselect.proxy.arches import CHATML_TEMPLATE, IMAGE_PX, PATCH, text_config, vision_config
from ostselect.proxy.families.registry import Family, TinySpec, register_family


def _config(t: dict[str, int], v: dict[str, int], ids: dict[str, int]) -> Any:
    from transformers import LlavaOnevisionConfig

    return LlavaOnevisionConfig(
        vision_config=vision_config(v, model_type="siglip_vision_model"),
        text_config=dict(model_type="qwen2", **text_config(t, ids)),
        image_token_index=ids["image"],
        video_token_index=ids["video"],
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_grid_pinpoints=[[IMAGE_PX, IMAGE_PX]],
        tie_word_embeddings=False,
    )


def _processor(tokenizer: Any, chat_template: str, image_pixels: int | None) -> Any:
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    from ostselect.proxy.processors import build_processor

    image_processor = LlavaOnevisionImageProcessorPil(
        size={"height": IMAGE_PX, "width": IMAGE_PX},
        image_grid_pinpoints=[[IMAGE_PX, IMAGE_PX]],
    )
    return build_processor(
        "LlavaOnevisionProcessor",
        "LlavaOnevisionVideoProcessor",
        image_processor=image_processor,
        tokenizer=tokenizer,
        num_image_tokens=(IMAGE_PX // PATCH) ** 2,
        vision_feature_select_strategy="full",
        chat_template=chat_template,
    )


register_family(
    Family(
        name="llava-onevision",
        model_types=("llava_onevision",),
        processor_class="LlavaOnevisionProcessor",
        video_processor_class="LlavaOnevisionVideoProcessor",
        tiny=TinySpec(
            special_tokens=("<|endoftext|>", "<|im_end|>", "<|im_start|>", "<image>", "<video>"),
            eos="<|im_end|>",
            pad="<|endoftext|>",
            image_token="<image>",
            chat_template=CHATML_TEMPLATE,
            config_tokens={"video": "<video>"},
            build_config=_config,
            build_processor=_processor,
        ),
        notes="ChatML with `<image>` placeholders; an image's token count depends on its size "
        "(anyres grid + newlines), which the processor computes.",
    )
)
