"""Qwen3-VL (`qwen3_vl`): a Qwen3 decoder (QK-norm, interleaved 3-D rotary) under a ViT with
16-px patches whose intermediate layers are also merged and *added* to the decoder's hidden states
at the image positions after its first layers ("deepstack"). The cached-prefix loss must add those
back after each tail layer: `layer_residuals` hands them over as dense [n, B, L, H] tensors (zero
off the image positions, so the sum is exactly HF's masked update). The stock processor builds a
video processor (torchvision)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ostselect.proxy.arches import text_config
from ostselect.proxy.families.qwen2_vl import (
    QWEN_COMPACT_TEMPLATE,
    qwen_processor,
    qwen_tiny,
    qwen_vision_ids,
)
from ostselect.proxy.families.registry import Family, register_family

PATCH16 = 16
IMAGE_PX16 = 64  # 4x4 patches of 16 px, merged 2x2: 4 image tokens, as the 56-px families have


def deepstack_residuals(text_kwargs: Mapping[str, Any], hidden: Any) -> Any:
    """Qwen3-VL's deepstack features as [n, B, L, H] addends (None without images)."""
    embeds = text_kwargs.get("deepstack_visual_embeds")
    mask = text_kwargs.get("visual_pos_masks")
    if not embeds or mask is None:
        return None
    out = hidden.new_zeros(len(embeds), *hidden.shape)
    for i, features in enumerate(embeds):
        out[i][mask.to(hidden.device)] = features.to(hidden.device, hidden.dtype)
    return out


def _config(t: dict[str, int], v: dict[str, int], ids: dict[str, int]) -> Any:
    from transformers import Qwen3VLConfig

    text = text_config(t, ids, mrope=True)
    text["rope_parameters"]["mrope_interleaved"] = True
    text["head_dim"] = t["hidden"] // t["heads"]
    return Qwen3VLConfig(
        text_config=text,
        vision_config=dict(
            depth=v["layers"],
            hidden_size=v["hidden"],
            intermediate_size=v["intermediate"],
            num_heads=v["heads"],
            out_hidden_size=t["hidden"],
            patch_size=PATCH16,
            spatial_merge_size=2,
            temporal_patch_size=2,
            num_position_embeddings=(IMAGE_PX16 // PATCH16) ** 2,
            # every vision layer feeds a decoder layer: layers 0..depth-1 get deepstack features
            deepstack_visual_indexes=list(range(v["layers"])),
        ),
        **qwen_vision_ids(ids),
        tie_word_embeddings=False,
    )


register_family(
    Family(
        name="qwen3-vl",
        model_types=("qwen3_vl",),
        processor_class="Qwen3VLProcessor",
        video_processor_class="Qwen3VLVideoProcessor",
        layer_residuals=deepstack_residuals,
        tiny=qwen_tiny(
            _config,
            qwen_processor(
                "Qwen3VLProcessor", "Qwen3VLVideoProcessor", patch=PATCH16, pixels=IMAGE_PX16**2
            ),
            chat_template=QWEN_COMPACT_TEMPLATE,
            compact_template=None,
        ),
        notes="ChatML without a default system prompt (Instruct). The Thinking checkpoints' "
        "template drops earlier turns' `<think>` blocks, so a conversation does not render "
        "prefix-stably: collation refuses such samples with a `CollateError` naming the sample "
        "and turn (see tests/test_families.py).",
    )
)
