"""The load generator against a scripted in-process SSE server (the generator is the thing under test): what it sends,
what it records, how many requests it keeps in flight, and exact-length prompts."""

import asyncio
import json
import math
import re
import threading

import numpy as np
import pytest
from aiohttp import web

from llmconform import models
from llmconform.config.workloads import LoadPoint, Workload
from llmconform.perf import loadgen
from llmconform.perf.loadgen import Target
from llmconform.perf.prompts import Prompt, PromptError, PromptTokenizer
from llmconform.perf.records import read_records, write_records


class ScriptedServer:
    """An OpenAI-style streaming completions server on a background event loop. Each request streams
    `max_tokens` chunks (one token each) with usage and [DONE]; prompts containing FAIL get HTTP 500, EMPTY a stream
    without choices, BROKEN an error event, NOUSAGE no usage chunk. `hold_until` in-flight requests are held before
    streaming (a barrier that proves how many the client keeps open at once). /tokenize counts like a server whose
    tokenizer splits digits."""

    def __init__(self, tokenizer=None, hold_until: int = 0):
        self.tokenizer = tokenizer
        self.hold_until = hold_until
        self.bodies: list[dict] = []
        self.in_flight = 0
        self.peak = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        self.released = asyncio.run_coroutine_threadsafe(self._make_event(), self.loop).result()
        self.runner, self.port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result()
        return self

    def __exit__(self, *exc):
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _make_event(self):
        return asyncio.Event()

    async def _start(self):
        app = web.Application()
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/tokenize", self.tokenize)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
        await site.start()
        return runner, site._server.sockets[0].getsockname()[1]

    async def tokenize(self, request):
        # Like transformers' Qwen2 tokenizer beside a plain tokenizer.json: every digit is a token of its own.
        ids = []
        for piece in re.split(r"(\d)", (await request.json())["prompt"]):
            if piece.isdigit():
                ids.append(self.tokenizer.token_to_id(piece))
            elif piece:
                ids += self.tokenizer.encode(piece, add_special_tokens=False).ids
        return web.json_response({"count": len(ids), "tokens": ids})

    async def completions(self, request):
        body = await request.json()
        self.bodies.append(body)
        if "FAIL" in body["prompt"]:
            return web.json_response({"error": {"message": "boom"}}, status=500)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if self.in_flight >= self.hold_until:
                self.released.set()
            if self.hold_until:
                await asyncio.wait_for(self.released.wait(), timeout=120)
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            if "BROKEN" in body["prompt"]:
                await response.write(b'data: {"error": {"message": "engine died"}}\n\n')
            elif "EMPTY" not in body["prompt"]:
                for i in range(body["max_tokens"]):
                    finish = "length" if i == body["max_tokens"] - 1 else None
                    chunk = {"choices": [{"index": 0, "text": f" t{i}", "finish_reason": finish}]}
                    await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    await asyncio.sleep(0.001)
            if "NOUSAGE" not in body["prompt"]:
                usage = {"prompt_tokens": len(body["prompt"].split()), "completion_tokens": body["max_tokens"]}
                await response.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode())
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            return response
        finally:
            self.in_flight -= 1


def words(n: int, tag: str = "w") -> Prompt:
    return Prompt(" ".join(f"{tag}{i}" for i in range(n)), n)  # the scripted server counts words


def closed(concurrency: int, requests: int, warmup: int = 0) -> LoadPoint:
    return LoadPoint(requests=requests, warmup=warmup, concurrency=concurrency)


def test_records_follow_the_stream():
    workload = Workload("w", 3, 5, concurrency=(2,))
    with ScriptedServer() as server:
        run = loadgen.run_point(Target(server.url, "m", "vllm"), workload, closed(2, 4, warmup=2),
                             [words(3) for _ in range(4)], [words(3, "warm") for _ in range(2)])
    assert len(server.bodies) == 6 and len(run.records) == 4  # warm-ups sent, not recorded
    for record in run.records:
        assert record.ok and record.status == 200
        assert len(record.chunk_s) == 5 and record.chunk_s == sorted(record.chunk_s)
        assert record.sent_s < record.chunk_s[0] <= record.done_s
        assert (record.prompt_tokens, record.completion_tokens, record.finish_reason) == (3, 5, "length")
    assert run.client.chunks == 4 * 6  # five tokens and a usage chunk per request
    assert run.duration_s >= max(r.done_s for r in run.records)


