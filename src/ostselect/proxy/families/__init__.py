"""Model families ostselect knows, one file each; see `registry` for what a family says.

Importing this package registers the built-in families (cheap: no torch, no transformers). A user or
a test adds one with `register_family(Family(...))` from any module; `get_family`,
`family_for_model_type` and `family_names` are how the rest of ostselect reads the registry.
"""

from __future__ import annotations

from ostselect.proxy.families.registry import (
    DEFAULT_LORA_TARGETS,
    Family,
    TinySpec,
    register_family,
    register_unsupported,
    registered,
    unregister_family,
    unsupported,
)

__all__ = [
    "DEFAULT_LORA_TARGETS",
    "Family",
    "TinySpec",
    "UnknownFamilyError",
    "buildable_names",
    "family_for_model_type",
    "family_names",
    "get_family",
    "register_family",
    "register_unsupported",
    "unregister_family",
]


# Built-in families, one module each, in the order `--arch` lists them.
BUILTIN_MODULES = (
    "qwen2_vl",
    "qwen2_5_vl",
    "llava",
    "idefics3",
    "internvl",
    "smolvlm",
    "llava_onevision",
    "qwen3_vl",
    "gemma3",  # registers only the reason it is unsupported
)


def _register_builtins() -> None:
    import importlib

    for module in BUILTIN_MODULES:
        importlib.import_module(f"{__name__}.{module}")


_register_builtins()


class UnknownFamilyError(ValueError):
    """An `--arch` name that is not registered (the message lists the ones that are)."""


def family_names() -> tuple[str, ...]:
    """Registered family names, in registration order."""
    return tuple(registered())


def buildable_names() -> tuple[str, ...]:
    """Families `ost proxy init --arch` can build offline (those with a tiny spec)."""
    return tuple(name for name, f in registered().items() if f.tiny is not None)


def get_family(name: str) -> Family:
    """The family called `name`; an unsupported or unknown name raises with the reason."""
    family = registered().get(name)
    if family is not None:
        return family
    reason = unsupported().get(name)
    if reason is not None:
        raise UnknownFamilyError(f"--arch {name} is not supported here: {reason}")
    raise UnknownFamilyError(f"--arch must be one of {', '.join(buildable_names())}, not {name!r}")


def family_for_model_type(model_type: str) -> Family | None:
    """The family registered for an HF `config.model_type`, or None (generic discovery then)."""
    from ostselect.proxy.families.registry import _BY_MODEL_TYPE

    return _BY_MODEL_TYPE.get(model_type)
