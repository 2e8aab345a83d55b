"""Writing data back: subsets of a pool in its own format, and new pools from `Sample`s.

`write_subset` never re-serialises a kept JSON record: it copies the record's source text, so each
kept line (JSONL) or element (JSON array) is byte for byte what the user gave; Parquet keeps the
schema and rows, HF folders go through `Dataset.select`. Relative image paths inside kept records
are unchanged, so they still resolve against the *pool's* folder: read a subset written elsewhere
with `image_root=` that folder, or write it with `images="copy"` / `"link"` (`subset_images`): the
image files then sit in an `images/` folder beside the subset and only the image path strings of
the written records change (JSON records keep every other byte; Parquet / HF rows every other
value and the schema). Images embedded as bytes need nothing and stay as they are.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ostselect.data import columnar
from ostselect.data.formats import container_of
from ostselect.data.jsontext import ArrayLayout, JsonArrayReader, TextRecord, read_jsonl
from ostselect.data.records import record_id
from ostselect.data.sample import ImageRef, Sample
from ostselect.data.subset_images import ImageMode, SubsetImages, rewrite_json_text

_LLAVA_ROLES = {"user": "human", "assistant": "gpt", "system": "system"}


def write_subset(
    pool_path: str | Path,
    keep_ids: Iterable[str],
    out_path: str | Path,
    *,
    image_root: str | Path | None = None,
    format: str | None = None,
    images: ImageMode | SubsetImages = "keep",
) -> int:
    """Write the records whose id is in `keep_ids`, in pool order, in the pool's own format.

    The first record with a given id is the one kept (as in `iter_samples`). `format` is the pool's
    format when auto-detection is not wanted. `images`: "keep" copies records verbatim (relative
    image paths still point into the pool's folder, or `image_root`); "copy" / "link" (or a
    `SubsetImages`, to read its counts afterwards) put each kept record's image files under an
    `images/` folder beside the subset and rewrite those paths, so the subset reads from anywhere.
    Returns the number written.
    """
    pool, out = Path(pool_path), Path(out_path)
    if out.exists() and out.resolve() == pool.resolve():
        raise ValueError(f"refusing to overwrite the pool {pool} with a subset of itself")
    keep = set(keep_ids)
    container = container_of(pool, format or "auto")
    placer = _image_placer(images, pool, out, image_root)
    schema = format if format in ("messages", "llava") else None
    rewrite = None if placer is None else (lambda row: placer.rewrite_row(row, schema))
    if container in ("parquet", "hf"):
        rows = (
            columnar.iter_parquet_rows(pool)
            if container == "parquet"
            else columnar.iter_hf_rows(pool)
        )
        indices = list(_first_kept(((i, record_id(r, f"{pool.name}#{i}")) for i, r in rows), keep))
        if container == "hf":
            return columnar.write_hf_subset(pool, out, indices, rewrite=rewrite)
        wanted = set(indices)
        return _atomic(
            out,
            lambda tmp: columnar.write_parquet_subset(
                pool, tmp, wanted.__contains__, rewrite=rewrite
            ),
        )
    reader = read_jsonl(pool) if container == "jsonl" else JsonArrayReader(pool)
    texts = _kept_texts(
        reader,
        pool.name,
        keep,
        jsonl=container == "jsonl",
        placer=placer,
        schema=schema,
    )
    if container == "jsonl":
        return _atomic(out, lambda tmp: _write_jsonl_subset(texts, tmp))
    assert isinstance(reader, JsonArrayReader)  # its layout fills in while `texts` reads it
    return _atomic(out, lambda tmp: _write_array_subset(texts, reader.layout, tmp))


def _image_placer(
    images: ImageMode | SubsetImages, pool: Path, out: Path, image_root: str | Path | None
) -> SubsetImages | None:
    if isinstance(images, SubsetImages):
        return images
    if images == "keep":
        return None
    if images in ("copy", "link"):
        return SubsetImages.for_subset(images, pool, out, image_root)
    raise ValueError(f"images must be 'keep', 'copy' or 'link', not {images!r}")


def _first_kept(pairs: Iterable[tuple[int, str]], keep: set[str]) -> Iterator[int]:
    seen: set[str] = set()
    for index, rid in pairs:
        if rid in keep and rid not in seen:
            seen.add(rid)
            yield index


def _kept_texts(
    records: Iterable[TextRecord],
    name: str,
    keep: set[str],
    jsonl: bool,
    placer: SubsetImages | None = None,
    schema: str | None = None,
) -> Iterator[str]:
    """Each kept record's exact source text; with `placer`, its image paths (only) rewritten."""
    seen: set[str] = set()
    for rec in records:
        if rec.problem is not None or rec.text is None:
            continue
        default = f"{name}:{rec.loc.line}" if jsonl else f"{name}#{rec.loc.index}"
        rid = record_id(rec.value, default)
        if rid in keep and rid not in seen:
            seen.add(rid)
            if placer is None:
                yield rec.text
            else:
                yield rewrite_json_text(rec.text, placer.rewrite(rec.value, schema))


