"""LLaVA (`llava`): a CLIP vision tower + MLP projector in front of a Llama-style decoder; each
`<image>` token expands to one token per patch. No video processor."""

from __future__ import annotations

from typing import Any

from ostselect.proxy.arches import CONTENT_MACRO, IMAGE_PX, PATCH, text_config, vision_config
from ostselect.proxy.families.registry import Family, TinySpec, register_family

LLAVA_TEMPLATE = CONTENT_MACRO + (
    "<s>"
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ render(m['content'], '<image>') }}\n"
    "{% elif m['role'] == 'user' %}USER: {{ render(m['content'], '<image>') }}\n"
    "{% else %}ASSISTANT: {{ render(m['content'], '<image>') }}</s>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def clip_vision_config(v: dict[str, int]) -> Any:
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(**vision_config(v, projection_dim=v["hidden"]))


def llava_config(v: dict[str, int], text: Any, image_id: int, *, tie: bool = False) -> Any:
    """A LLaVA config: the tiny CLIP tower `v` (`arches.VISION_SIZES`) before the decoder `text`
    (a config or its dict), one token per patch. Also what `ost proxy init --lm` builds on."""
    from transformers import LlavaConfig

    return LlavaConfig(
        vision_config=clip_vision_config(v),
        text_config=text,
        image_token_index=image_id,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        image_seq_length=(IMAGE_PX // PATCH) ** 2,
        tie_word_embeddings=tie,
    )


def _config(t: dict[str, int], v: dict[str, int], ids: dict[str, int]) -> Any:
    from transformers import LlamaConfig

    return llava_config(v, LlamaConfig(**text_config(t, ids)), ids["image"])


def llava_processor(tokenizer: Any, chat_template: str, image_pixels: int | None = None) -> Any:
    """The LLaVA processor for the tiny CLIP tower (image-only where the stock one needs more)."""
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from ostselect.proxy.processors import build_processor

    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_PX}, crop_size={"height": IMAGE_PX, "width": IMAGE_PX}
    )
    return build_processor(
        "LlavaProcessor",
        None,
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=chat_template,
    )


register_family(
    Family(
        name="llava",
        model_types=("llava",),
        processor_class="LlavaProcessor",
        tiny=TinySpec(
            special_tokens=("<pad>", "</s>", "<s>", "<unk>", "<image>"),
            bos="<s>",
            eos="</s>",
            pad="<pad>",
            image_token="<image>",
            chat_template=LLAVA_TEMPLATE,
            build_config=_config,
            build_processor=llava_processor,
        ),
        notes="Vicuna-style USER:/ASSISTANT: template; `</s>` ends an answer and is learned.",
    )
)
