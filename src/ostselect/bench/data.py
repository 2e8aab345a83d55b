"""Write the DigitMath data set: messages-JSONL splits, PNG images, and the hidden noise sidecar.

Layout of `out_dir`:

    pretrain.jsonl      caption samples ("read the digits"), clean; teaches models to read
    pool.jsonl          what scorers see: id, messages, images, category -- nothing else
    pool.noise.json     hidden truth per pool id: noise type, ground-truth answer, digits, scans
    heldout.jsonl       clean problems the anchor set is drawn from (with `answer`, `scans`)
    test.jsonl          clean evaluation problems (with `answer`, `scans`)
    images/<id>.png     one 84x28 RGB image per sample; records hold paths relative to `out_dir`
    digitmath.json      the configuration, the scan indices of each split, and counts

Why a sidecar: a synthetic pool in the wild has no labels and no ground truth; anything a scorer
could read about noise (the tag, the true answer, even the scan ids, which reveal the digits) would
let it cheat. Only evaluation code calls `noise_labels` / `pool_truth`.

Everything is a pure function of the arguments: the same seed gives byte-identical files.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ostselect.bench import noise as noise_mod
from ostselect.bench.digits import (
    DEFAULT_SCAN_FRACTIONS,
    SPLITS,
    ScanBank,
    compose_image,
    draw_cells,
    load_scans,
    split_scans,
)
from ostselect.bench.tasks import (
    CAPTION,
    CATEGORIES,
    caption_answer,
    draw_digits,
    question,
    solution_text,
    true_answer,
)
from ostselect.data.sample import IMAGE_PLACEHOLDER, ImageRef, Sample, Turn
from ostselect.data.writers import write_samples

MANIFEST = "digitmath.json"
NOISE_SIDECAR_SUFFIX = ".noise.json"
FORMAT_VERSION = 2  # 2: one digit per 28-px cell (cells recorded)
_SPLIT_SEED_CODE = {name: i + 1 for i, name in enumerate(SPLITS)}


@dataclass(frozen=True)
class DigitMathPaths:
    """Where one generated DigitMath data set lives."""

    root: Path

    @property
    def pretrain(self) -> Path:
        return self.root / "pretrain.jsonl"

    @property
    def pool(self) -> Path:
        return self.root / "pool.jsonl"

    @property
    def pool_noise(self) -> Path:
        return noise_sidecar(self.pool)

    @property
    def heldout(self) -> Path:
        return self.root / "heldout.jsonl"

    @property
    def test(self) -> Path:
        return self.root / "test.jsonl"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    def split(self, name: str) -> Path:
        """The JSONL file of a split by name ('pretrain', 'pool', 'heldout', 'test')."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        return getattr(self, name)


@dataclass
class _Problem:
    """One generated problem before it is written (internal)."""

    id: str
    category: str
    digits: tuple[int, ...]
    scans: tuple[int, ...]
    question: str
    text: str
    answer: str
    image: str
    cells: tuple[int, ...] = ()
    noise: str = noise_mod.CLEAN
    shown_digits: tuple[int, ...] | None = None  # digits the text talks about, when noisy
    donor: str | None = None


def noise_sidecar(pool_path: str | Path) -> Path:
    """The hidden-labels file that belongs to a pool file (`pool.jsonl` -> `pool.noise.json`)."""
    p = Path(pool_path)
    return p.with_name(p.name.removesuffix(".jsonl") + NOISE_SIDECAR_SUFFIX)


def _split_rng(seed: int, split: str) -> np.random.Generator:
    # Independent streams per split: changing n_test does not change the pool.
    return np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_SEED_CODE[split]]))


def _balanced(categories: Sequence[str], n: int, rng: np.random.Generator) -> list[str]:
    """`n` category labels as evenly spread as possible, in random order."""
    labels = [categories[i % len(categories)] for i in range(n)]
    return [labels[i] for i in rng.permutation(n)]


