"""SmolVLM (`smolvlm`): Idefics3's layout (SigLIP tower, pixel-shuffle connector, Llama decoder,
`<fake_token_around_image><global-img><image>...` images) with SmolLM2 decoders. Its stock
processor builds a video processor (torchvision) and needs the `num2words` package."""

from __future__ import annotations

from typing import Any

from ostselect.proxy.families.idefics3 import (
    IDEFICS3_SPECIALS,
    IDEFICS3_TEMPLATE,
    idefics3_like_config,
    idefics3_like_processor,
)
from ostselect.proxy.families.registry import Family, TinySpec, register_family


def _config(t: dict[str, int], v: dict[str, int], ids: dict[str, int]) -> Any:
    from transformers import SmolVLMConfig

    return idefics3_like_config(SmolVLMConfig, t, v, ids)


def _processor(tokenizer: Any, chat_template: str, image_pixels: int | None) -> Any:
    from transformers.models.smolvlm.image_processing_pil_smolvlm import (
        SmolVLMImageProcessorPil,
    )

    return idefics3_like_processor(
        SmolVLMImageProcessorPil,
        "SmolVLMProcessor",
        "SmolVLMVideoProcessor",
        tokenizer,
        chat_template,
    )


register_family(
    Family(
        name="smolvlm",
        model_types=("smolvlm",),
        processor_class="SmolVLMProcessor",
        video_processor_class="SmolVLMVideoProcessor",
        tiny=TinySpec(
            special_tokens=(*IDEFICS3_SPECIALS, "<video>"),
            bos="<|im_start|>",
            eos="<end_of_utterance>",
            pad="<|endoftext|>",
            image_token="<image>",
            chat_template=IDEFICS3_TEMPLATE,
            build_config=_config,
            build_processor=_processor,
        ),
        notes="Idefics3's `User:`/`Assistant:` template ended by `<end_of_utterance>`; the stock "
        "processor needs `num2words` (a dependency of ostselect).",
    )
)
