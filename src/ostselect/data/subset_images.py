"""Self-contained subsets: put each kept record's image files beside the subset, point it at them.

A subset keeps its records' image paths, and relative ones resolve against the *pool's* folder, so a
subset copied elsewhere (another machine, a trainer's data folder) loses its images. `SubsetImages`
copies (or symlinks) every local image file of the kept records into `<subset folder>/images/` and
gives the new path, relative to the subset file, for each image field. The writers then change
only those fields: a JSON record keeps its exact text except the image path strings
(`rewrite_json_text`), a Parquet / `datasets` row keeps every other value and the schema.

Names never collide: a relative path inside the pool's folder keeps its shape (`images/<path>`);
an absolute path, or one that climbs out of the pool's folder, gets a content-hash name with the
original suffix. Images held as bytes (`data:` URLs, `{"bytes": ...}` structs, Image features) are
already inside the records and stay as they are; remote URLs are left alone too.
"""

from __future__ import annotations

import filecmp
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from json.decoder import scanstring
from pathlib import Path, PurePosixPath
from typing import Any, Literal

ImageMode = Literal["keep", "copy", "link"]
IMAGE_MODES: tuple[str, ...] = ("keep", "copy", "link")
IMAGES_FOLDER = "images"

FieldPath = tuple[str | int, ...]  # keys and list indices from the record's root to a string

_INLINE_KEYS = ("image_url", "image", "url", "path")  # as `records._inline_image` reads them
_DICT_PATH_KEYS = ("path", "url", "image")  # as `records.image_ref` reads `{"bytes","path"}` dicts


@dataclass
class ImageCounts:
    """What placing the images did, for the command's summary line."""

    copied: int = 0
    linked: int = 0
    reused: int = 0  # image fields pointing at a file already placed for an earlier field
    embedded: int = 0  # images held as bytes inside the records: nothing to place
    missing: list[str] = field(default_factory=list)  # sources not found: left as they were
    link_error: str | None = None  # why symlinks failed (then files were copied instead)

    @property
    def files(self) -> int:
        return self.copied + self.linked