def test_body_asks_for_exact_lengths_where_the_engine_takes_ignore_eos():
    workload = Workload("w", 3, 2, concurrency=(1,), temperature=0.0)
    with ScriptedServer() as server:
        loadgen.run_point(Target(server.url, "m", "sglang"), workload, closed(1, 1), [words(3)], [])
        loadgen.run_point(Target(server.url, "m", "someengine"), workload, closed(1, 1), [words(3)], [])
    vllm_like, other = server.bodies
    assert vllm_like["ignore_eos"] is True and "ignore_eos" not in other
    assert vllm_like["stream"] is True and vllm_like["stream_options"] == {"include_usage": True}
    assert (vllm_like["max_tokens"], vllm_like["temperature"], vllm_like["model"]) == (2, 0.0, "m")


def test_failures_are_recorded_not_raised():
    workload = Workload("w", 3, 2, concurrency=(3,))
    prompts = [Prompt("FAIL now", 2), Prompt("EMPTY one", 2), Prompt("BROKEN one", 2), words(3)]
    with ScriptedServer() as server:
        run = loadgen.run_point(Target(server.url, "m", "vllm"), workload, closed(3, 4), prompts, [])
    failed, empty, broken, good = run.records
    assert failed.status == 500 and failed.error.startswith("HTTP 500: ") and "boom" in failed.error
    assert empty.error == "the stream carried no choice chunk (no first token)"
    assert broken.error.startswith("error event: ") and "engine died" in broken.error
    assert good.ok


def test_closed_loop_keeps_exactly_the_concurrency_in_flight():
    workload = Workload("w", 3, 2, concurrency=(8,))
    with ScriptedServer(hold_until=8) as server:
        run = loadgen.run_point(Target(server.url, "m", "vllm"), workload, closed(8, 40), [words(3)] * 40, [])
    assert server.peak == 8
    assert all(r.ok for r in run.records)


def test_thousands_of_concurrent_streams_from_one_process():
    workload = Workload("w", 1, 2, rates=(math.inf,), requests=2000)
    point = LoadPoint(requests=2000, warmup=0, rate=math.inf)
    with ScriptedServer(hold_until=2000) as server:
        run = loadgen.run_point(Target(server.url, "m", "vllm"), workload, point, [words(1)] * 2000, [])
    assert server.peak == 2000
    assert sum(r.ok for r in run.records) == 2000


def test_open_loop_records_when_each_request_was_due():
    workload = Workload("w", 3, 1, rates=(200.0,), requests=20)
    point = LoadPoint(requests=20, warmup=0, rate=200.0, max_concurrency=4)
    with ScriptedServer() as server:
        run = loadgen.run_point(Target(server.url, "m", "vllm"), workload, point, [words(3)] * 20, [])
    due = [r.scheduled_s for r in run.records]
    assert due == sorted(due) and due[-1] == pytest.approx(20 / 200.0)
    assert all(r.sent_s >= r.scheduled_s for r in run.records)  # sent when due, or later when the cap queued it
    assert server.peak <= 4


def test_arrival_times_like_vllm_bench():
    rng = np.random.default_rng(0)
    assert loadgen.arrival_times(5, math.inf, 1.0, rng) == [0.0] * 5
    poisson = loadgen.arrival_times(2000, 10.0, 1.0, np.random.default_rng(1))
    assert poisson[-1] == pytest.approx(200.0)  # rescaled: the last one is due at N / rate
    gaps = np.diff(poisson)
    assert np.std(gaps) / np.mean(gaps) == pytest.approx(1.0, abs=0.1)  # exponential gaps
    smooth = np.diff(loadgen.arrival_times(2000, 10.0, 4.0, np.random.default_rng(1)))
    assert np.std(smooth) / np.mean(smooth) == pytest.approx(0.5, abs=0.05)  # gamma(4): CV 1/sqrt(4)


