"""Rejected records: one stable code per reason, and the `rejects.jsonl` all stages append to.

Bad input never stops a run. A record that cannot be used becomes a `Reject` naming the sample id
(when known), the file and line, a one-line reason and a stable `code`, to grep and count.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

REJECTS_FILENAME = "rejects.jsonl"

# Stable codes (never rename: users filter rejects files on them) -> what they mean.
BAD_JSON = "bad_json"
NON_UTF8 = "non_utf8"
BAD_RECORD = "bad_record"
NO_USER_TURN = "no_user_turn"
EMPTY_ASSISTANT = "empty_assistant"
IMAGE_COUNT_MISMATCH = "image_count_mismatch"
MISSING_IMAGE = "missing_image"
BAD_IMAGE = "bad_image"
DUPLICATE_ID = "duplicate_id"
TOO_LONG = "too_long"
# Scoring: the sample stays in the scores table (utility NaN, `status` says why) and is listed here.
SCORE_PREPARE_FAILED = "score_prepare_failed"
SCORE_NONFINITE = "score_nonfinite"
SCORE_OOM = "score_oom"

# What validation finds in the data itself.
DATA_REJECT_CODES: dict[str, str] = {
    BAD_JSON: "unparseable JSON",
    NON_UTF8: "not valid UTF-8 text",
    BAD_RECORD: "not an object, or no usable conversation",
    NO_USER_TURN: "no user turn",
    EMPTY_ASSISTANT: "assistant turn missing or empty",
    IMAGE_COUNT_MISMATCH: "<image> placeholders do not match the images",
    MISSING_IMAGE: "image file not found",
    BAD_IMAGE: "image does not decode",
    DUPLICATE_ID: "duplicate id (first one kept)",
    TOO_LONG: "longer than the set maximum",
}
# Every code a rejects file can hold: the data's, plus what scoring runs into.
REJECT_CODES: dict[str, str] = {
    **DATA_REJECT_CODES,
    SCORE_PREPARE_FAILED: "the proxy could not prepare the sample for scoring",
    SCORE_NONFINITE: "non-finite loss, gradient or utility while scoring",
    SCORE_OOM: "out of memory even when scored alone",
}


@dataclass(frozen=True)
class Reject:
    """A record that cannot be used, and why (line is 1-based, None where a format has no lines)."""

    id: str | None
    file: str
    line: int | None
    reason: str
    code: str

    def to_json_line(self, stage: str | None = None) -> str:
        """The rejects file's line for this record (`stage` tags where it was set aside)."""
        record = asdict(self)
        if stage is not None:
            record["stage"] = stage
        # ensure_ascii keeps the file valid UTF-8 even when a reason quotes undecodable text.
        return json.dumps(record, ensure_ascii=True) + "\n"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        who = f"sample {self.id!r}" if self.id is not None else "record"
        return f"{where}: {who}: {self.reason} [{self.code}]"


class RejectsWriter:
    """Appends rejects as JSON lines, flushed per record, and counts them per code.

    `path` is either the rejects file itself (a `.jsonl` name) or an output folder, in which case
    the file is `<folder>/rejects.jsonl`. Stages append to one file; `stage` tags the lines,
    and `truncate=True` to start the file afresh (validation, the first stage, does).
    """

    def __init__(self, path: str | Path, *, stage: str | None = None, truncate: bool = False):
        p = Path(path)
        self.path = p if p.suffix == ".jsonl" else p / REJECTS_FILENAME
        self.stage = stage
        self.counts: Counter[str] = Counter()
        self._truncate = truncate
        self._fh: IO[str] | None = None

    def __enter__(self) -> RejectsWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("w" if self._truncate else "a", encoding="utf-8")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def add(self, reject: Reject) -> None:
        if self._fh is None:
            raise RuntimeError("RejectsWriter is not open: use it as a context manager")
        self._fh.write(reject.to_json_line(self.stage))
        self._fh.flush()
        self.counts[reject.code] += 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_rejects(path: str | Path) -> list[Reject]:
    """Load a rejects file (a folder means its `rejects.jsonl`), dropping extra keys."""
    p = Path(path)
    p = p if p.suffix == ".jsonl" else p / REJECTS_FILENAME
    out: list[Reject] = []
    with p.open(encoding="utf-8") as fh:
        for text in fh:
            if text.strip():
                d = json.loads(text)
                out.append(Reject(d["id"], d["file"], d["line"], d["reason"], d["code"]))
    return out
