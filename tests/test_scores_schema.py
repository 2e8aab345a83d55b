"""One provenance schema for every scores table (`ostselect.scores.Provenance`).

- Written records are completed from the table (counts, mode, versions) and validated: a record
  missing a required key, with an unknown top-level key or a wrong type is refused, naming the
  file and the key, and nothing is written.
- Read back, a record round-trips; a file that claims the schema but breaks it is refused.
- Tables written before the schema still read: old keys move to their one name (`eta`,
  `cost.forward_passes`, `counts.ok`, `proxy_fingerprint`), gaps are listed, and only an operation
  that needs a missing key fails (`Scores.require`).
- Every scorer's in-process table (OST, baselines) follows the schema.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from ostselect.scores import (
    PROVENANCE_KEY,
    SCHEMA_VERSION,
    ProvenanceError,
    Status,
    build_scores_table,
    read_provenance,
    read_scores,
    validate_provenance,
    write_scores,
)
from scoring_toy_model import ToyProxy, make_samples

IDS = ["a", "b", "c", "d"]
STATUS = [Status.OK, Status.OK, Status.NONFINITE, Status.OK]


def _table(mode: str = "exact"):
    return build_scores_table(IDS, [0.3, -0.1, float("nan"), 0.2], mode, status=STATUS)


def _record(**over: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "scorer": "ost",
        "cost": {"forward_passes": 12, "backward_passes": 4, "wall_s": 0.5},
        "eta": 0.01,
        "seed": 3,
        "proxy_fingerprint": "f" * 64,
        "settings": {"cutoff": 0.2, "betas": [0.9, 0.999]},
    }
    record.update(over)
    return record


def test_write_read_round_trip_completes_counts_mode_and_versions(tmp_path: Path):
    path = write_scores(_table(), tmp_path / "s.parquet", _record(counts={"rejected_reader": 2}))
    prov = read_scores(path).provenance
    assert prov["schema_version"] == SCHEMA_VERSION and prov["library_version"]
    assert prov["mode"] == "exact" and prov["scorer"] == "ost" and prov["eta"] == 0.01
    # derived from the status column; the caller's extra count is kept
    assert prov["counts"] == {"scored": 4, "ok": 3, "nonfinite": 1, "rejected_reader": 2}
    assert prov["cost"] == {"forward_passes": 12, "backward_passes": 4, "wall_s": 0.5}
    assert prov["settings"] == {"cutoff": 0.2, "betas": [0.9, 0.999]}
    assert read_scores(path).schema_problems == []
    validate_provenance(prov)


@pytest.mark.parametrize(
    ("record", "said"),
    [
        (_record(scorer=None), "'scorer'"),
        ({k: v for k, v in _record().items() if k != "scorer"}, "missing 'scorer'"),
        ({k: v for k, v in _record().items() if k != "cost"}, "missing 'cost'"),
        (_record(cost={"forward_passes": 1}), "missing 'cost.wall_s'"),
        (_record(lr=0.01), "unknown key 'lr' (put method-specific keys under 'settings')"),
        (_record(cost={"wall_s": "fast"}), "'cost.wall_s'"),
        (_record(counts={"rejected_reader": "two"}), "'counts.rejected_reader'"),
    ],
)
def test_write_refuses_a_record_that_breaks_the_schema(tmp_path: Path, record, said):
    path = tmp_path / "s.parquet"
    with pytest.raises(ProvenanceError) as caught:
        write_scores(_table(), path, record)
    message = str(caught.value)
    assert message.startswith(f"not writing {path}: provenance does not follow the schema")
    assert said in message
    assert not path.exists() and list(tmp_path.iterdir()) == []


def _write_raw(path: Path, record: dict[str, Any] | None) -> Path:
    """A table as an older ostselect wrote it: its record as given, not validated."""
    table = _table()
    if record is not None:
        meta = {PROVENANCE_KEY: json.dumps(record).encode()}
        table = table.replace_schema_metadata(meta)
    pq.write_table(table, path)
    return path


def test_old_ost_table_reads_with_one_name_per_fact(tmp_path: Path):
    old = {
        "scorer": "ost",
        "mode": "exact",
        "library_version": "0.3.0",
        "eta": 0.02,
        "lr": 0.02,
        "optimizer": "sgd",
        "cutoff": 0.2,
        "config": {"lr": None, "mode": "exact"},
        "work": {"forward_samples": 40, "backward_samples": 4},
        "wall_time_s": 1.5,
        "counts": {"scored": 4, "ok": 3, "nonfinite": 1},
        "pool_fingerprint": "p" * 64,
    }
    scores = read_scores(_write_raw(tmp_path / "old.parquet", old))
    prov = scores.provenance
    assert prov["eta"] == 0.02 and "lr" not in prov
    assert prov["cost"] == {"forward_passes": 40, "backward_passes": 4, "wall_s": 1.5}
    assert prov["counts"]["ok"] == 3 and prov["pool_fingerprint"] == "p" * 64
    assert prov["settings"] == {"cutoff": 0.2, "config": {"lr": None, "mode": "exact"}}
    assert scores.schema_problems == []
    validate_provenance(prov)  # an old OST record upgrades to a complete one


def test_old_engine_and_baseline_tables_read(tmp_path: Path):
    engine = {"scorer": "ost", "mode": "exact", "counts": {"scored": 4, "status_ok": 3}}
    prov = read_scores(_write_raw(tmp_path / "engine.parquet", engine)).provenance
    assert prov["counts"] == {"scored": 4, "ok": 3}
    baseline = {
        "mode": "loss",
        "baseline": "loss",
        "proxy_hash": "h" * 64,
        "keep": "low",
        "pool_size": 4,
        "cost": {"forward_passes": 4, "backward_passes": 0, "wall_s": 0.1},
    }
    prov = read_scores(_write_raw(tmp_path / "loss.parquet", baseline)).provenance
    assert prov["scorer"] == "loss" and prov["proxy_fingerprint"] == "h" * 64
    assert prov["settings"] == {"keep": "low", "pool_size": 4}


def test_table_without_provenance_reads_until_an_operation_needs_a_key(tmp_path: Path):
    path = _write_raw(tmp_path / "bare.parquet", None)
    scores = read_scores(path)
    assert scores.ids == IDS and scores.provenance == {}
    assert any("'scorer'" in p for p in scores.schema_problems)
    with pytest.raises(ProvenanceError) as caught:
        scores.require("pool_fingerprint", "checking the scores belong to the pool")
    message = str(caught.value)
    assert str(path) in message and "'pool_fingerprint'" in message
    assert "checking the scores belong to the pool" in message and "score the pool again" in message


def test_a_file_that_claims_the_schema_must_follow_it(tmp_path: Path):
    broken = {"schema_version": SCHEMA_VERSION, "scorer": "ost", "mode": "exact"}
    path = _write_raw(tmp_path / "broken.parquet", broken)
    with pytest.raises(ProvenanceError, match=r"broken\.parquet: .*missing 'counts'"):
        read_scores(path)


SHARED = {"schema_version", "library_version", "scorer", "mode", "counts", "cost"}


@pytest.mark.parametrize("mode", ["exact", "first-order", "hybrid"])
def test_ost_in_process_table_follows_the_schema(mode: str):
    from ostselect.scoring import ScoreConfig, score

    config = ScoreConfig(mode=mode, optimizer="sgd", eta=0.05, calibration_size=4)
    table = score(make_samples(8, seed=1), make_samples(3, seed=2, prefix="a"), ToyProxy(), config)
    prov = validate_provenance(read_provenance(table))
    assert set(prov) >= SHARED and prov["scorer"] == "ost" and prov["mode"] == mode
    assert prov["eta"] == 0.05 and "lr" not in json.dumps(prov)  # the step size, once
    assert "eta" not in prov["settings"]["config"]
    assert prov["cost"]["forward_passes"] > 0 and prov["counts"]["scored"] == 8
    assert set(table.column("status").to_pylist()) <= {s.value for s in Status}


@pytest.mark.parametrize("name", ["random", "loss"])
def test_baseline_in_process_table_follows_the_schema(name: str):
    from ostselect.baselines import run_baseline

    proxy = ToyProxy() if name == "loss" else None
    table = run_baseline(name, make_samples(6, seed=1), proxy=proxy)
    prov = validate_provenance(read_provenance(table))
    assert set(prov) >= SHARED and prov["scorer"] == name == prov["mode"]
    assert set(prov["cost"]) >= {"forward_passes", "backward_passes", "wall_s"}
    assert prov["counts"]["scored"] == 6 and "pool_level" in prov["settings"]
