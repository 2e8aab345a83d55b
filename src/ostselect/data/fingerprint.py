"""A pool's content hash, recorded in score files so results say which data they came from."""

from __future__ import annotations

import hashlib
from pathlib import Path

_CHUNK = 1 << 20


def pool_fingerprint(path: str | Path) -> str:
    """sha256 over the file's bytes, streamed; for a folder, over its files' relative paths and
    bytes in sorted order (so a `datasets` folder hashes the same wherever it lives)."""
    p = Path(path)
    h = hashlib.sha256()
    if p.is_dir():
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            h.update(f.relative_to(p).as_posix().encode("utf-8") + b"\0")
            _update(h, f)
            h.update(b"\1")
    else:
        _update(h, p)
    return h.hexdigest()


def _update(h: hashlib._Hash, f: Path) -> None:
    with f.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
