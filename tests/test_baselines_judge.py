"""The LLM judge against a fake OpenAI-compatible server on 127.0.0.1 (real HTTP), and SmolLM2
locally."""

from __future__ import annotations

import base64
import io
import json
import math
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ostselect.baselines import make_baseline, run_baseline
from ostselect.baselines.judge import JUDGE_PROMPT, parse_score
from ostselect.data.sample import IMAGE_PLACEHOLDER, ImageRef, Sample, Turn
from ostselect.scores import read_provenance


class FakeChatServer:
    """Answers /v1/chat/completions; the sample text steers it (markers like FAIL500-ONCE).

    Markers: `grade=N` -> "Score: N"; MALFORMED -> a reply without a score; FAIL500-ONCE /
    TIMEOUT-ONCE -> the first request for that sample fails (500 / no answer within the client's
    timeout); ALWAYS500 -> every request fails; BAD400 -> a 400. `gate` holds each request until
    that many are in flight at once (or 5 s pass), so the client's concurrency is observable.
    """

    def __init__(self, gate: int = 1, stall_s: float = 1.5) -> None:
        self.requests: list[dict] = []
        self.seen: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.gate = gate
        self.stall_s = stall_s
        self.cond = threading.Condition()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.handle(self, body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def handle(self, h: BaseHTTPRequestHandler, body: dict) -> None:
        text = body["messages"][1]["content"][0]["text"]
        with self.cond:
            self.requests.append(body)
            self.seen[text] += 1
            attempt = self.seen[text]
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.cond.notify_all()
            self.cond.wait_for(lambda: self.max_in_flight >= self.gate, timeout=5)
        try:
            if h.path != "/v1/chat/completions":
                return self.send(h, 404, {"error": "not found"})
            if "ALWAYS500" in text or ("FAIL500-ONCE" in text and attempt == 1):
                return self.send(h, 500, {"error": "overloaded"})
            if "BAD400" in text:
                return self.send(h, 400, {"error": "bad request"})
            if "TIMEOUT-ONCE" in text and attempt == 1:
                time.sleep(self.stall_s)
            grade = re.search(r"grade=(\d+)", text)
            reply = "Nice answer, I like it." if "MALFORMED" in text else "Sound steps."
            if grade and "MALFORMED" not in text:
                reply += f"\nScore: {grade.group(1)}"
            usage = {"prompt_tokens": len(text) // 4 + 100, "completion_tokens": 7}
            self.send(h, 200, {"choices": [{"message": {"content": reply}}], "usage": usage})
        finally:
            with self.cond:
                self.in_flight -= 1

    @staticmethod
    def send(h: BaseHTTPRequestHandler, code: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        try:
            h.send_response(code)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            pass


@pytest.fixture
def server() -> Iterator[FakeChatServer]:
    srv = FakeChatServer()
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def qa(sid: str, answer: str, images: list[bytes] = ()) -> Sample:
    question = "What is 2 + 3?"
    if images:
        question = "\n".join([IMAGE_PLACEHOLDER] * len(images)) + "\n" + question
    return Sample(
        id=sid,
        turns=[Turn("user", question), Turn("assistant", answer)],
        images=[ImageRef(data=b) for b in images],
    )


def png_bytes() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


FAST = {"model": "fake-judge", "backoff_s": 0.01, "timeout_s": 0.5, "max_retries": 3}


def test_parse_score() -> None:
    assert parse_score("good\nScore: 7") == 7
    assert parse_score("Score: 3 ... on reflection, Score: **9**") == 9
    assert parse_score("score=10/10") == 10
    assert parse_score("Score: 11") is None
    assert parse_score("Score: 0") is None
    assert parse_score("I would give it an eight") is None
    assert parse_score("") is None


def test_scores_requests_concurrently_with_images_as_data_urls(server, tmp_path) -> None:
    server.gate = 4
    image = png_bytes()
    samples = [qa(f"s{i}", f"5. grade={i + 1}", [image] if i == 0 else []) for i in range(8)]
    table = run_baseline(
        "judge",
        samples,
        endpoint=server.url,
        concurrency=4,
        cache_path=tmp_path / "c.jsonl",
        **FAST,
    )
    rows = table.to_pylist()
    assert [r["utility"] for r in rows] == [float(i + 1) for i in range(8)]
    assert [r["rank"] for r in rows] == list(range(8, 0, -1))
    assert all(r["status"] == "ok" for r in rows)
    assert len(server.requests) == 8
    assert server.max_in_flight == 4  # the pool filled up, and never went past its limit
    first = server.requests[0]["messages"]
    assert first[0] == {"role": "system", "content": JUDGE_PROMPT}
    with_image = next(b for b in server.requests if len(b["messages"][1]["content"]) == 2)
    url = with_image["messages"][1]["content"][1]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == image
    prov = read_provenance(table)
    assert prov["cost"]["judge_requests"] == 8
    assert prov["cost"]["judge_tokens_in"] == sum(r["tokens_in"] for r in rows) > 0
    assert prov["cost"]["judge_tokens_out"] == 8 * 7
    assert prov["settings"]["text_only"] is False and prov["settings"]["prompt"] == JUDGE_PROMPT


def test_retries_after_500_and_after_timeout(server) -> None:
    samples = [qa("a", "5. FAIL500-ONCE grade=8"), qa("b", "5. TIMEOUT-ONCE grade=6")]
    table = run_baseline("judge", samples, endpoint=server.url, concurrency=2, **FAST)
    rows = {r["id"]: r for r in table.to_pylist()}
    assert rows["a"]["utility"] == 8 and rows["a"]["status"] == "ok"
    assert rows["b"]["utility"] == 6 and rows["b"]["status"] == "ok"
    assert sorted(server.seen.values()) == [2, 2]
    assert read_provenance(table)["settings"]["retries_made"] == 2


def test_permanent_failures_are_recorded_not_cached(server, tmp_path) -> None:
    cache = tmp_path / "cache.jsonl"
    samples = [qa("down", "ALWAYS500"), qa("bad", "BAD400"), qa("fine", "grade=5")]
    opts = {**FAST, "max_retries": 2}
    rows = run_baseline("judge", samples, endpoint=server.url, cache_path=cache, **opts).to_pylist()
    by_id = {r["id"]: r for r in rows}
    assert by_id["down"]["status"] == "request-failed" and math.isnan(by_id["down"]["utility"])
    assert "3 attempts failed" in by_id["down"]["judge_error"]
    assert by_id["bad"]["status"] == "request-failed" and "HTTP 400" in by_id["bad"]["judge_error"]
    assert server.seen[next(t for t in server.seen if "BAD400" in t)] == 1  # 4xx: no retry
    assert by_id["fine"]["utility"] == 5
    assert len(cache.read_text().splitlines()) == 1


def test_cache_makes_a_rerun_free(server, tmp_path) -> None:
    cache = tmp_path / "judge-cache.jsonl"
    samples = [qa(f"s{i}", f"grade={3 + i}") for i in range(5)]
    first = run_baseline("judge", samples, endpoint=server.url, cache_path=cache, **FAST)
    assert len(server.requests) == 5
    second = run_baseline("judge", samples, endpoint=server.url, cache_path=cache, **FAST)
    assert len(server.requests) == 5  # zero new requests
    assert second.column("utility").to_pylist() == first.column("utility").to_pylist()
    assert all(second.column("judge_cached").to_pylist())
    cost = read_provenance(second)["cost"]
    assert cost["judge_requests"] == cost["judge_tokens_in"] == cost["judge_tokens_out"] == 0
    # Another judge model (or prompt version) is another key: it pays again.
    run_baseline(
        "judge", samples[:1], endpoint=server.url, cache_path=cache, **FAST | {"model": "m2"}
    )
    assert len(server.requests) == 6


def test_malformed_reply_is_recorded_as_unparseable(server) -> None:
    table = run_baseline("judge", [qa("m", "MALFORMED grade=9")], endpoint=server.url, **FAST)
    row = table.to_pylist()[0]
    assert row["status"] == "unparseable"
    assert math.isnan(row["utility"]) and math.isnan(row["judge_score"])
    assert row["judge_reply"] == "Nice answer, I like it."


def test_http_judge_needs_a_model_name() -> None:
    with pytest.raises(ValueError, match="model"):
        make_baseline("judge", endpoint="http://127.0.0.1:9/v1")


@pytest.mark.slow
def test_local_smollm2_judge_parses_or_records(tmp_path) -> None:
    samples = [
        qa("good", "2 + 3 = 5. The answer is 5."),
        qa("bad", "2 + 3 = 7. The answer is 7.", [png_bytes()]),
    ]
    table = run_baseline(
        "judge", samples, cache_path=tmp_path / "c.jsonl", rating="greedy", max_new_tokens=24
    )
    prov = read_provenance(table)
    settings = prov["settings"]
    assert settings["text_only"] is True and settings["backend"] == "local-hf"
    assert "SmolLM2" in settings["judge_model"]
    for row in table.to_pylist():
        assert row["status"] in ("ok", "unparseable")
        assert row["judge_reply"]
        assert row["tokens_in"] > 0 and 0 < row["tokens_out"] <= 24
        if row["status"] == "ok":
            assert 1 <= row["utility"] <= 10
        else:
            assert math.isnan(row["utility"])
    assert prov["cost"]["judge_tokens_in"] == sum(table.column("tokens_in").to_pylist())


@pytest.mark.slow
def test_local_smollm2_expected_rating_is_a_rating(tmp_path) -> None:
    """SmolLM2 puts most of its next-token probability after "Score:" on 1..10, so the default
    (expected) rating is a real number in range with fractional digits, not an integer."""
    samples = [
        qa("good", "2 + 3 = 5. The answer is 5."),
        qa("loop", "2 + 3 = 2 + 3 = 2 + 3 = 2 + 3 = 2 + 3 ="),
    ]
    table = run_baseline("judge", samples, cache_path=tmp_path / "c.jsonl")
    rows = table.to_pylist()
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert all(1 < r["utility"] < 10 and r["utility"] != round(r["utility"]) for r in rows)
    assert read_provenance(table)["settings"]["rating"] == "expected"


# ---- the local judge on a tiny Llama built offline (no download) ------------------------------


@pytest.fixture(scope="module")
def tiny_judge_dir(tmp_path_factory) -> str:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from ostselect.bench.models import digit_bpe_tokenizer
    from ostselect.proxy.arches import CHATML_TEMPLATE

    corpus = [JUDGE_PROMPT, "QUESTION: What is 2 + 3? ANSWER: 2 + 3 = 5. Score: 7", "0123456789"]
    tok = digit_bpe_tokenizer(
        corpus * 20,
        ("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
        vocab_size=400,
        bos=None,
        eos="<|im_end|>",
        pad="<|endoftext|>",
        chat_template=CHATML_TEMPLATE,
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
    )
    folder = tmp_path_factory.mktemp("tiny-judge")
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def _hand_expected_rating(judge, sample: Sample) -> float:
    """The G-Eval expectation, from one plain forward over the whole prompt (no cache, no pad)."""
    import torch

    ids = judge.tokenizer(judge.prompt(sample) + " 1", add_special_tokens=False)["input_ids"]
    digit = [judge.tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)]
    with torch.no_grad():
        logits = judge.lm(torch.tensor([ids])).logits[0].double()
    first, after_one = logits[-2].softmax(-1), logits[-1].softmax(-1)
    p = {d: float(first[digit[d]]) for d in range(1, 10)}
    q0 = float(after_one[digit[0]])
    ratings = {1: p[1] * (1 - q0), 10: p[1] * q0, **{d: p[d] for d in range(2, 10)}}
    return sum(k * v for k, v in ratings.items()) / sum(ratings.values())


def test_local_expected_rating_equals_hand_computation(tiny_judge_dir) -> None:
    """Batched, padded and sharing the system prompt's cache, each rating equals the expectation
    computed from a plain forward over that sample alone."""
    from ostselect.baselines.judge_backends import LocalHFJudge

    judge = LocalHFJudge(tiny_judge_dir, min_rating_mass=0.0)
    samples = [
        qa("short", "5"),
        qa("long", "2 + 3 = 5. " * 6 + "Answer: 5", [png_bytes()]),
        qa("mid", "Two plus three is five. Answer: 5"),
    ]
    replies = judge.complete_batch(samples)
    assert judge._prefix is not None and len(judge._prefix[0]) > 20  # the system prompt is shared
    for sample, reply in zip(samples, replies, strict=True):
        got = parse_score(reply.text)
        assert got is not None and 1.0 <= got <= 10.0
        assert got == pytest.approx(_hand_expected_rating(judge, sample), abs=1e-4)
        assert reply.tokens_out == 0 and reply.tokens_in > 20
    assert [parse_score(r.text) for r in replies] != [parse_score(replies[0].text)] * 3


def test_local_judge_records_no_rating_and_caches(tiny_judge_dir, tmp_path) -> None:
    """A random tiny model puts almost no probability on 1..10: with the default threshold that
    is recorded as unparseable (no guessed score); a rerun reads the cache."""
    samples = [qa("a", "2 + 3 = 5. Answer: 5"), qa("b", "2 + 3 = 9. Answer: 9")]
    cache = tmp_path / "judge.jsonl"
    table = run_baseline("judge", samples, model_path=tiny_judge_dir, cache_path=cache)
    rows = table.to_pylist()
    assert [r["status"] for r in rows] == ["unparseable", "unparseable"]
    assert all(math.isnan(r["utility"]) and "no rating" in r["judge_reply"] for r in rows)
    prov = read_provenance(table)
    assert prov["settings"]["rating"] == "expected" and prov["settings"]["text_only"] is True
    assert prov["cost"]["judge_requests"] == 2 and prov["cost"]["judge_tokens_out"] == 0
    again = run_baseline("judge", samples, model_path=tiny_judge_dir, cache_path=cache)
    assert read_provenance(again)["cost"]["judge_requests"] == 0
    assert again.column("judge_cached").to_pylist() == [True, True]
    greedy = run_baseline(
        "judge",
        samples,
        model_path=tiny_judge_dir,
        cache_path=cache,
        rating="greedy",
        max_new_tokens=3,
    )
    assert read_provenance(greedy)["cost"]["judge_requests"] == 2  # another rating, another key


def test_local_judge_rejects_an_unknown_rating(tiny_judge_dir) -> None:
    with pytest.raises(ValueError, match="rating"):
        make_baseline("judge", model_path=tiny_judge_dir, rating="vibes")


def test_local_judge_fails_an_over_long_sample_alone(tiny_judge_dir) -> None:
    """A prompt longer than the judge's context fails that sample's request, named, and its
    batch neighbours are still rated."""
    samples = [qa("ok1", "5"), qa("huge", "2 + 3 = 5. " * 400), qa("ok2", "Answer: 5")]
    table = run_baseline("judge", samples, model_path=tiny_judge_dir, min_rating_mass=0.0)
    rows = {r["id"]: r for r in table.to_pylist()}
    assert rows["huge"]["status"] == "request-failed"
    assert "'huge'" in rows["huge"]["judge_error"] and "context" in rows["huge"]["judge_error"]
    assert rows["ok1"]["status"] == rows["ok2"]["status"] == "ok"
    assert 1 <= rows["ok1"]["utility"] <= 10
