"""Shared pieces of the tiny offline proxies: sizes, image geometry, chat templates and the
decoder config every family's tiny build starts from.

What is specific to one family (special tokens, config class, processor) lives in that family's
file under `ostselect.proxy.families`; a loaded proxy discovers everything else from the model
itself, so user checkpoints of these families work unchanged.
"""

from __future__ import annotations

from typing import Any

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

# The macro every tiny template renders message content with. Content may be a string or an
# HF content list ({"type": "image"} / {"type": "text", "text": ...}).
CONTENT_MACRO = (
    "{% macro render(content, image) %}"
    "{% if content is string %}{{ content }}"
    "{% else %}{% for c in content %}"
    "{% if c['type'] == 'image' %}{{ image }}{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% endmacro %}"
)

# ChatML for a real LM under a vision tower (SmolLM2 speaks ChatML); no default system prompt.
CHATML_TEMPLATE = CONTENT_MACRO + (
    "{% for m in messages %}"
    "<|im_start|>{{ m['role'] }}\n{{ render(m['content'], '<image>') }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def vision_config(v: dict[str, int], **extra: Any) -> dict[str, Any]:
    """A ViT-style vision config dict (CLIP, SigLIP, InternViT names) of widths `v` on the tiny
    proxies' IMAGE_PX images and PATCH patches; `extra` adds or overrides keys."""
    widths = dict(
        hidden_size=v["hidden"],
        intermediate_size=v["intermediate"],
        num_hidden_layers=v["layers"],
        num_attention_heads=v["heads"],
        image_size=IMAGE_PX,
        patch_size=PATCH,
    )
    return {**widths, **extra}


def text_config(t: dict[str, int], ids: dict[str, int], *, mrope: bool = False) -> dict[str, Any]:
    """A Llama/Qwen2-style decoder config dict of widths `t` with the tokenizer's ids."""
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