def _make_problems(
    split: str,
    n: int,
    bank: ScanBank,
    categories: Sequence[str],
    clutter: float,
    rng: np.random.Generator,
    images_dir: Path,
) -> list[_Problem]:
    problems = []
    for i, category in enumerate(_balanced(categories, n, rng)):
        pid = f"{split}-{i:05d}"
        digits = draw_digits(category, rng)
        scans = tuple(bank.draw(d, rng) for d in digits)
        cells = draw_cells(len(digits), rng)
        image = compose_image(
            [bank.scans.images[s] for s in scans],
            rng,
            cells=cells,
            clutter=rng.random() < clutter,
        )
        rel = f"images/{pid}.png"
        image.save(images_dir / f"{pid}.png", format="PNG")
        answer = (
            caption_answer(digits) if category == CAPTION else str(true_answer(category, digits))
        )
        problems.append(
            _Problem(
                id=pid,
                category=category,
                digits=digits,
                scans=scans,
                question=question(category, rng),
                text=solution_text(category, digits),
                answer=answer,
                image=rel,
                cells=cells,
            )
        )
    return problems


def _corrupt_pool(
    problems: list[_Problem],
    rate: float,
    mix: Mapping[str, float] | None,
    rng: np.random.Generator,
) -> None:
    """Replace the answers of a `rate` share of the pool with realistic failures, in place."""
    tags = noise_mod.assign_noise(len(problems), rate, mix, rng)
    by_category: dict[str, list[int]] = {}
    for j, p in enumerate(problems):
        by_category.setdefault(p.category, []).append(j)
    originals = [(p.question, p.text) for p in problems]
    for j, (p, tag) in enumerate(zip(problems, tags, strict=True)):
        p.noise = tag
        if tag == "arith_slip":
            p.text = noise_mod.arith_slip(p.category, p.digits, rng)
        elif tag == "misread":
            p.shown_digits = noise_mod.misread_digits(p.category, p.digits, rng)
            p.text = solution_text(p.category, p.shown_digits)
        elif tag == "swapped_image":
            donors = [
                k
                for k in by_category[p.category]
                if k != j and problems[k].answer != p.answer and problems[k].digits != p.digits
            ]
            if not donors:  # a pool too small to have a differing donor: fall back to a misread
                p.noise = "misread"
                p.shown_digits = noise_mod.misread_digits(p.category, p.digits, rng)
                p.text = solution_text(p.category, p.shown_digits)
                continue
            k = donors[int(rng.integers(len(donors)))]
            p.question, p.text = originals[k]  # the donor's original, clean conversation
            p.shown_digits, p.donor = problems[k].digits, problems[k].id
        elif tag == "truncated":
            p.text = noise_mod.truncated(p.text, rng)
        elif tag == "repetition":
            p.text = noise_mod.repetition(p.category, p.digits, rng)


def _sample(p: _Problem, root: Path, *, hidden: bool) -> Sample:
    """The record as a `Sample`; pool samples (`hidden`) carry only what a scorer may see."""
    extra: dict[str, Any] = {"category": p.category}
    if not hidden:
        extra |= {
            "answer": p.answer,
            "digits": list(p.digits),
            "scans": list(p.scans),
            "cells": list(p.cells),
        }
    return Sample(
        id=p.id,
        turns=[Turn("user", IMAGE_PLACEHOLDER + p.question), Turn("assistant", p.text)],
        images=[ImageRef(path=root / p.image)],
        extra=extra,
    )


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def _prepare_dir(root: Path) -> None:
    """Create `root`; clear images of an earlier DigitMath run there, refuse foreign folders."""
    root.mkdir(parents=True, exist_ok=True)
    images = root / "images"
    if images.exists():
        if not (root / MANIFEST).exists() and any(images.iterdir()):
            raise FileExistsError(
                f"{images} exists and is not from a DigitMath run ({MANIFEST} missing); "
                "choose an empty output folder"
            )
        shutil.rmtree(images)
    images.mkdir()


