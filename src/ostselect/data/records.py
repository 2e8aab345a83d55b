"""Turn one parsed record (a dict from any container) into a `Sample`, or say why it cannot be one.

Two record schemas are understood, whatever the container (JSONL, JSON array, Parquet, HF datasets):
- messages (LLaMA-Factory / OpenAI): `messages: [{role, content}]`, `images: [...]`; `content` is a
  string with `<image>` placeholders or a list of typed parts (`text`, `image`, `image_url`);
- LLaVA / ShareGPT: `conversations: [{from, value}]`, `image` (str or list) or `images`.
Images are paths (resolved against the data file's folder or an image root), `data:` URLs, raw
bytes, or the `{"bytes", "path"}` dicts `datasets` stores for Image features.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ostselect.data.rejects import BAD_RECORD, MISSING_IMAGE, NON_UTF8
from ostselect.data.sample import IMAGE_PLACEHOLDER, ImageRef, Role, Sample, SourceLoc, Turn

SCHEMAS = ("messages", "llava")

_ROLES: dict[str, Role] = {
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "model": "assistant",
    "system": "system",
}
_CONSUMED_KEYS = {
    "messages": frozenset({"id", "messages", "images", "system"}),
    "llava": frozenset({"id", "conversations", "image", "images", "system"}),
}


class RecordProblem(Exception):
    """A record that cannot become a `Sample`; `code` is a stable reject code."""

    def __init__(self, code: str, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class RecordContext:
    """What a record needs to know about where it came from."""

    file: str
    base_dir: (
        Path  # relative image paths resolve against this (the data file's folder or image root)
    )
    schema: str | None = None  # "messages", "llava", or None to decide per record


def record_id(record: Any, default_id: str) -> str:
    """The record's own `id` as text, or the stable id derived from file and position."""
    rid = record.get("id") if isinstance(record, dict) else None
    if rid is None or rid == "":
        return default_id
    if isinstance(rid, str):
        return rid
    if isinstance(rid, int) and not isinstance(rid, bool):
        return str(rid)
    return json.dumps(rid, sort_keys=True, default=str)


def record_to_sample(
    record: Any, ctx: RecordContext, *, loc: SourceLoc, default_id: str, raw: Any
) -> Sample:
    """Parse one record; raises `RecordProblem` with a reject code when it cannot be a sample."""
    if not isinstance(record, dict):
        raise RecordProblem(BAD_RECORD, f"record is a JSON {_kind(record)}, not an object")
    schema = ctx.schema or _detect_schema(record)
    if schema == "messages":
        turns, slots = _messages_turns(record)
    else:
        turns, slots = _llava_turns(record)
    system = record.get("system")
    if isinstance(system, str) and system.strip():
        turns.insert(0, Turn("system", system))
    listed = _listed_images(record, schema)
    images = _assign_images(slots, listed, ctx.base_dir)
    for t in turns:
        if not _is_utf8(t.content):
            raise RecordProblem(NON_UTF8, f"{t.role} turn contains an unpaired surrogate escape")
    consumed = _CONSUMED_KEYS[schema]
    extra = {k: v for k, v in record.items() if k not in consumed}
    return Sample(
        id=record_id(record, default_id),
        turns=turns,
        images=images,
        extra=extra,
        source=loc,
        raw=raw,
    )


def _detect_schema(record: dict[str, Any]) -> str:
    if "messages" in record:
        return "messages"
    if "conversations" in record:
        return "llava"
    keys = ", ".join(sorted(map(str, record))[:8]) or "none"
    raise RecordProblem(
        BAD_RECORD, f"no `messages` or `conversations` list (keys: {keys}): not a conversation"
    )


def _messages_turns(record: dict[str, Any]) -> tuple[list[Turn], list[Any]]:
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        hint = (
            " (this looks like LLaVA data: use --format llava)" if "conversations" in record else ""
        )
        raise RecordProblem(BAD_RECORD, f"`messages` is missing or not a non-empty list{hint}")
    turns: list[Turn] = []
    slots: list[Any] = []  # one entry per image placeholder: an inline image source, or None
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise RecordProblem(BAD_RECORD, f"message {i} is a {_kind(m)}, not an object")
        role = _role(m.get("role"), i)
        turns.append(Turn(role, _content_text(m.get("content"), i, slots)))
    return turns, slots


def _llava_turns(record: dict[str, Any]) -> tuple[list[Turn], list[Any]]:
    conv = record.get("conversations")
    if not isinstance(conv, list) or not conv:
        hint = (
            " (this looks like messages data: use --format messages)"
            if "messages" in record
            else ""
        )
        raise RecordProblem(BAD_RECORD, f"`conversations` is missing or not a non-empty list{hint}")
    turns: list[Turn] = []
    slots: list[Any] = []
    for i, m in enumerate(conv):
        if not isinstance(m, dict):
            raise RecordProblem(BAD_RECORD, f"turn {i} is a {_kind(m)}, not an object")
        role = _role(m.get("from", m.get("role")), i)
        value = m.get("value", m.get("content"))
        turns.append(Turn(role, _content_text(value, i, slots)))
    return turns, slots