def test_point_labels_and_defaults():
    sweep = Workload("w", 8, 8, concurrency=(1, 64)).points()
    assert [(p.label, p.requests, p.warmup) for p in sweep] == [("c1", 16, 1), ("c64", 320, 64)]
    rates = Workload("w", 8, 8, rates=(2.5, math.inf), requests=30, max_concurrency=16).points()
    assert [p.label for p in rates] == ["r2.5-c16", "rinf-c16"]


def test_records_round_trip_through_json_lines(tmp_path):
    workload = Workload("w", 3, 2, concurrency=(1,))
    with ScriptedServer() as server:
        run = loadgen.run_point(Target(server.url, "m", "vllm"), workload, closed(1, 2), [words(3)] * 2, [])
    write_records(tmp_path / "r.jsonl", run)
    again = read_records(tmp_path / "r.jsonl")
    assert again.records == run.records and again.point == run.point and again.client == run.client


# --- exact-length prompts ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return PromptTokenizer.from_dir(models.ensure("qwen2-tiny", root=tmp_path_factory.mktemp("models")))


def test_random_prompts_have_the_exact_length(tokenizer):
    prompts = tokenizer.random_prompts(20, 57, np.random.default_rng(3))
    assert all(tokenizer.count(p.text) == 57 and p.tokens == 57 for p in prompts)
    assert len({p.text for p in prompts}) == 20
    again = tokenizer.random_prompts(20, 57, np.random.default_rng(3))
    assert [p.text for p in again] == [p.text for p in prompts]  # same seed, same prompts, whatever the threads do


def test_text_prompts_are_natural_text_of_exact_length(tokenizer):
    prompts = tokenizer.text_prompts(6, 200, np.random.default_rng(0))
    assert all(tokenizer.count(p.text) == 200 for p in prompts)
    assert [p.text.split(":")[0] for p in prompts] == [f"Request {i}" for i in range(6)]
    custom = tokenizer.text_prompts(2, 10, np.random.default_rng(0), text="alpha beta gamma")
    assert all(tokenizer.count(p.text) == 10 and "alpha" in p.text + "alpha" for p in custom)


def test_prompts_count_as_the_server_counts(tokenizer):
    with ScriptedServer(tokenizer=tokenizer.tokenizer) as server:
        remote = tokenizer.with_server(Target(server.url, "m"))
        prompts = remote.random_prompts(10, 40, np.random.default_rng(5))
    assert remote.counted_by.endswith("/tokenize")
    assert all(p.tokens == 40 for p in prompts)
    with ScriptedServer(tokenizer=tokenizer.tokenizer) as server:
        assert all(tokenizer.with_server(Target(server.url, "m")).count(p.text) == 40 for p in prompts)


def test_without_usage_the_generated_text_is_counted(tokenizer):
    workload = Workload("w", 3, 4, concurrency=(1,))
    with ScriptedServer() as server:
        run = loadgen.run_point(Target(server.url, "m", "vllm"), workload, closed(1, 1), [Prompt("NOUSAGE a b", 3)], [],
                             tokenizer)
    (record,) = run.records
    assert record.ok and record.completion_tokens is None
    assert record.text_tokens == tokenizer.count(" t0 t1 t2 t3", with_special=False)


def test_a_server_without_tokenize_leaves_counting_local(tokenizer):
    with ScriptedServer() as server:
        local = tokenizer.with_server(Target(server.url, "m"))
    assert local.counted_by == "tokenizer.json" and local.encode is tokenizer.encode


def test_too_short_for_the_special_tokens():
    class WithBos:
        def num_special_tokens_to_add(self, pair):
            return 1

        def get_added_tokens_decoder(self):
            return {}

        def get_vocab_size(self, with_added_tokens):
            return 4

    with pytest.raises(PromptError, match="no room after the 1 special token"):
        PromptTokenizer(WithBos()).random_prompts(1, 1, np.random.default_rng(0))


def test_progress_counts_the_timed_requests_and_chunks_only():
    workload = Workload("w", 3, 4, concurrency=(2,))
    seen = []
    with ScriptedServer() as server:
        loadgen.run_point(Target(server.url, "m", "vllm"), workload, closed(2, 6, warmup=3), [words(3)] * 6,
                       [words(3, "warm")] * 3, on_progress=lambda *counts: seen.append(counts))
    assert seen[-1][:2] == (6, 24) and seen[-1][2] > 0  # warm-ups are not counted
    assert seen == sorted(seen)