def make_digitmath(
    out_dir: str | Path,
    *,
    n_pool: int = 2000,
    n_heldout: int = 500,
    n_test: int = 500,
    n_pretrain: int = 2000,
    noise_rate: float = noise_mod.DEFAULT_NOISE_RATE,
    noise_mix: Mapping[str, float] | None = None,
    seed: int = 0,
    categories: Sequence[str] = CATEGORIES,
    clutter: float = 0.3,
    scan_fractions: Mapping[str, float] = DEFAULT_SCAN_FRACTIONS,
) -> DigitMathPaths:
    """Generate the benchmark data under `out_dir` (see the module docstring for the layout).

    `clutter` is the probability that an image gets light distractor dots/strokes. Heldout, test and
    pretrain are always clean; only the pool is corrupted, at `noise_rate` with `noise_mix`.
    """
    unknown = sorted(set(categories) - set(CATEGORIES))
    if unknown or not categories:
        raise ValueError(f"categories must be a non-empty subset of {CATEGORIES}, got {categories}")
    if set(scan_fractions) != set(SPLITS):
        raise ValueError(f"scan_fractions must name exactly the splits {SPLITS}")
    sizes = {"pretrain": n_pretrain, "pool": n_pool, "heldout": n_heldout, "test": n_test}
    if any(v < 0 for v in sizes.values()):
        raise ValueError(f"split sizes must be >= 0, got {sizes}")
    mix = noise_mod.normalized_mix(noise_mix)
    noise_mod.noise_counts(n_pool, noise_rate, mix)  # validates the rate early

    paths = DigitMathPaths(Path(out_dir))
    _prepare_dir(paths.root)
    scans = load_scans()
    scan_split = split_scans(scans.labels, seed, {s: scan_fractions[s] for s in SPLITS})

    problems: dict[str, list[_Problem]] = {}
    for split in SPLITS:
        rng = _split_rng(seed, split)
        cats = [CAPTION] if split == "pretrain" else list(categories)
        bank = ScanBank(scans, scan_split[split])
        problems[split] = _make_problems(
            split, sizes[split], bank, cats, clutter, rng, paths.images
        )
        if split == "pool":
            _corrupt_pool(problems[split], noise_rate, mix, rng)

    for split in SPLITS:
        samples = [_sample(p, paths.root, hidden=split == "pool") for p in problems[split]]
        write_samples(samples, paths.split(split))  # messages JSONL, image paths relative
    _write_json(
        paths.pool_noise,
        {
            p.id: {
                "noise": p.noise,
                "answer": p.answer,
                "digits": list(p.digits),
                "shown_digits": list(p.shown_digits if p.shown_digits is not None else p.digits),
                "scans": list(p.scans),
                "cells": list(p.cells),
                **({"donor": p.donor} if p.donor else {}),
            }
            for p in problems["pool"]
        },
    )
    _write_json(
        paths.manifest,
        {
            "format_version": FORMAT_VERSION,
            "config": {
                "n_pool": n_pool,
                "n_heldout": n_heldout,
                "n_test": n_test,
                "n_pretrain": n_pretrain,
                "noise_rate": noise_rate,
                "noise_mix": mix,
                "seed": seed,
                "categories": list(categories),
                "clutter": clutter,
                "scan_fractions": {s: scan_fractions[s] for s in SPLITS},
            },
            "counts": summarize(problems),
            "scans": {s: scan_split[s].tolist() for s in SPLITS},
        },
    )
    return paths


def summarize(problems: Mapping[str, Sequence[_Problem]]) -> dict[str, Any]:
    """Counts per split, per category, and (pool) per noise type, for the manifest and the CLI."""
    out: dict[str, Any] = {}
    for split, ps in problems.items():
        entry: dict[str, Any] = {
            "total": len(ps),
            "category": dict(sorted(Counter(p.category for p in ps).items())),
        }
        if split == "pool":
            kinds = (noise_mod.CLEAN, *noise_mod.NOISE_TYPES)
            counts = Counter(p.noise for p in ps)
            entry["noise"] = {k: counts.get(k, 0) for k in kinds}
        out[split] = entry
    return out


def read_manifest(root: str | Path) -> dict[str, Any]:
    """The `digitmath.json` of a generated data set."""
    return json.loads((Path(root) / MANIFEST).read_text(encoding="utf-8"))


def load_records(path: str | Path) -> list[dict[str, Any]]:
    """The records of one split file, in file order (what a scorer sees for the pool)."""
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _hidden(pool_path: str | Path) -> dict[str, dict[str, Any]]:
    sidecar = noise_sidecar(pool_path)
    if not sidecar.exists():
        raise FileNotFoundError(f"{sidecar} not found: noise labels exist only for DigitMath pools")
    return json.loads(sidecar.read_text(encoding="utf-8"))


def noise_labels(pool_path: str | Path) -> dict[str, str]:
    """Hidden noise type per pool id ('clean' or one of `NOISE_TYPES`). For evaluation code only."""
    return {pid: v["noise"] for pid, v in _hidden(pool_path).items()}


def pool_truth(pool_path: str | Path) -> dict[str, str]:
    """Ground-truth answer per pool id. For evaluation code only (scorers must not see it)."""
    return {pid: v["answer"] for pid, v in _hidden(pool_path).items()}
