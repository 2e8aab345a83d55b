"""Streaming readers for JSON text containers: JSON Lines and a top-level JSON array.

Both keep only one record in memory at a time, and both hand back each record's exact source text so
a subset can be written back byte for byte. A JSON array is parsed incrementally with
`json.JSONDecoder.raw_decode` over a sliding buffer (no third-party streaming parser needed).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ostselect.data.rejects import BAD_JSON, NON_UTF8
from ostselect.data.sample import SourceLoc

_BOM = "\ufeff"
_WS = " \t\r\n"


class PoolError(Exception):
    """The pool cannot be read as a whole (missing, wrong kind of file, corrupt container)."""


@dataclass
class TextRecord:
    """One record's source: where it is, its exact text, and its parsed value (or why it failed)."""

    loc: SourceLoc
    text: str | None
    value: Any = None
    problem: tuple[str, str] | None = None  # (reject code, reason)


def sniff_container(path: Path) -> str:
    """'array' when the first non-blank character (after a BOM) is '[', else 'jsonl'."""
    first = _first_nonblank_line(path)
    return "array" if first.startswith(b"[") else "jsonl"


def _first_nonblank_line(path: Path, limit: int = 1 << 16) -> bytes:
    """The first non-blank line, stripped (at most `limit` bytes of it)."""
    with path.open("rb") as fh:
        for n, line in enumerate(iter(lambda: fh.readline(limit), b"")):
            body = line[3:] if n == 0 and line.startswith(b"\xef\xbb\xbf") else line
            if body.strip(b" \t\r\n"):
                return body.strip(b" \t\r\n")
    return b""


def check_jsonl_shape(path: Path) -> None:
    """Refuse a pretty-printed single JSON object early, instead of rejecting each of its lines."""
    if _first_nonblank_line(path) == b"{":
        raise PoolError(
            f"{path} looks like one pretty-printed JSON object: a pool must be JSON Lines "
            "(one record per line) or a JSON array of records"
        )


def read_jsonl(path: Path) -> Iterator[TextRecord]:
    """Yield one `TextRecord` per non-blank line; bad bytes or JSON become problems, not errors."""
    name = str(path)
    index = 0
    with path.open("rb") as fh:
        for lineno, line in enumerate(fh, start=1):
            body = line.rstrip(b"\n")
            if lineno == 1 and body.startswith(b"\xef\xbb\xbf"):
                body = body[3:]
            if not body.strip(b" \t\r\n"):
                continue
            loc = SourceLoc(name, line=lineno, index=index)
            index += 1
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as e:
                reason = (
                    f"line is not valid UTF-8 (byte {e.start}: {body[e.start : e.start + 4]!r})"
                )
                # Parse a repaired copy only to name the sample in the reject; it is never used.
                yield TextRecord(loc, None, _loads_or_none(body), problem=(NON_UTF8, reason))
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as e:
                yield TextRecord(loc, text, problem=(BAD_JSON, _json_reason(e, text)))
            except RecursionError:
                yield TextRecord(loc, text, problem=(BAD_JSON, "JSON nested too deeply"))
            else:
                yield TextRecord(loc, text, value)


