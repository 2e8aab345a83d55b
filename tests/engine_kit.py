"""Real (if simple) scorers and pools for the engine tests, and a subprocess entry point to kill.

The engine is what is under test, so the scorers are deterministic functions of the sample's text
and image pixels, with switches for the faults the engine must survive: NaN values, out-of-memory
above a batch size or on given samples, a worker that dies on its first attempt, and a sleep per
batch so a test can SIGKILL a run at a chosen moment. Run as a script, it scores a pool from a
JSON spec, and can SIGKILL itself just before a chosen `os.replace` (mid-write).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FINGERPRINT = {"proxy": "text-scorer", "anchors": "none", "pool": "test", "mode": "text"}


def png_bytes(color: tuple[int, int, int], size: tuple[int, int] = (6, 6)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def write_test_pool(folder: Path, n: int = 30) -> Path:
    """A messages JSONL pool with valid samples (some with images) and bad records of each kind.

    Rejected by the reader (driver): a JSON line cut in half, an empty answer, a missing image.
    Rejected in the worker (only found when decoding): two truncated PNGs.
    Marked: sample `nan-7` makes the scorer return NaN, `inf-11` returns +inf.
    """
    folder.mkdir(parents=True, exist_ok=True)
    images = folder / "images"
    images.mkdir(exist_ok=True)
    lines: list[str] = []
    for i in range(n):
        sid = {7: "nan-7", 11: "inf-11"}.get(i, f"s{i}")
        record: dict[str, Any] = {
            "id": sid,
            "messages": [
                {"role": "user", "content": f"question {i}: what is {i} squared?"},
                {"role": "assistant", "content": f"{i * i}" + " and more" * (i % 4)},
            ],
        }
        if i % 3 == 0:
            name = f"img{i}.png"
            if i in (9, 21):  # truncated: the reader sees a file, only decoding finds the fault
                (images / name).write_bytes(png_bytes((i, 2 * i, 3 * i), (40, 40))[:60])
            else:
                (images / name).write_bytes(png_bytes((i * 5 % 256, 40, 90)))
            record["messages"][0]["content"] = "<image>" + record["messages"][0]["content"]
            record["images"] = [f"images/{name}"]
        lines.append(json.dumps(record))
        if i == 4:
            lines.append('{"id": "cut", "messages": [{"role": "user", "con')
        if i == 13:
            bad = {"id": "empty-answer", "messages": [{"role": "user", "content": "hi"}]}
            bad["messages"].append({"role": "assistant", "content": ""})
            lines.append(json.dumps(bad))
        if i == 17:
            missing = {
                "id": "no-image",
                "images": ["images/absent.png"],
                "messages": [
                    {"role": "user", "content": "<image>see?"},
                    {"role": "assistant", "content": "no"},
                ],
            }
            lines.append(json.dumps(missing))
    pool = folder / "pool.jsonl"
    pool.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return pool


def same_table(a: Any, b: Any) -> bool:
    """Row-for-row identical, NaN equal to NaN (pyarrow's `equals` says NaN != NaN)."""
    if a.schema.remove_metadata() != b.schema.remove_metadata():
        return False
    return all(
        [repr(x) for x in a.column(c).to_pylist()] == [repr(x) for x in b.column(c).to_pylist()]
        for c in a.column_names
    )


def text_utility(text: str, pixels: float) -> float:
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**63 - 1.0 + pixels / 1000.0


@dataclass
class TextScorer:
    """utility = hash of the conversation + mean pixel value; loss = text length; tokens = words."""

    spec: TextScorerFactory
    mode: str = "text"
    batch_sizes: list[int] = field(default_factory=list)
    n_batches: int = 0

    def score_samples(self, samples: Sequence[Any]) -> dict[str, list[Any]]:
        spec = self.spec
        ids = [s.id for s in samples]
        if spec.crash_marker and spec.crash_id in ids and not Path(spec.crash_marker).exists():
            Path(spec.crash_marker).write_text(str(os.getpid()))
            os._exit(1)  # the worker process dies mid-shard, as a pre-empted node would
        self.batch_sizes.append(len(samples))
        if spec.oom_above is not None and len(samples) > spec.oom_above:
            raise MemoryError(f"batch of {len(samples)} does not fit")
        if any(i in spec.oom_ids for i in ids):
            import torch

            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        utility, loss, tokens, status = [], [], [], []
        for s in samples:
            pixels = 0.0
            for im in s.images:
                data = list(im.open().get_flattened_data())
                pixels += sum(sum(p) for p in data) / (3 * len(data))
            text = "\n".join(f"{t.role}:{t.content}" for t in s.turns)
            u = text_utility(text, pixels)
            if s.id.startswith("nan-"):
                u = math.nan
            elif s.id.startswith("inf-"):
                u = math.inf
            utility.append(u)
            loss.append(len(text) / 100.0)
            tokens.append(len(text.split()))
            status.append("ok")  # deliberately: the engine must catch the NaN/inf itself
        self.n_batches += 1
        if spec.progress_file:
            Path(spec.progress_file).write_text(str(self.n_batches))
        if spec.sleep_s:
            time.sleep(spec.sleep_s)
        return {"id": ids, "utility": utility, "status": status, "loss": loss, "tokens": tokens}

    def provenance(self) -> dict[str, Any]:
        return {"scorer": "text", "mode": self.mode}


@dataclass
class TextScorerFactory:
    """Picklable recipe for `TextScorer` (built once per worker)."""

    sleep_s: float = 0.0
    oom_above: int | None = None
    oom_ids: tuple[str, ...] = ()
    crash_marker: str | None = None
    crash_id: str | None = None
    progress_file: str | None = None

    def __call__(self) -> TextScorer:
        return TextScorer(self)


def _kill_before_replace(match: str, nth: int) -> None:
    """SIGKILL this process just before the `nth` `os.replace` onto a file named `match`."""
    real_replace = os.replace
    seen = {"n": 0}

    def replace(src: Any, dst: Any, *a: Any, **kw: Any) -> None:
        if Path(dst).name == match:
            seen["n"] += 1
            if seen["n"] == nth:
                os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst, *a, **kw)

    os.replace = replace


def main(spec_json: str) -> None:
    from ostselect.engine import run_scoring

    spec = json.loads(spec_json)
    if spec.get("kill_before_replace"):
        _kill_before_replace(*spec["kill_before_replace"])
    run_scoring(
        spec["pool"],
        TextScorerFactory(**spec.get("scorer", {})),
        spec["out"],
        shard_size=spec["shard_size"],
        batch_size=spec["batch_size"],
        resume=spec.get("resume", False),
        fingerprint=FINGERPRINT,
        progress=False,
    )


if __name__ == "__main__":
    main(sys.argv[1])
