"""The family registry: what ostselect must know about one kind of Hugging Face VLM.

A loaded proxy discovers most things from the model itself (text model, layers, image token), so a
user checkpoint of an unregistered family often works unchanged; a `Family` records what cannot be
discovered (which processor class to save and how to load it without torchvision, LoRA targets,
chat-template quirks) and how to build a tiny random one offline for `ost proxy init --arch`.

Families register themselves, data-juicer style, one file each under `ostselect.proxy.families`:

    register_family(Family(name="my-vlm", model_types=("my_vlm",), ...))

Nothing here imports torch or transformers: `ost proxy init --help` lists the registry cheaply.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Projection names of Llama/Qwen-style decoder layers (every family we build, and most user VLMs).
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class TinySpec:
    """How to build a tiny random member of a family offline (tokenizer, config, processor).

    `build_config(text, vision, ids)` takes the widths of `arches.TEXT_SIZES` / `VISION_SIZES` and
    the token ids named by `eos`, `pad`, `image_token`, `bos` and `config_tokens`;
    `build_processor(tokenizer, chat_template, image_pixels)` returns the processor (image-only
    where the stock one needs torchvision). `image_pixels` (None: the family's default) is honoured
    only when `free_image_size`, i.e. the processor keeps any image area as is (Qwen's dynamic
    resolution), which the benchmark uses for its 84x28 canvases.
    """

    special_tokens: tuple[str, ...]  # get ids 0..n-1, in this order
    eos: str  # the end of an assistant turn (supervised, like the answer)
    pad: str
    image_token: str
    chat_template: str
    build_config: Callable[[dict[str, int], dict[str, int], dict[str, int]], Any]
    build_processor: Callable[[Any, str, int | None], Any]
    bos: str | None = None
    config_tokens: Mapping[str, str] = field(default_factory=dict)  # id name -> token
    tokenizer_attrs: Mapping[str, str] = field(default_factory=dict)  # e.g. boi_token -> "<boi>"
    compact_template: str | None = None  # same format without a default system prompt
    free_image_size: bool = False

    def token_ids(self, tokenizer: Any) -> dict[str, int]:
        """The ids `build_config` needs, looked up in the trained tokenizer."""
        conv = tokenizer.convert_tokens_to_ids
        ids = {"eos": conv(self.eos), "pad": conv(self.pad), "image": conv(self.image_token)}
        if self.bos:
            ids["bos"] = conv(self.bos)
        ids.update({name: conv(token) for name, token in self.config_tokens.items()})
        return ids


@dataclass(frozen=True)
class Family:
    """One VLM family, keyed by the HF `model_type`s it covers.

    `processor_class` is the stock transformers processor a saved folder names (so plain
    `AutoProcessor` reloads it); when `video_processor_class` is set that processor also builds a
    video processor, which needs torchvision, and ostselect loads an image-only subclass instead
    wherever torchvision is missing. `find_text_model` / `image_token_id` override the generic
    discovery; `layer_residuals` names what the family adds to the hidden states between
    decoder layers (Qwen3-VL's deepstack), which the cached-prefix loss must add back.
    """

    name: str  # the `--arch` name
    model_types: tuple[str, ...]
    processor_class: str | None = None
    video_processor_class: str | None = None
    lora_targets: tuple[str, ...] = DEFAULT_LORA_TARGETS
    tiny: TinySpec | None = None
    find_text_model: Callable[[Any], Any] | None = None
    image_token_id: Callable[[Any], int | None] | None = None
    layer_residuals: Callable[[Mapping[str, Any], Any], Any] | None = None
    notes: str = ""  # chat-template and other quirks, for docs/families.md


_FAMILIES: dict[str, Family] = {}
_BY_MODEL_TYPE: dict[str, Family] = {}
# `--arch` names ostselect knows but cannot support with the installed transformers: name -> why
_UNSUPPORTED: dict[str, str] = {}


def register_family(family: Family, *, replace: bool = False) -> Family:
    """Add `family` to the registry (by name and by each model_type) and return it.

    Registering a name or model_type twice is an error unless `replace` (tests, user overrides).
    """
    if not replace:
        taken = [family.name] if family.name in _FAMILIES else []
        taken += [t for t in family.model_types if t in _BY_MODEL_TYPE]
        if taken:
            raise ValueError(f"family {family.name!r}: {', '.join(taken)} already registered")
    _FAMILIES[family.name] = family
    for model_type in family.model_types:
        _BY_MODEL_TYPE[model_type] = family
    _UNSUPPORTED.pop(family.name, None)
    return family


def unregister_family(name: str) -> None:
    """Remove a family (tests that register a toy one clean up with this)."""
    family = _FAMILIES.pop(name, None)
    if family is not None:
        for model_type in family.model_types:
            if _BY_MODEL_TYPE.get(model_type) is family:
                del _BY_MODEL_TYPE[model_type]


def register_unsupported(name: str, reason: str) -> None:
    """Record an `--arch` name that cannot work here, with the one-line reason users see."""
    if name not in _FAMILIES:
        _UNSUPPORTED[name] = reason


def registered() -> dict[str, Family]:
    return dict(_FAMILIES)


def unsupported() -> dict[str, str]:
    return dict(_UNSUPPORTED)
