"""The family registry: a family is one `register_family` call (here a toy LLaVA-NeXT family
added from this test module scores like a built-in one); saved folders name stock processor
classes, so plain transformers (without ostselect imported) reloads them; unsupported names and
non-prefix-stable chat templates fail with a clear message."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ostselect.cli import app
from ostselect.proxy import build_tiny_proxy, load_proxy
from ostselect.proxy.arches import IMAGE_PX, PATCH, text_config
from ostselect.proxy.collate import CollateError
from ostselect.proxy.families import (
    Family,
    TinySpec,
    buildable_names,
    get_family,
    register_family,
    unregister_family,
)
from ostselect.proxy.families.llava import LLAVA_TEMPLATE, clip_vision_config
from ostselect.proxy.processors import torchvision_available
from ostselect.proxy.toy import toy_samples, word_samples
from ostselect.scoring import ScoreConfig, score


def _llava_next_config(t, v, ids):
    from transformers import LlamaConfig, LlavaNextConfig

    return LlavaNextConfig(
        vision_config=clip_vision_config(v),
        text_config=LlamaConfig(**text_config(t, ids)),
        image_token_index=ids["image"],
        image_grid_pinpoints=[[IMAGE_PX, IMAGE_PX]],
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        tie_word_embeddings=False,
    )


def _llava_next_processor(tokenizer, chat_template, image_pixels):
    from transformers import LlavaNextProcessor
    from transformers.models.llava_next.image_processing_pil_llava_next import (
        LlavaNextImageProcessorPil,
    )

    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": IMAGE_PX},
        crop_size={"height": IMAGE_PX, "width": IMAGE_PX},
        image_grid_pinpoints=[[IMAGE_PX, IMAGE_PX]],
    )
    return LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=chat_template,
    )


TOY = Family(
    name="toy-llava-next",
    model_types=("llava_next",),
    processor_class="LlavaNextProcessor",
    lora_targets=("q_proj", "v_proj"),
    tiny=TinySpec(
        special_tokens=("<pad>", "</s>", "<s>", "<unk>", "<image>"),
        bos="<s>",
        eos="</s>",
        pad="<pad>",
        image_token="<image>",
        chat_template=LLAVA_TEMPLATE,
        build_config=_llava_next_config,
        build_processor=_llava_next_processor,
    ),
)


@pytest.fixture
def toy_family():
    register_family(TOY)
    yield TOY
    unregister_family(TOY.name)


def test_a_family_added_from_a_test_module_builds_loads_and_scores(toy_family, tmp_path):
    folder = build_tiny_proxy(tmp_path / "toy", arch=toy_family.name)
    proxy = load_proxy(folder, dtype="float64", params="lora")
    assert proxy.arch == toy_family.name  # found by the folder's model_type
    names = list(proxy.trainable_parameters())
    assert names and all("q_proj" in n or "v_proj" in n for n in names)  # the family's targets
    with torch.no_grad():  # fresh LoRA B is zero: move it so the step depends on it
        gen = torch.Generator().manual_seed(0)
        for t in proxy.trainable_parameters().values():
            t.add_(0.05 * torch.randn(t.shape, generator=gen, dtype=t.dtype))
    pool = list(word_samples(3, "p", 1, answer_words=(2, 6)))
    anchors = list(word_samples(4, "a", 2, answer_words=(2, 6)))
    cfg = dict(optimizer="sgd", eta=0.05)
    exact = score(pool, anchors, proxy, ScoreConfig(mode="exact", batch_size=2, **cfg))
    naive = score(pool, anchors, proxy, ScoreConfig(mode="naive", **cfg))
    ue = exact.column("utility").to_numpy(zero_copy_only=False)
    un = naive.column("utility").to_numpy(zero_copy_only=False)
    assert np.abs(ue).max() > 1e-6
    assert np.abs(ue - un).max() <= 1e-12 * np.abs(ue).max()


def test_registry_names_are_unique(toy_family):
    with pytest.raises(ValueError, match="already registered"):
        register_family(TOY)


def test_init_help_lists_the_registry_and_unsupported_names_say_why(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["proxy", "init", "--help"], terminal_width=400)
    for name in buildable_names():
        assert name in result.output
    result = runner.invoke(app, ["proxy", "init", str(tmp_path / "g"), "--arch", "gemma3"])
    assert result.exit_code == 2
    assert "gemma3 is not supported here" in result.output
    assert not (tmp_path / "g").exists()


def test_a_template_that_is_not_prefix_stable_fails_clearly(tmp_path):
    """Qwen3 thinking templates render earlier assistant turns without their <think> block."""
    folder = build_tiny_proxy(tmp_path / "q3", arch="qwen3-vl")
    proxy = load_proxy(folder)
    proxy.processor.chat_template = proxy.processor.chat_template.replace(
        "<|im_start|>{{ m['role'] }}\n",
        "<|im_start|>{{ m['role'] }}\n"
        "{% if m['role'] == 'assistant' and loop.last %}<think>\n\n</think>\n\n{% endif %}",
    )
    sample = toy_samples(3, seed=0)[2]  # two assistant turns
    with pytest.raises(CollateError, match=r"toy-0-2.*not render turn \d as a prefix"):
        proxy.collate([sample])


@pytest.fixture(scope="module")
def family_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {name: build_tiny_proxy(root / name, arch=name) for name in buildable_names()}


@pytest.mark.parametrize("name", buildable_names())
def test_proxy_info_names_the_family(family_folders, name):
    result = CliRunner().invoke(app, ["proxy", "info", str(family_folders[name])])
    assert result.exit_code == 0, result.output
    assert f"arch: {name}" in result.output and "vision tower" in result.output


RELOAD = """
import json, sys
from pathlib import Path
from transformers import AutoModelForImageTextToText, AutoProcessor
out = {}
for folder, expected in json.loads(sys.argv[1]).items():
    model = AutoModelForImageTextToText.from_pretrained(folder)
    saved = json.loads((Path(folder) / "processor_config.json").read_text())["processor_class"]
    try:
        processor = type(AutoProcessor.from_pretrained(folder)).__name__
    except ImportError as err:
        processor = "ImportError: " + str(err)
    out[folder] = [type(model).__name__, saved, processor]
assert not any(m.startswith("ostselect") for m in sys.modules)
print(json.dumps(out))
"""


def test_saved_folders_reload_in_plain_transformers(family_folders, tmp_path):
    """No ostselect import: each folder names its stock processor class, and AutoProcessor
    builds it (or, for processors with a video part here without torchvision, says so)."""
    expected = {str(folder): get_family(name) for name, folder in family_folders.items()}
    arg = json.dumps({k: f.processor_class for k, f in expected.items()})
    run = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(RELOAD), arg],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    for folder, family in expected.items():
        model_class, saved, processor = result[folder]
        assert model_class.endswith("ForConditionalGeneration"), (family.name, model_class)
        assert saved == family.processor_class, family.name
        if family.video_processor_class is not None and not torchvision_available():
            assert processor.startswith("ImportError") and "orchvision" in processor
        else:
            assert processor == family.processor_class, (family.name, processor)
