"""The shard store: finished shards on disk, so a killed run loses at most the shards in flight.

Layout of `<out>.shards/`:
- `manifest.json`: the run's provenance fingerprint (proxy hash, anchor hash, pool fingerprint,
  mode, config) plus the engine settings that decide shard boundaries. Resuming under another
  fingerprint would silently mix scores made differently, so it is refused.
- `shard-000123.rejects.jsonl` then `shard-000123.parquet`: that shard's rejects and scored rows.
  Both are written atomically (temp file, fsync, `os.replace`); the Parquet file is written last and
  is the commit marker, so a shard counts as finished only when both are complete.
- `driver-rejects.jsonl`: records the pool reader rejected, rewritten from scratch by every run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ostselect.atomic import temp_beside
from ostselect.data.rejects import Reject

MANIFEST = "manifest.json"
DRIVER_REJECTS = "driver-rejects.jsonl"
SHARD_META_KEY = b"ostselect.shard"
STORE_FORMAT = 1


class StoreError(RuntimeError):
    """The shard store cannot be used as asked (existing work, fingerprint mismatch, corruption).

    `differences` names the fingerprint fields (dotted) that stop a resume, so a front end can
    say them in its own words (the CLI: its flags).
    """

    def __init__(self, message: str, differences: list[str] | None = None) -> None:
        super().__init__(message)
        self.differences = list(differences or [])


@dataclass
class ShardResult:
    """What a worker sends back for one shard: scored columns, rejects, and how they were made."""

    index: int
    ids_digest: str  # digest of every id the driver put in this shard (scored or rejected)
    columns: dict[str, list[Any]]
    rejects: list[Reject] = field(default_factory=list)
    mode: str = ""
    scorer_provenance: dict[str, Any] = field(default_factory=dict)
    cost: dict[str, float] = field(default_factory=dict)  # this shard's share of the counters

    def table(self) -> pa.Table:
        return pa.table({k: pa.array(v) for k, v in self.columns.items()})


def store_path_for(out_path: str | Path) -> Path:
    out_path = Path(out_path)
    return out_path.with_name(out_path.name + ".shards")


def shard_name(index: int) -> str:
    return f"shard-{index:06d}"


def fsync_dir(path: Path) -> None:
    """Make a rename durable: fsync the folder entry (a no-op where the OS does not allow it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a whole file or nothing: no reader sees a half-written file, even after SIGKILL."""
    fd, tmp = temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def rejects_to_jsonl(rejects: Iterable[Reject], stage: str | None = "score") -> bytes:
    lines = []
    for r in rejects:
        record = asdict(r)
        if stage is not None:
            record["stage"] = stage
        lines.append(json.dumps(record, ensure_ascii=True) + "\n")
    return "".join(lines).encode()


def fingerprint_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted names of the fields that differ between two fingerprints (nested dicts walked)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                out.append(name)
            else:
                out.extend(fingerprint_differences(old[key], new[key], name))
        return out
    return [] if old == new else [prefix or "<fingerprint>"]


def _normalise(value: Any) -> Any:
    """What a fingerprint looks like after a JSON round trip (tuples -> lists, paths -> str)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


class ShardStore:
    """Finished shards of one scoring run, keyed by shard index."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    # -- opening ---------------------------------------------------------------------------------
    def open(self, manifest: Mapping[str, Any], *, resume: bool) -> None:
        """Create the store, or check an existing one may be continued under `manifest`."""
        manifest = _normalise(manifest)
        self.root.mkdir(parents=True, exist_ok=True)
        self._remove_temp_files()
        finished = self.finished_indices()
        manifest_path = self.root / MANIFEST
        if finished and not resume:
            raise StoreError(
                f"{self.root} already holds {len(finished)} finished shard(s) of an earlier run. "
                "Continue it with --resume, or write to a new output path."
            )
        if resume and manifest_path.exists():
            old = json.loads(manifest_path.read_text(encoding="utf-8"))
            diff = fingerprint_differences(old, manifest)
            if diff:
                raise StoreError(
                    f"cannot resume {self.root}: it was made with a different fingerprint "
                    f"(fields that differ: {', '.join(diff)}). Score into a new output path, "
                    "or delete the store to start again.",
                    differences=diff,
                )
            return
        if resume and finished:
            raise StoreError(f"cannot resume {self.root}: shards exist but {MANIFEST} is missing")
        atomic_write_bytes(manifest_path, json.dumps(manifest, indent=2, sort_keys=True).encode())

    def _remove_temp_files(self) -> None:
        for p in self.root.glob(".*.tmp"):
            p.unlink(missing_ok=True)

    # -- shards ----------------------------------------------------------------------------------
    def shard_path(self, index: int) -> Path:
        return self.root / f"{shard_name(index)}.parquet"

    def rejects_path(self, index: int) -> Path:
        return self.root / f"{shard_name(index)}.rejects.jsonl"

    def finished_indices(self) -> set[int]:
        out = set()
        for p in self.root.glob("shard-*.parquet"):
            try:
                out.add(int(p.stem.split("-", 1)[1]))
            except ValueError:
                continue
        return out

    def is_finished(self, index: int) -> bool:
        return self.shard_path(index).exists()

    def write_shard(self, result: ShardResult) -> None:
        """Rejects first, rows last: the Parquet file's presence means the shard is on disk."""
        atomic_write_bytes(self.rejects_path(result.index), rejects_to_jsonl(result.rejects))
        meta = {
            "index": result.index,
            "ids_digest": result.ids_digest,
            "mode": result.mode,
            "n_rejected": len(result.rejects),
            "scorer_provenance": result.scorer_provenance,
            "cost": result.cost,
            "format": STORE_FORMAT,
        }
        table = result.table()
        table = table.replace_schema_metadata(
            {SHARD_META_KEY: json.dumps(meta, sort_keys=True, default=str).encode()}
        )
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        atomic_write_bytes(self.shard_path(result.index), sink.getvalue().to_pybytes())

    def shard_meta(self, index: int) -> dict[str, Any]:
        schema = pq.read_schema(self.shard_path(index))
        raw = (schema.metadata or {}).get(SHARD_META_KEY)
        if raw is None:
            raise StoreError(f"{self.shard_path(index)} is not a shard of this store (no metadata)")
        return json.loads(raw)

    def read_shard(self, index: int) -> pa.Table:
        return pq.read_table(self.shard_path(index)).replace_schema_metadata(None)

    def read_shard_rejects_bytes(self, index: int) -> bytes:
        path = self.rejects_path(index)
        if not path.exists():
            raise StoreError(f"{path} is missing although shard {index} is marked finished")
        return path.read_bytes()

    @property
    def driver_rejects_path(self) -> Path:
        return self.root / DRIVER_REJECTS