def _write_jsonl_subset(texts: Iterable[str], out: Path) -> int:
    n = 0
    with out.open("wb") as fh:
        for text in texts:
            fh.write(text.encode("utf-8") + b"\n")
            n += 1
    return n


def _write_array_subset(texts: Iterable[str], layout: ArrayLayout, out: Path) -> int:
    n = 0
    with out.open("w", encoding="utf-8", newline="") as fh:
        fh.write("[")
        for text in texts:
            fh.write(layout.lead if n == 0 else "," + layout.sep)
            fh.write(text)
            n += 1
        fh.write((layout.trail if n else "") + "]\n")
    return n


def _atomic(out: Path, write) -> int:
    """Write to a temporary sibling and rename, so a crash never leaves a half subset behind."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        n = write(tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return n


def write_samples(samples: Iterable[Sample], out_path: str | Path, format: str = "messages") -> int:
    """Write `Sample`s as a new pool: 'messages' or 'llava' records, JSON Lines (a JSON array when
    `out_path` ends in .json). Image paths are written relative to the output's folder; images held
    as bytes are saved beside it in `<stem>_images/`. Returns the number written."""
    if format not in ("messages", "llava"):
        raise ValueError(f"write_samples writes 'messages' or 'llava' records, not {format!r}")
    out = Path(out_path)
    as_array = out.suffix.lower() == ".json"
    image_dir = out.parent / f"{out.stem}_images"

    def write(tmp: Path) -> int:
        n = 0
        with tmp.open("w", encoding="utf-8") as fh:
            fh.write("[\n" if as_array else "")
            for sample in samples:
                images = [_image_path(im, out.parent, image_dir) for im in sample.images]
                record = (_messages_record if format == "messages" else _llava_record)(
                    sample, images
                )
                text = json.dumps(record, ensure_ascii=False, default=_json_default)
                if as_array:
                    fh.write((",\n" if n else "") + "  " + text)
                else:
                    fh.write(text + "\n")
                n += 1
            fh.write("\n]\n" if as_array else "")
        return n

    return _atomic(out, write)


def _messages_record(sample: Sample, images: list[str]) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": sample.id,
        "messages": [{"role": t.role, "content": t.content} for t in sample.turns],
    }
    if images:
        record["images"] = images
    return record | {k: v for k, v in sample.extra.items() if k not in record}


def _llava_record(sample: Sample, images: list[str]) -> dict[str, Any]:
    record: dict[str, Any] = {"id": sample.id}
    if images:
        record["image"] = images[0] if len(images) == 1 else images
    record["conversations"] = [
        {"from": _LLAVA_ROLES[t.role], "value": t.content} for t in sample.turns
    ]
    return record | {k: v for k, v in sample.extra.items() if k not in record}


def _image_path(image: ImageRef, out_dir: Path, image_dir: Path) -> str:
    if image.data is None and image.path is not None:
        return os.path.relpath(image.path.resolve(), out_dir.resolve())
    data = image.read_bytes()
    target = image_dir / f"{hashlib.sha256(data).hexdigest()[:20]}.{_image_suffix(data)}"
    if not target.exists():
        image_dir.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return os.path.relpath(target.resolve(), out_dir.resolve())


def _image_suffix(data: bytes) -> str:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return (im.format or "bin").lower().replace("jpeg", "jpg")
    except Exception:  # undecodable bytes are still written, for validation to report later
        return "bin"


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    return str(value)
