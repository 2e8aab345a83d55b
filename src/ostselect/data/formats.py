"""Reading a pool in any supported format: one stream of `Sample | Reject`, one record at a time.

Formats: "messages" and "llava" name the record schema of JSON text files (JSON Lines or one JSON
array, told apart by the first character); "parquet" and "hf" name containers whose rows may use
either schema.
"auto" picks the container from the path and the schema per record.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ostselect.data import columnar
from ostselect.data.jsontext import (
    JsonArrayReader,
    PoolError,
    check_jsonl_shape,
    read_jsonl,
    sniff_container,
)
from ostselect.data.records import RecordContext, RecordProblem, record_id, record_to_sample
from ostselect.data.rejects import Reject
from ostselect.data.sample import Sample, SourceLoc

FORMATS = ("auto", "messages", "llava", "parquet", "hf")
PARQUET_SUFFIXES = (".parquet", ".pq")
JSONL_SUFFIXES = (".jsonl", ".ndjson")  # always JSON Lines; other names are sniffed ('[' = array)


def detect_format(path: str | Path) -> str:
    """The pool's format: 'hf' for a datasets folder, 'parquet' by suffix, else the JSON schema
    ('messages' or 'llava') of the first record that names one ('messages' when none does)."""
    p = _existing(path)
    if p.is_dir():
        if columnar.is_hf_folder(p):
            return "hf"
        raise PoolError(f"{p} is a folder but not a `datasets.save_to_disk` folder (no state.json)")
    if p.suffix.lower() in PARQUET_SUFFIXES:
        return "parquet"
    for rec in _json_records(p):
        if isinstance(rec.value, dict):
            if "messages" in rec.value:
                return "messages"
            if "conversations" in rec.value:
                return "llava"
    return "messages"


def read_pool(
    path: str | Path, *, image_root: str | Path | None = None, format: str = "auto"
) -> Iterator[Sample | Reject]:
    """Stream a pool: a `Sample` per record that parses, a `Reject` for anything that cannot be one.

    Raises `PoolError` only when the pool cannot be read as a whole. Samples are not checked beyond
    parsing (see `check_sample`); `Sample.raw` holds the exact record text (JSON) or the row dict.
    """
    p = _existing(path)
    container = _container(p, format)
    # Absolute, so image paths stay valid if the working directory changes (workers, Ray).
    base_dir = (Path(image_root) if image_root is not None else p.parent).absolute()
    name = p.name
    if container in ("parquet", "hf"):
        rows = columnar.iter_parquet_rows(p) if container == "parquet" else columnar.iter_hf_rows(p)
        ctx = RecordContext(str(p), base_dir, None)
        for index, row in rows:
            loc = SourceLoc(str(p), index=index)
            yield _to_sample(row, ctx, loc, f"{name}#{index}", raw=row, where=f"row {index}: ")
        return
    schema = format if format in ("messages", "llava") else None
    ctx = RecordContext(str(p), base_dir, schema)
    for rec in _json_records(p, container):
        if container == "jsonl":
            default_id, loc, where = f"{name}:{rec.loc.line}", rec.loc, ""
        else:  # a JSON array often sits on one line: its records are named by index, not line
            default_id, where = f"{name}#{rec.loc.index}", f"row {rec.loc.index}: "
            loc = SourceLoc(str(p), index=rec.loc.index)
        if rec.problem is not None:  # bad text: keep the line it starts on, where it must be fixed
            code, reason = rec.problem
            rid = record_id(rec.value, default_id) if isinstance(rec.value, dict) else None
            yield Reject(rid, str(p), rec.loc.line, where + reason, code)
        else:
            yield _to_sample(rec.value, ctx, loc, default_id, raw=rec.text, where=where)


def count_records(path: str | Path, *, format: str = "auto") -> int | None:
    """A record count for progress bars: non-blank lines, or rows from the metadata.

    A JSON array has no cheap count, so its elements are parsed (streamed, one at a time) and
    counted: a pass over the text that an hour-long run pays once for an honest ETA.
    """
    p = _existing(path)
    container = _container(p, format)
    if container == "parquet":
        return columnar.parquet_rows(p)
    if container == "hf":
        return columnar.hf_rows(p)
    if container == "array":
        return sum(1 for _ in _json_records(p, container))
    n = 0
    with p.open("rb") as fh:
        for line in fh:
            n += bool(line.strip())
    return n


def container_of(path: str | Path, format: str = "auto") -> str:
    """'jsonl', 'array', 'parquet' or 'hf': how the records are stored."""
    return _container(_existing(path), format)


def _to_sample(
    value: Any, ctx: RecordContext, loc: SourceLoc, default_id: str, *, raw: Any, where: str = ""
) -> Sample | Reject:
    try:
        return record_to_sample(value, ctx, loc=loc, default_id=default_id, raw=raw)
    except RecordProblem as e:
        rid = record_id(value, default_id)
        return Reject(rid, ctx.file, loc.line, where + e.reason, e.code)


def _json_records(p: Path, container: str | None = None):
    container = container or _container(p, "auto")
    return read_jsonl(p) if container == "jsonl" else iter(JsonArrayReader(p))


def _container(p: Path, format: str) -> str:
    if format not in FORMATS:
        raise PoolError(f"unknown format {format!r}: use one of {', '.join(FORMATS)}")
    if format == "hf" or (format == "auto" and p.is_dir()):
        if not columnar.is_hf_folder(p):
            raise PoolError(f"{p} is not a `datasets.save_to_disk` folder (no state.json)")
        return "hf"
    if p.is_dir():
        raise PoolError(f"{p} is a folder: pass a data file, or --format hf for a datasets folder")
    if format == "parquet" or (format == "auto" and p.suffix.lower() in PARQUET_SUFFIXES):
        return "parquet"
    container = "jsonl" if p.suffix.lower() in JSONL_SUFFIXES else sniff_container(p)
    if container == "jsonl":
        check_jsonl_shape(p)
    return container


def _existing(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise PoolError(f"{p} does not exist: pass a JSONL/JSON/Parquet file or a datasets folder")
    return p
