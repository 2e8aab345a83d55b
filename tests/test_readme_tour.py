"""The README's tour, run verbatim: every command exits 0, everything lands under `tour/`, and the
ranking it produces is visibly better than chance on the benchmark's hidden noise labels.

The commands are read from the README's "A 5-minute tour" block, so the README cannot drift from
the code. The pretrained proxy comes from the test session's private model cache (conftest), so
this pays for pretraining the benchmark proxy once (a few minutes on 2 cores).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def tour_commands(text: str) -> list[str]:
    """The shell commands of the tour's bash block: continuation lines joined, comments and
    `source` (the venv is on PATH here) dropped."""
    section = text.split("## A 5-minute tour", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the tour has no bash block"
    joined = block.group(1).replace("\\\n", " ")
    commands = []
    for line in joined.splitlines():
        line = line.split("#", 1)[0].strip() if line.lstrip().startswith("#") else line.strip()
        if line and not line.startswith("source "):
            commands.append(" ".join(line.split()))
    return commands


def test_tour_block_is_parsed():
    commands = tour_commands(README.read_text())
    assert commands[0].startswith("ost bench data tour/data")
    assert any(c.startswith("ost score ") for c in commands)
    assert all(c.startswith("ost ") for c in commands), commands
    assert all("tour/" in c for c in commands if c != "ost proxy info tour/proxy")


@pytest.mark.slow
def test_readme_tour_runs_verbatim(tmp_path):
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    outputs = {}
    for command in tour_commands(README.read_text()):
        run = subprocess.run(
            command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert run.returncode == 0, f"{command}\n{run.stdout}\n{run.stderr}"
        outputs[command.split()[1]] = " ".join((run.stdout + run.stderr).split())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tour"]  # nothing outside tour/
    assert "Traceback" not in " ".join(outputs.values())
    assert "looks untrained" not in outputs["score"]
    assert "did not lower the loss" not in outputs["warmup"]

    from ostselect.scores import read_scores

    tour = tmp_path / "tour"
    scores = read_scores(tour / "scores.parquet")
    noise = {
        k: v["noise"] for k, v in json.loads((tour / "data/pool.noise.json").read_text()).items()
    }
    order = sorted(range(len(scores.ids)), key=lambda i: -scores.utility[i])
    k = len(order) // 5

    def clean(ix):
        return sum(noise[scores.ids[i]] == "clean" for i in ix) / len(ix)

    top, bottom = clean(order[:k]), clean(order[-k:])
    print(f"tour: clean share top 20% {top:.1%}, bottom 20% {bottom:.1%}, pool {clean(order):.1%}")
    assert top > bottom + 0.05, (top, bottom)
    html = (tour / "report.html").read_text()
    assert "By noise (hidden label" in html
    assert (tour / "subset" / "pool.jsonl").is_file()
    assert (tour / "subset" / "selection.json").is_file()
