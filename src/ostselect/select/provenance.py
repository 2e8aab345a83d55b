"""Refuse scores made on another pool (unless forced), with a message that says what differs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ostselect.data.sample import Sample
from ostselect.scores import Scores

FINGERPRINT_KEYS = ("pool_fingerprint", "pool_hash")


class ProvenanceMismatchError(ValueError):
    """The scores table and the pool do not belong together."""


def load_pool(
    pool: Sequence[Sample] | str | Path,
    *,
    image_root: str | Path | None = None,
    rejects: Any = None,
) -> tuple[list[Sample], str | None]:
    """Samples plus the pool's fingerprint (None for in-memory samples: nothing to compare).

    Unusable records of a pool file go to `rejects` (a `RejectsWriter`) and are skipped.
    """
    if isinstance(pool, str | Path):
        from ostselect.data import iter_samples, pool_fingerprint

        path = Path(pool)
        if not path.exists():
            raise FileNotFoundError(f"pool {path} does not exist")
        samples = list(iter_samples(path, image_root=image_root, rejects=rejects))
        return samples, pool_fingerprint(path)
    return list(pool), None


def scores_fingerprint(scores: Scores) -> str | None:
    for key in FINGERPRINT_KEYS:
        if scores.provenance.get(key):
            return str(scores.provenance[key])
    return None


def check_provenance(
    scores: Scores,
    samples: Sequence[Sample],
    pool_fp: str | None,
    *,
    force: bool = False,
    scores_path: str | Path | None = None,
    pool_path: str | Path | None = None,
    action: str = "select",
) -> list[str]:
    """Problems found, as warnings when `force`; otherwise raise `ProvenanceMismatchError`.

    The message names the files (`scores_path`, `pool_path`), not fingerprints: those are what a
    person can check. `action` ("select", "report") completes "pass --force to ... anyway".
    """
    problems: list[str] = []
    pool_ids = {s.id for s in samples}
    missing = [i for i in scores.ids if str(i) not in pool_ids]
    if missing:
        shown = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
        problems.append(
            f"{len(missing)} of {len(scores.ids)} scored ids are not in the pool (e.g. {shown})"
        )
    made_on = scores_fingerprint(scores)
    if made_on is not None and pool_fp is not None and made_on != pool_fp:
        scored = scores.provenance.get("pool")
        if scored and pool_path is not None and Path(scored).resolve() == Path(pool_path).resolve():
            problems.append("the pool file has changed since the scores were made")
        elif scored:
            problems.append(f"they were made on {scored}")
        else:
            problems.append("they were made on another pool (its content differs)")
    if problems and not force:
        what = f"scores {scores_path}" if scores_path is not None else "the scores"
        pool_name = f" {pool_path}" if pool_path is not None else ""
        raise ProvenanceMismatchError(
            f"{what} do not match the pool{pool_name}: "
            + "; ".join(problems)
            + f". Score this pool again, or pass --force to {action} anyway."
        )
    return [f"forced past a provenance mismatch: {p}" for p in problems]
