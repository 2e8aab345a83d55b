"""Temp files for atomic writes (temp sibling, then `os.replace`) that honour the umask.

`tempfile.mkstemp` creates its file 0600 so nobody can race for it; renamed into place as is, every
output (report, scores, shards, manifest) would stay owner-only whatever the umask, and could not be
shared. The temp file gets the mode a plain `open()` would have given before anything is written.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def default_file_mode() -> int:
    """`0o666 & ~umask`: the mode `open()` gives a new file (the umask can only be read by setting
    it, so it is set and put back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def temp_beside(path: Path) -> tuple[int, str]:
    """(fd, name) of a new temp file in `path`'s folder, to be `os.replace`d onto `path`."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    if hasattr(os, "fchmod"):  # POSIX; elsewhere mkstemp's mode is what the OS allows
        os.fchmod(fd, default_file_mode())
    return fd, tmp
