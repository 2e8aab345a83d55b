"""The one in-memory sample type every part of ostselect works with.

A sample is format-neutral: readers turn messages-JSONL / LLaVA / Parquet / HF-datasets records into
`Sample`s, and writers put the *original record* back (`raw`), so a kept record is written out
unchanged. Image positions in the conversation are marked with `IMAGE_PLACEHOLDER`.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

IMAGE_PLACEHOLDER = "<image>"
Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class ImageRef:
    """An image given either as a file path (already resolved) or as encoded bytes."""

    path: Path | None = None
    data: bytes | None = None

    def read_bytes(self) -> bytes:
        if self.data is not None:
            return self.data
        if self.path is None:
            raise ValueError("ImageRef has neither a path nor bytes")
        return self.path.read_bytes()

    def open(self):  # -> PIL.Image.Image
        """Decode to an RGB PIL image (Pillow is imported lazily)."""
        from PIL import Image

        with Image.open(io.BytesIO(self.read_bytes())) as im:
            return im.convert("RGB")

    def describe(self) -> str:
        return str(self.path) if self.path is not None else f"<{len(self.data or b'')} bytes>"


@dataclass(frozen=True)
class Turn:
    """One conversation turn; `content` is text with `IMAGE_PLACEHOLDER` where images go."""

    role: Role
    content: str


@dataclass(frozen=True)
class SourceLoc:
    """Where a record came from, for messages and rejects (line is 1-based; index is 0-based)."""

    file: str
    line: int | None = None
    index: int | None = None

    def __str__(self) -> str:
        if self.line is not None:
            return f"{self.file}:{self.line}"
        if self.index is not None:
            return f"{self.file}[{self.index}]"
        return self.file


@dataclass
class Sample:
    """A multimodal SFT sample: id, images, conversation, and every other field kept verbatim."""

    id: str
    turns: list[Turn]
    images: list[ImageRef] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    source: SourceLoc | None = None
    raw: Any = None  # the original record (dict, or the exact JSON text line) for round trips

    @property
    def user_text(self) -> str:
        return "\n".join(t.content for t in self.turns if t.role == "user")

    @property
    def assistant_text(self) -> str:
        return "\n".join(t.content for t in self.turns if t.role == "assistant")

    def content_hash(self) -> str:
        """Hash of what the model sees (turns + image bytes); equal content -> equal hash."""
        h = hashlib.sha256()
        for t in self.turns:
            h.update(t.role.encode())
            h.update(b"\0")
            h.update(t.content.encode())
            h.update(b"\1")
        for im in self.images:
            try:
                h.update(hashlib.sha256(im.read_bytes()).digest())
            except OSError:
                h.update(im.describe().encode())
        return h.hexdigest()
