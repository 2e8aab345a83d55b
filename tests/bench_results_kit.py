"""Hand-made DigitMath results dicts for the statistics, gates, interpretation and results tests.

A row is given as the number of test items it answers right on each seed; the right answers are
always the first items, so two rows differ on known items and paired differences are exact.
"""

from __future__ import annotations

from typing import Any

N_ITEMS = 200
CATEGORIES = ["add", "read"] * (N_ITEMS // 2)  # even items add, odd items read

GOOD_PRETRAIN = {
    role: {"reader_cell_accuracy": 0.99, "caption_accuracy": 0.97, "arithmetic_accuracy": 0.98}
    for role in ("proxy", "target")
}


def correct_vector(n_right: int, n_items: int = N_ITEMS) -> list[int]:
    return [1] * n_right + [0] * (n_items - n_right)


def make_run(
    row: str,
    method: str,
    fraction: float,
    seed: int,
    correct: list[int],
    *,
    protocol: str = "B",
    categories: list[str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    cats = categories or CATEGORIES[: len(correct)]
    per_category = {
        c: sum(x for x, k in zip(correct, cats, strict=True) if k == c) / cats.count(c)
        for c in sorted(set(cats))
    }
    return {
        "row": row,
        "method": method,
        "fraction": fraction,
        "protocol": protocol,
        "seed": seed,
        "n_train": round(1000 * fraction),
        "noisy_share": 0.0 if method == "clean" else 0.3,
        "accuracy": sum(correct) / len(correct),
        "per_category": per_category,
        "unanswered": 0.0,
        "steps": 100,
        "train_s": 1.0,
        "eval_s": 0.5,
        "selection_s": 0.0 if method in ("full", "clean", "random") else 2.0,
        "correct": correct,
        **extra,
    }


def make_results(
    rows: dict[str, tuple[str, float, list[int]]],
    *,
    protocols: tuple[str, ...] = ("B",),
    pretrain: dict[str, Any] | None = None,
    extra: dict[str, dict[str, Any]] | None = None,
    with_correct: bool = True,
) -> dict[str, Any]:
    """rows: name -> (method, fraction, right answers per seed); extra: name -> run keys."""
    runs = []
    for protocol in protocols:
        for name, (method, fraction, rights) in rows.items():
            for seed, n_right in enumerate(rights):
                run = make_run(
                    name,
                    method,
                    fraction,
                    seed,
                    correct_vector(n_right),
                    protocol=protocol,
                    **(extra or {}).get(name, {}),
                )
                if not with_correct:
                    del run["correct"]
                runs.append(run)
    return {
        "runs": runs,
        "test": {"n": N_ITEMS, "categories": CATEGORIES},
        "pretrain": GOOD_PRETRAIN if pretrain is None else pretrain,
    }


# Every gate holds: clean-only 75% vs Full-SFT 60% (a 15-point negative transfer), small seed std.
BASE_ROWS: dict[str, tuple[str, float, list[int]]] = {
    "Full-SFT": ("full", 1.0, [120, 121, 119]),
    "Clean-only (oracle)": ("clean", 0.65, [150, 151, 149]),
    "Random 20%": ("random", 0.2, [130, 131, 129]),
}
