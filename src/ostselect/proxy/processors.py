"""Loading processors, with image-only stand-ins where the video processor cannot be built.

Several stock processors (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, InternVL, SmolVLM, LLaVA-OneVision)
always build a video processor, which needs torchvision. Where torchvision is missing, ostselect
loads an image-only subclass instead; the choice is made at load time only. A saved folder still
names the stock processor class and carries a video-processor config, so plain
`AutoProcessor.from_pretrained(folder)` builds the stock processor wherever torchvision is
installed (and says torchvision is missing elsewhere, rather than silently returning a tokenizer).
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
from pathlib import Path
from typing import Any

_MISSING: Any = object()


class NoVideoProcessor:
    """Stands where an image-only processor's video processor would be: the stock code reads
    defaults such as `num_frames` from it (None here); anything else says why there is none."""

    num_frames = None
    fps = None

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(  # an AttributeError: transformers probes with getattr(..., None)
            f"this processor is image-only (torchvision is missing), so it has no video "
            f"processor to read {name!r} from; install torchvision to process videos"
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise ImportError("this processor is image-only: install torchvision to process videos")


_NO_VIDEO = NoVideoProcessor()


def torchvision_available() -> bool:
    """True when torchvision can be imported (the stock video processors need it)."""
    return importlib.util.find_spec("torchvision") is not None


@functools.cache
def image_only_class(base_name: str, video_processor_class: str) -> type:
    """A subclass of the transformers processor `base_name` without its video processor.

    It keeps the base's class name and every other `__init__` argument (transformers reads both
    when saving and reloading), saves `processor_class: base_name`, and writes a
    `video_processor_class` config mirroring the image processor's settings, so the folder is a
    stock one.
    """
    import transformers

    base = getattr(transformers, base_name)
    params = inspect.signature(base.__init__).parameters
    names = [
        n
        for n, p in params.items()
        if n not in ("self", "video_processor")
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    # transformers passes saved settings by the names in `__init__.__code__`: spell them out
    arglist = ", ".join(f"{n}=_MISSING" for n in names)
    given = ", ".join(f"{n!r}: {n}" for n in names)
    source = (
        f"def __init__(self, {arglist}, **kwargs):\n"
        f"    given = {{k: v for k, v in {{{given}}}.items() if v is not _MISSING}}\n"
        "    kwargs.pop('video_processor', None)\n"
        "    base.__init__(self, video_processor=None, **given, **kwargs)\n"
    )
    namespace: dict[str, Any] = {"base": base, "_MISSING": _MISSING}
    exec(source, namespace)  # a fixed template over the base's parameter names

    def to_dict(self) -> dict[str, Any]:
        out = base.to_dict(self)
        out["processor_class"] = base_name
        image = out.get("image_processor")
        video = {k: v for k, v in (image or {}).items() if k != "image_processor_type"}
        out["video_processor"] = {"video_processor_type": video_processor_class, **video}
        return out

    cls = type(
        base_name,
        (base,),
        {
            "__init__": namespace["__init__"],
            "to_dict": to_dict,
            "video_processor": _NO_VIDEO,
            "__module__": __name__,
            "__qualname__": f"image_only({base_name})",
            "__doc__": f"`{base_name}` without the video processor (images and text only).",
        },
    )
    return cls


def load_processor(path: str | Path, model_type: str) -> Any:
    """The processor of a checkpoint folder: the registered family's stock class, or its
    image-only stand-in where torchvision is missing; `AutoProcessor` for other families."""
    import transformers

    from ostselect.proxy.families import family_for_model_type

    family = family_for_model_type(model_type)
    if family is None or family.processor_class is None:
        return transformers.AutoProcessor.from_pretrained(str(path))
    if family.video_processor_class is not None and not torchvision_available():
        cls = image_only_class(family.processor_class, family.video_processor_class)
        return cls.from_pretrained(str(path))
    try:
        return getattr(transformers, family.processor_class).from_pretrained(str(path))
    except OSError:  # a folder saved before it carried a video-processor config
        if family.video_processor_class is None:
            raise
        cls = image_only_class(family.processor_class, family.video_processor_class)
        return cls.from_pretrained(str(path))


def build_processor(processor_class: str, video_processor_class: str | None, **parts: Any) -> Any:
    """A new processor for the tiny builders. With a video part it is the image-only stand-in even
    where torchvision exists: the folder it saves is the stock one either way."""
    import transformers

    if video_processor_class is not None:
        return image_only_class(processor_class, video_processor_class)(**parts)
    return getattr(transformers, processor_class)(**parts)
