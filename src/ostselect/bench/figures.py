"""Figures for the README: what DigitMath problems (clean and noisy) look like."""

from __future__ import annotations

import textwrap
from pathlib import Path

from ostselect.bench.data import DigitMathPaths, load_records, noise_labels
from ostselect.bench.noise import CLEAN, NOISE_TYPES
from ostselect.bench.tasks import CATEGORIES


def _pick_examples(paths: DigitMathPaths) -> list[tuple[dict, str]]:
    """First clean pool sample of each category, then one sample of each noise type."""
    records = load_records(paths.pool)
    tags = noise_labels(paths.pool)
    picked: list[tuple[dict, str]] = []
    for cat in CATEGORIES:
        rec = next((r for r in records if r["category"] == cat and tags[r["id"]] == CLEAN), None)
        if rec is not None:
            picked.append((rec, f"{cat} (clean)"))
    for i, kind in enumerate(NOISE_TYPES):  # spread the noisy examples over the categories
        want = CATEGORIES[i % len(CATEGORIES)]
        of_kind = [r for r in records if tags[r["id"]] == kind]
        rec = next((r for r in of_kind if r["category"] == want), of_kind[0] if of_kind else None)
        if rec is not None:
            picked.append((rec, f"{rec['category']}: {kind}"))
    return picked


def plot_examples(data_dir: str | Path, out_png: str | Path, *, columns: int = 5) -> Path:
    """A grid of pool images with their question and answer, labelled with the hidden noise type."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    paths = DigitMathPaths(Path(data_dir))
    examples = _pick_examples(paths)
    if not examples:
        raise ValueError(f"{paths.pool} has no samples to show")
    rows = -(-len(examples) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.0 * columns, 2.3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (rec, label) in zip(axes.flat, examples, strict=False):
        with Image.open(paths.root / rec["images"][0]) as im:
            ax.imshow(im.convert("RGB"), interpolation="nearest")
        question = rec["messages"][0]["content"].replace("<image>", "")
        answer = rec["messages"][1]["content"]
        if len(answer) > 110:
            answer = answer[:107] + "..."
        text = "Q: " + textwrap.fill(question, 40) + "\nA: " + textwrap.fill(answer, 40)
        colour = "tab:green" if label.endswith("(clean)") else "tab:red"
        ax.set_title(label, fontsize=9, color=colour)
        ax.text(
            0.0, -0.12, text, transform=ax.transAxes, fontsize=6.5, va="top", family="monospace"
        )
    fig.suptitle(
        "DigitMath pool samples (real handwritten scans; noise type is hidden from scorers)"
    )
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return out