class SubsetImages:
    """Copy or link the images of kept records into one folder beside a subset file.

    `source_dir` is where the pool's relative image paths resolve (the pool file's folder, or the
    image root); `subset_dir` is the folder of the subset file (of a `datasets` folder: its parent,
    where the readers resolve relative paths). One file is placed once however many records use it.
    """

    def __init__(
        self,
        mode: Literal["copy", "link"],
        source_dir: str | Path,
        subset_dir: str | Path,
        folder: str = IMAGES_FOLDER,
    ) -> None:
        if mode not in ("copy", "link"):
            raise ValueError(f"image mode must be 'copy' or 'link', not {mode!r}")
        self.mode = mode
        self.source_dir = Path(os.path.abspath(source_dir))
        self.subset_dir = Path(os.path.abspath(subset_dir))
        self.folder = folder
        self.counts = ImageCounts()
        self._placed: dict[str, str] = {}  # absolute source -> new path (relative to subset_dir)
        self._claims: dict[str, str] = {}  # casefolded name under folder -> identity of its file

    @classmethod
    def for_subset(
        cls,
        mode: Literal["copy", "link"],
        pool_path: str | Path,
        out_path: str | Path,
        image_root: str | Path | None = None,
    ) -> SubsetImages:
        """The placer `write_subset` uses: sources resolve as `read_pool` resolves them."""
        pool, out = Path(pool_path), Path(out_path)
        source_dir = Path(image_root) if image_root is not None else pool.parent
        folder = IMAGES_FOLDER if out.name != IMAGES_FOLDER else f"{out.stem}_{IMAGES_FOLDER}"
        return cls(mode, source_dir, out.parent, folder)

    @property
    def images_dir(self) -> Path:
        return self.subset_dir / self.folder

    def rewrite(self, record: Any, schema: str | None = None) -> dict[FieldPath, str]:
        """New path text for each image field of `record` that names a local file (placing it)."""
        if not isinstance(record, dict):
            return {}
        new: dict[FieldPath, str] = {}
        for path, value in image_fields(record, schema):
            if value is None:
                self.counts.embedded += 1
                continue
            placed = self.place(value)
            if placed is not None:
                new[path] = placed
        return new

    def rewrite_row(self, row: dict[str, Any], schema: str | None = None) -> bool:
        """Rewrite a row's image fields in place (Parquet / `datasets` rows); True if any did."""
        new = self.rewrite(row, schema)
        for path, text in new.items():
            parent: Any = row
            for key in path[:-1]:
                parent = parent[key]
            parent[path[-1]] = text
        return bool(new)

    def place(self, source: str) -> str | None:
        """Put the file `source` names under the images folder: its new path (None: leave it)."""
        text = source
        if not text.strip() or text.startswith(("data:", "http://", "https://")) or "\0" in text:
            return None  # bytes in the record, or not a local file
        if text.startswith("file://"):
            text = text[len("file://") :]
        src = Path(os.path.abspath(self.source_dir / text))  # an absolute `text` replaces the dir
        key = str(src)
        if key in self._placed:
            self.counts.reused += 1
            return self._placed[key]
        if not src.is_file():
            self.counts.missing.append(source)
            return None
        name = self._claim(*self._name_for(text, src), src)
        dest = self.images_dir / name
        self._put(src, dest)
        rel = PurePosixPath(*Path(os.path.relpath(dest, self.subset_dir)).parts).as_posix()
        self._placed[key] = rel
        return rel

    def _name_for(self, text: str, src: Path) -> tuple[str, str]:
        """(name, identity): the relative path itself when it stays inside the pool's folder (one
        file per path), else a content-hash name (one file per content)."""
        if not os.path.isabs(text):
            parts = Path(os.path.normpath(text)).parts
            if parts and parts[0] not in (os.pardir, os.curdir):
                return PurePosixPath(*parts).as_posix(), f"path:{src}"
        digest = _file_digest(src)
        return digest[:20] + src.suffix.lower(), f"sha256:{digest}"

    def _claim(self, name: str, identity: str, src: Path) -> str:
        """`name`, or `name~N` when another image holds it: in this run (case-insensitively, so a
        subset copied to a case-insensitive disk keeps every image) or on disk from an earlier
        subset written to the same folder, whose records must keep their own images."""
        stem, suffix = os.path.splitext(name)
        candidate, n = name, 0
        while True:
            holder = self._claims.get(candidate.casefold())
            if holder == identity or (holder is None and self._free(candidate, src)):
                self._claims[candidate.casefold()] = identity
                return candidate
            n += 1
            candidate = f"{stem}~{n}{suffix}"

    def _free(self, name: str, src: Path) -> bool:
        """Whether `name` may hold `src`: nothing there yet, or the same bytes already."""
        dest = self.images_dir / name
        if not os.path.lexists(dest) or (dest.is_symlink() and not dest.exists()):
            return True
        return dest.is_file() and filecmp.cmp(dest, src, shallow=False)

    def _put(self, src: Path, dest: Path) -> None:
        """Copy or link atomically; never write *through* an old link or onto the source itself."""
        if dest.exists() and not dest.is_symlink() and os.path.samefile(dest, src):
            self._count(self.mode)  # the subset sits where the images already are
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        if self.mode == "link" and self.counts.link_error is None:
            if dest.is_symlink() and os.readlink(dest) == str(src):
                self._count("link")
                return
            tmp = _tmp_name(dest)
            try:
                os.symlink(src, tmp)
                os.replace(tmp, dest)
            except OSError as e:
                Path(tmp).unlink(missing_ok=True)
                self.counts.link_error = e.strerror or str(e)
            else:
                self._count("link")
                return
        tmp = _tmp_name(dest)
        try:
            shutil.copyfile(src, tmp)  # the mode a new file gets (umask), as other outputs
            os.replace(tmp, dest)
        finally:
            Path(tmp).unlink(missing_ok=True)
        self._count("copy")

    def _count(self, how: str) -> None:
        if how == "link":
            self.counts.linked += 1
        else:
            self.counts.copied += 1