def _role(value: Any, i: int) -> Role:
    role = _ROLES.get(value.strip().lower()) if isinstance(value, str) else None
    if role is None:
        raise RecordProblem(
            BAD_RECORD,
            f"turn {i} has role {value!r}; expected user/human, assistant/gpt or system",
        )
    return role


def _content_text(content: Any, i: int, slots: list[Any]) -> str:
    """Flatten a turn's content to text with placeholders; note each placeholder's image source."""
    if content is None:
        return ""
    if isinstance(content, str):
        slots.extend([None] * content.count(IMAGE_PLACEHOLDER))
        return content
    if not isinstance(content, list):
        raise RecordProblem(
            BAD_RECORD, f"turn {i} content is a {_kind(content)}, not text or parts"
        )
    pieces: list[str] = []
    for part in content:
        if isinstance(part, str):
            slots.extend([None] * part.count(IMAGE_PLACEHOLDER))
            pieces.append(part)
            continue
        if not isinstance(part, dict):
            raise RecordProblem(BAD_RECORD, f"turn {i} has a content part that is a {_kind(part)}")
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise RecordProblem(BAD_RECORD, f"turn {i} has a text part without `text`")
            slots.extend([None] * text.count(IMAGE_PLACEHOLDER))
            pieces.append(text)
        elif kind in ("image", "image_url"):
            slots.append(_inline_image(part))
            pieces.append(IMAGE_PLACEHOLDER)
        else:
            raise RecordProblem(BAD_RECORD, f"turn {i} has an unsupported content part {kind!r}")
    return "\n".join(pieces)


def _inline_image(part: dict[str, Any]) -> Any:
    """The image a typed part carries itself (OpenAI `image_url`, Qwen-style `image`), or None."""
    for key in ("image_url", "image", "url", "path"):
        value = part.get(key)
        if isinstance(value, dict):
            value = value.get("url", value) if key == "image_url" else value
        if value is not None:
            return value
    return None


def _listed_images(record: dict[str, Any], schema: str) -> list[Any]:
    value = record.get("images")
    if value is None and schema == "llava":
        value = record.get("image")
    if value is None:
        return []
    if isinstance(value, (str, bytes, dict)):
        return [value]
    if isinstance(value, list):
        return value
    raise RecordProblem(BAD_RECORD, f"images field is a {_kind(value)}, not a list or a path")


def _assign_images(slots: list[Any], listed: list[Any], base_dir: Path) -> list[ImageRef]:
    """Images in placeholder order: inline ones where given, else the next listed image."""
    pending: Iterator[Any] = iter(listed)
    out: list[ImageRef] = []
    for inline in slots:
        source = inline if inline is not None else next(pending, None)
        if source is not None:
            out.append(image_ref(source, base_dir))
    out.extend(image_ref(source, base_dir) for source in pending)
    return out


def image_ref(source: Any, base_dir: Path) -> ImageRef:
    """An `ImageRef` from a path, `file://`/`data:` URL, raw bytes, or a `{"bytes","path"}` dict."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return ImageRef(data=bytes(source))
    if isinstance(source, dict):
        data = source.get("bytes")
        if data is not None:
            if isinstance(data, str):  # base64 text, as JSON exports of bytes columns often hold
                return ImageRef(data=_b64(data))
            return image_ref(data, base_dir)
        for key in ("path", "url", "image"):
            if isinstance(source.get(key), str):
                return image_ref(source[key], base_dir)
        raise RecordProblem(BAD_RECORD, "image entry has neither `bytes` nor `path`")
    if not isinstance(source, str) or not source.strip():
        raise RecordProblem(BAD_RECORD, f"image entry is a {_kind(source)}, not a path")
    if source.startswith("data:"):
        _, _, payload = source.partition(",")
        return ImageRef(data=_b64(payload))
    if source.startswith(("http://", "https://")):
        raise RecordProblem(
            MISSING_IMAGE, f"remote image {source[:80]!r} is not fetched: download it, give a path"
        )
    if source.startswith("file://"):
        source = source[len("file://") :]
    if "\0" in source:
        raise RecordProblem(BAD_RECORD, "image path contains a NUL character")
    path = Path(source)
    return ImageRef(path=path if path.is_absolute() else base_dir / path)


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise RecordProblem(BAD_RECORD, f"image data is not valid base64 ({e})") from None


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _kind(value: Any) -> str:
    return {
        dict: "object",
        list: "array",
        str: "string",
        bool: "boolean",
        int: "number",
        float: "number",
        type(None): "null",
    }.get(type(value), type(value).__name__)