def _loads_or_none(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8", errors="replace"))
    except (json.JSONDecodeError, RecursionError):
        return None


def _json_reason(e: json.JSONDecodeError, text: str) -> str:
    cut_off = e.msg.startswith("Unterminated") or e.pos >= len(text.rstrip())
    hint = " - the line looks cut off" if cut_off else ""
    return f"unparseable JSON: {e.msg} (column {e.colno}){hint}"


@dataclass
class ArrayLayout:
    """The whitespace around a JSON array's elements, so a subset keeps the file's look."""

    lead: str = "\n"  # between '[' and the first element
    sep: str = "\n"  # after each ',' between elements
    trail: str = "\n"  # between the last element and ']'


class JsonArrayReader:
    """Incrementally parse a file holding one JSON array of records.

    Iterating yields a `TextRecord` per element (its exact text and 1-based starting line). If the
    array itself breaks (e.g. a cut-off file), the records before the break are kept and the rest of
    the file becomes a single `bad_json` problem. `layout` is filled in while reading.
    """

    def __init__(self, path: Path, chunk_chars: int = 1 << 16):
        self.path = path
        self.layout = ArrayLayout()
        self._chunk = chunk_chars
        self._decoder = json.JSONDecoder()

    def __iter__(self) -> Iterator[TextRecord]:
        # surrogateescape: bad bytes survive decoding and are reported per element, not per file.
        with self.path.open(encoding="utf-8", errors="surrogateescape", newline="") as fh:
            yield from _ArrayScan(fh, self._chunk, self._decoder, self.layout, str(self.path))


class _ArrayScan:
    def __init__(
        self, fh: IO[str], chunk: int, decoder: json.JSONDecoder, layout: ArrayLayout, name: str
    ):
        self.fh, self.chunk, self.decoder, self.layout, self.name = fh, chunk, decoder, layout, name
        self.buf = ""
        self.pos = 0
        self.eof = False
        self.line = 1  # line number at `line_pos`
        self.line_pos = 0

    def _fill(self, size: int | None = None) -> bool:
        if self.eof:
            return False
        data = self.fh.read(size or self.chunk)
        if not data:
            self.eof = True
            return False
        if self.pos > self.chunk:  # drop consumed text so the buffer stays one record long
            self.line += self.buf.count("\n", self.line_pos, self.pos)
            self.buf = self.buf[self.pos :]
            self.line_pos = 0
            self.pos = 0
        self.buf += data
        return True

    def _skip_ws(self) -> str:
        """Skip whitespace, return it; then buf[pos] is the next character (or EOF)."""
        start = self.pos
        skipped: list[str] = []
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in _WS:
                self.pos += 1
            if self.pos < len(self.buf):
                break
            skipped.append(self.buf[start : self.pos])
            if not self._fill():
                return "".join(skipped)
            start = self.pos
        skipped.append(self.buf[start : self.pos])
        return "".join(skipped)

    def _line_at(self, pos: int) -> int:
        self.line += self.buf.count("\n", self.line_pos, pos)
        self.line_pos = pos
        return self.line

    def _peek(self) -> str:
        return self.buf[self.pos] if self.pos < len(self.buf) else ""

    def __iter__(self) -> Iterator[TextRecord]:
        self._fill()
        if self.buf.startswith(_BOM):
            self.pos = 1
        self._skip_ws()
        if self._peek() != "[":
            raise PoolError(f"{self.name}: expected a JSON array ('[') or JSON Lines")
        self.pos += 1
        self.layout.lead = self._skip_ws()
        index = 0
        if self._peek() == "]":
            self.layout.trail = ""
            yield from self._after_end(index)
            return
        while True:
            loc = SourceLoc(self.name, line=self._line_at(self.pos), index=index)
            parsed = self._decode_element()
            if parsed is None:
                yield self._broken(loc)
                return
            value, end = parsed
            text = self.buf[self.pos : end]  # pos may have moved if the buffer was compacted
            self.pos = end
            if _has_surrogates(text):
                reason = "record is not valid UTF-8 text"
                yield TextRecord(loc, None, value, problem=(NON_UTF8, reason))
            else:
                yield TextRecord(loc, text, value)
            index += 1
            ws = self._skip_ws()
            nxt = self._peek()
            if nxt == ",":
                self.pos += 1
                sep = self._skip_ws()
                if index == 1:
                    self.layout.sep = sep
                if self._peek() == "]":  # trailing comma: tolerated, as many writers emit it
                    self.layout.trail = sep
                    yield from self._after_end(index)
                    return
            elif nxt == "]":
                self.layout.trail = ws
                yield from self._after_end(index)
                return
            else:
                yield self._broken(SourceLoc(self.name, line=self._line_at(self.pos), index=index))
                return

    def _decode_element(self) -> tuple[Any, int] | None:
        """raw_decode at pos, reading more text while the element may just be incomplete."""
        grow = self.chunk
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buf, self.pos)
                if end < len(self.buf) or not self._fill(grow):  # a bare number may go on
                    return value, end
            except json.JSONDecodeError as e:
                incomplete = e.pos >= len(self.buf) - 1 or e.msg.startswith("Unterminated")
                if not (incomplete and self._fill(grow)):
                    self._error = e
                    return None
                grow *= 2
            except RecursionError:
                self._error = None
                return None

    def _broken(self, loc: SourceLoc) -> TextRecord:
        e = getattr(self, "_error", None)
        detail = f"{e.msg}" if isinstance(e, json.JSONDecodeError) else "malformed or too deep"
        reason = (
            f"unparseable JSON: the array breaks here ({detail}); "
            "the rest of the file cannot be read: fix it, or convert the pool to JSON Lines"
        )
        return TextRecord(loc, None, problem=(BAD_JSON, reason))

    def _after_end(self, index: int) -> Iterator[TextRecord]:
        self.pos += 1  # past ']'
        self._skip_ws()
        if self._peek():
            loc = SourceLoc(self.name, line=self._line_at(self.pos), index=index)
            reason = "unparseable JSON: text after the end of the array is ignored"
            yield TextRecord(loc, None, problem=(BAD_JSON, reason))


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