def image_fields(
    record: dict[str, Any], schema: str | None = None
) -> Iterator[tuple[FieldPath, Any]]:
    """(path, text) for every image field the readers would read as a path; text None = bytes.

    Follows `ostselect.data.records`: the `images` list (LLaVA: else `image`), entries that are
    strings or `{"bytes", "path"}` dicts, and image parts inside turn contents.
    """
    schema = schema or ("messages" if "messages" in record else "llava")
    key = "images" if record.get("images") is not None else None
    if key is None and schema == "llava" and record.get("image") is not None:
        key = "image"
    if key is not None:
        listed = record[key]
        if isinstance(listed, list):
            for i, entry in enumerate(listed):
                yield from _entry((key, i), entry)
        else:
            yield from _entry((key,), listed)
    turns_key = "messages" if schema == "messages" else "conversations"
    turns = record.get(turns_key)
    if not isinstance(turns, list):
        return
    for t, turn in enumerate(turns):
        if not isinstance(turn, dict):
            continue
        ck = "content" if schema == "messages" or "value" not in turn else "value"
        content = turn.get(ck)
        if not isinstance(content, list):
            continue
        for p, part in enumerate(content):
            if isinstance(part, dict) and part.get("type") in ("image", "image_url"):
                yield from _inline((turns_key, t, ck, p), part)


def _entry(path: FieldPath, entry: Any) -> Iterator[tuple[FieldPath, Any]]:
    if isinstance(entry, str):
        yield path, entry
    elif isinstance(entry, (bytes, bytearray, memoryview)):
        yield path, None
    elif isinstance(entry, dict):
        if entry.get("bytes") is not None:
            yield path, None
            return
        for k in _DICT_PATH_KEYS:
            if isinstance(entry.get(k), str):
                yield (*path, k), entry[k]
                return


def _inline(path: FieldPath, part: dict[str, Any]) -> Iterator[tuple[FieldPath, Any]]:
    for key in _INLINE_KEYS:
        value = part.get(key)
        if value is None:
            continue
        if key == "image_url" and isinstance(value, dict) and "url" in value:
            yield from _entry((*path, key, "url"), value["url"])
        else:
            yield from _entry((*path, key), value)
        return


def rewrite_json_text(text: str, new: dict[FieldPath, str]) -> str:
    """`text` with only the string values at `new`'s paths replaced; every other byte kept."""
    if not new:
        return text
    spans = _string_spans(text)
    edits = sorted(((spans[p], v) for p, v in new.items()), key=lambda e: e[0][0], reverse=True)
    for (start, end), value in edits:
        text = text[:start] + json.dumps(value, ensure_ascii=False) + text[end:]
    return text


_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


def _string_spans(text: str) -> dict[FieldPath, tuple[int, int]]:
    """Where each string value of one JSON value sits in `text`, by its path (last key wins)."""
    spans: dict[FieldPath, tuple[int, int]] = {}

    def ws(i: int) -> int:
        return _WS.match(text, i).end()  # type: ignore[union-attr]

    def walk(i: int, path: FieldPath) -> int:
        c = text[i]
        if c == '"':
            _, end = scanstring(text, i + 1)
            spans[path] = (i, end)
            return end
        if c in "{[":
            close, n = ("}" if c == "{" else "]"), 0
            i = ws(i + 1)
            while text[i] != close:
                if c == "{":
                    key, i = scanstring(text, i + 1)
                    i = ws(ws(i) + 1)  # past ':'
                    i = ws(walk(i, (*path, key)))
                else:
                    i = ws(walk(i, (*path, n)))
                    n += 1
                if text[i] == ",":
                    i = ws(i + 1)
            return i + 1
        return _DECODER.raw_decode(text, i)[1]  # number, true, false, null

    walk(ws(0), ())
    return spans


def _file_digest(src: Path) -> str:
    h = hashlib.sha256()
    with src.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _tmp_name(dest: Path) -> str:
    return str(dest.with_name(f".{dest.name}.tmp-{os.getpid()}"))
