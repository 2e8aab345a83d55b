"""Per-architecture facts for the tiny offline proxies: special tokens, chat template, configs,
processors.

Only `build.py` and `processors.py` need these; a loaded proxy discovers everything else from the
model itself (text model, layers, image token), so user checkpoints of these families work
unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ARCHES = ("qwen2-vl", "qwen2.5-vl", "llava", "idefics3")
SIZES = ("tiny", "small")

# Language-model widths: "tiny" keeps forward+backward of 8 samples far under a second on CPU;
# "small" (~20M parameters) is big enough for speed benchmarks to mean something.
TEXT_SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(hidden=64, layers=4, heads=4, kv_heads=2, intermediate=128, vocab=1024),
    "small": dict(hidden=384, layers=10, heads=6, kv_heads=2, intermediate=1024, vocab=4096),
}
VISION_SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(hidden=32, layers=2, heads=2, intermediate=64),
    "small": dict(hidden=96, layers=3, heads=4, intermediate=192),
}
IMAGE_PX = 56  # every tiny proxy sees 56x56 images (4 image tokens for Qwen/Idefics3, 16 for LLaVA)
PATCH = 14

# Content may be a string or an HF content list ({"type": "image"} / {"type": "text", "text": ...}).
_CONTENT = (
    "{% macro render(content, image) %}"
    "{% if content is string %}{{ content }}"
    "{% else %}{% for c in content %}"
    "{% if c['type'] == 'image' %}{{ image }}{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% endmacro %}"
)

QWEN_TEMPLATE = _CONTENT + (
    "{% for m in messages %}"
    "{% if loop.first and m['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ m['role'] }}\n"
    "{{ render(m['content'], '<|vision_start|><|image_pad|><|vision_end|>') }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

LLAVA_TEMPLATE = _CONTENT + (
    "<s>"
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ render(m['content'], '<image>') }}\n"
    "{% elif m['role'] == 'user' %}USER: {{ render(m['content'], '<image>') }}\n"
    "{% else %}ASSISTANT: {{ render(m['content'], '<image>') }}</s>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

IDEFICS3_TEMPLATE = _CONTENT + (
    "<|im_start|>"
    "{% for m in messages %}"
    "{{ m['role'] | capitalize }}:{{ render(m['content'], '<image>') }}<end_of_utterance>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)

# ChatML for a real LM under a vision tower (SmolLM2 speaks ChatML); no default system prompt.
CHATML_TEMPLATE = _CONTENT + (
    "{% for m in messages %}"
    "<|im_start|>{{ m['role'] }}\n{{ render(m['content'], '<image>') }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class ArchSpec:
    """What the tiny builder needs to know about one architecture family."""

    name: str
    special_tokens: tuple[str, ...]  # first is padding, second the end of a turn
    bos: str | None
    eos: str
    pad: str
    image_token: str
    chat_template: str
    build_config: Callable[[dict[str, int], dict[str, int], dict[str, int]], Any]
    build_processor: Callable[[Any, str], Any]


def _text_config(t: dict[str, int], ids: dict[str, int], *, mrope: bool = False) -> dict[str, Any]:
    head_dim = t["hidden"] // t["heads"]
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": 10000.0}
    if mrope:  # Qwen2-VL's 3-D rotary: sections sum to head_dim / 2
        half = head_dim // 2
        a = half // 4
        rope["mrope_section"] = [a, (half - a) // 2, half - a - (half - a) // 2]
    return dict(
        vocab_size=t["vocab"],
        hidden_size=t["hidden"],
        intermediate_size=t["intermediate"],
        num_hidden_layers=t["layers"],
        num_attention_heads=t["heads"],
        num_key_value_heads=t["kv_heads"],
        max_position_embeddings=4096,
        rope_parameters=rope,
        bos_token_id=ids.get("bos"),
        eos_token_id=ids["eos"],
        pad_token_id=ids["pad"],
        tie_word_embeddings=False,
    )


def _qwen2_vl_config(t, v, ids):
    from transformers import Qwen2VLConfig

    return Qwen2VLConfig(
        text_config=_text_config(t, ids, mrope=True),
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
        image_token_id=ids["image"],
        video_token_id=ids["video"],
        vision_start_token_id=ids["vision_start"],
        vision_end_token_id=ids["vision_end"],
        tie_word_embeddings=False,
    )


def _qwen2_5_vl_config(t, v, ids):
    from transformers import Qwen2_5_VLConfig

    return Qwen2_5_VLConfig(
        text_config=_text_config(t, ids, mrope=True),
        vision_config=dict(
            depth=v["layers"],
            hidden_size=v["hidden"],
            intermediate_size=v["intermediate"],
            num_heads=v["heads"],
            out_hidden_size=t["hidden"],
            patch_size=PATCH,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=IMAGE_PX,
            fullatt_block_indexes=[v["layers"] - 1],
        ),
        image_token_id=ids["image"],
        video_token_id=ids["video"],
        vision_start_token_id=ids["vision_start"],
        vision_end_token_id=ids["vision_end"],
        tie_word_embeddings=False,
    )


def _qwen_processor(tokenizer, chat_template, *, qwen25: bool = False):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    from ostselect.proxy.processors import Qwen2_5_VLImageOnlyProcessor, Qwen2VLImageOnlyProcessor

    px = IMAGE_PX * IMAGE_PX
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=px, max_pixels=px, patch_size=PATCH, merge_size=2, temporal_patch_size=2
    )
    cls = Qwen2_5_VLImageOnlyProcessor if qwen25 else Qwen2VLImageOnlyProcessor
    return cls(image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template)


def _llava_config(t, v, ids):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    return LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=v["hidden"],
            intermediate_size=v["intermediate"],
            num_hidden_layers=v["layers"],
            num_attention_heads=v["heads"],
            image_size=IMAGE_PX,
            patch_size=PATCH,
            projection_dim=v["hidden"],
        ),
        text_config=LlamaConfig(**_text_config(t, ids)),
        image_token_index=ids["image"],
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        image_seq_length=(IMAGE_PX // PATCH) ** 2,
        tie_word_embeddings=False,
    )


def _llava_processor(tokenizer, chat_template):
    from transformers import LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_PX}, crop_size={"height": IMAGE_PX, "width": IMAGE_PX}
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=chat_template,
    )


def _idefics3_config(t, v, ids):
    from transformers import Idefics3Config, LlamaConfig

    return Idefics3Config(
        vision_config=dict(
            hidden_size=v["hidden"],
            intermediate_size=v["intermediate"],
            num_hidden_layers=v["layers"],
            num_attention_heads=v["heads"],
            image_size=IMAGE_PX,
            patch_size=PATCH,
        ),
        text_config=LlamaConfig(**_text_config(t, ids)),
        image_token_id=ids["image"],
        scale_factor=2,
        pad_token_id=ids["pad"],
        tie_word_embeddings=False,
    )


def _idefics3_processor(tokenizer, chat_template):
    from transformers import Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import (
        Idefics3ImageProcessorPil,
    )

    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=False,
        size={"longest_edge": IMAGE_PX},
        max_image_size={"longest_edge": IMAGE_PX},
    )
    seq_len = (IMAGE_PX // PATCH) ** 2 // 4  # scale_factor 2 merges 2x2 patches
    return Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=seq_len,
        chat_template=chat_template,
    )


_QWEN_SPECIALS = (
    "<|endoftext|>",
    "<|im_end|>",
    "<|im_start|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

SPECS: dict[str, ArchSpec] = {
    "qwen2-vl": ArchSpec(
        "qwen2-vl",
        _QWEN_SPECIALS,
        None,
        "<|im_end|>",
        "<|endoftext|>",
        "<|image_pad|>",
        QWEN_TEMPLATE,
        _qwen2_vl_config,
        _qwen_processor,
    ),
    "qwen2.5-vl": ArchSpec(
        "qwen2.5-vl",
        _QWEN_SPECIALS,
        None,
        "<|im_end|>",
        "<|endoftext|>",
        "<|image_pad|>",
        QWEN_TEMPLATE,
        _qwen2_5_vl_config,
        lambda tok, tpl: _qwen_processor(tok, tpl, qwen25=True),
    ),
    "llava": ArchSpec(
        "llava",
        ("<pad>", "</s>", "<s>", "<unk>", "<image>"),
        "<s>",
        "</s>",
        "<pad>",
        "<image>",
        LLAVA_TEMPLATE,
        _llava_config,
        _llava_processor,
    ),
    "idefics3": ArchSpec(
        "idefics3",
        (
            "<|endoftext|>",
            "<end_of_utterance>",
            "<|im_start|>",
            "<fake_token_around_image>",
            "<image>",
            "<global-img>",
            *(f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)),
        ),
        "<|im_start|>",
        "<end_of_utterance>",
        "<|endoftext|>",
        "<image>",
        IDEFICS3_TEMPLATE,
        _idefics3_config,
        _idefics3_processor,
    ),
}


def token_ids(tokenizer, spec: ArchSpec) -> dict[str, int]:
    """The ids a config needs, looked up in the trained tokenizer."""
    conv = tokenizer.convert_tokens_to_ids
    ids = {"eos": conv(spec.eos), "pad": conv(spec.pad), "image": conv(spec.image_token)}
    if spec.bos:
        ids["bos"] = conv(spec.bos)
    if spec.name.startswith("qwen"):
        ids |= {
            "video": conv("<|video_pad|>"),
            "vision_start": conv("<|vision_start|>"),
            "vision_end": conv("<|vision_end|>"),
        }
    return ids
