"""Image-only Qwen2-VL / Qwen2.5-VL processors.

The stock processors always build a video processor, which needs torchvision (not installed here).
These subclasses skip the video part; they must also be the class used to *reload* the saved
processor, because `AutoProcessor` on such a folder tries the video processor again.
"""

from __future__ import annotations

from pathlib import Path

from transformers import Qwen2_5_VLProcessor, Qwen2VLProcessor


class Qwen2VLImageOnlyProcessor(Qwen2VLProcessor):
    """`Qwen2VLProcessor` without the video processor (images and text only)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        kwargs.pop("video_processor", None)
        super().__init__(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=None,
            chat_template=chat_template,
            **kwargs,
        )


class Qwen2_5_VLImageOnlyProcessor(Qwen2_5_VLProcessor):
    """`Qwen2_5_VLProcessor` without the video processor (images and text only)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        kwargs.pop("video_processor", None)
        super().__init__(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=None,
            chat_template=chat_template,
            **kwargs,
        )


IMAGE_ONLY_PROCESSORS = {
    "qwen2_vl": Qwen2VLImageOnlyProcessor,
    "qwen2_5_vl": Qwen2_5_VLImageOnlyProcessor,
}


def load_processor(path: str | Path, model_type: str):
    """The processor for a checkpoint folder, avoiding the torchvision-only classes."""
    cls = IMAGE_ONLY_PROCESSORS.get(model_type)
    if cls is not None:
        return cls.from_pretrained(str(path))
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(str(path))
