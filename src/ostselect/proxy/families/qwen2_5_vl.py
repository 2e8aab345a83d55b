"""Qwen2.5-VL (`qwen2_5_vl`): Qwen2-VL with a windowed-attention ViT (RMSNorm, SwiGLU); same
tokens, template and processor layout as Qwen2-VL."""

from __future__ import annotations

from typing import Any

from ostselect.proxy.arches import IMAGE_PX, PATCH, text_config
from ostselect.proxy.families.qwen2_vl import (
    qwen_processor,
    qwen_tiny,
    qwen_vision_ids,
)
from ostselect.proxy.families.registry import Family, register_family


def _config(t: dict[str, int], v: dict[str, int], ids: dict[str, int]) -> Any:
    from transformers import Qwen2_5_VLConfig

    return Qwen2_5_VLConfig(
        text_config=text_config(t, ids, mrope=True),
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
        **qwen_vision_ids(ids),
        tie_word_embeddings=False,
    )


register_family(
    Family(
        name="qwen2.5-vl",
        model_types=("qwen2_5_vl",),
        processor_class="Qwen2_5_VLProcessor",
        video_processor_class="Qwen2VLVideoProcessor",
        tiny=qwen_tiny(_config, qwen_processor("Qwen2_5_VLProcessor", "Qwen2VLVideoProcessor")),
        notes="As Qwen2-VL.",
    )
)
