"""Async load generator for OpenAI-compatible servers: streamed `/v1/completions` requests with prompts of exact token
lengths (llmconform.perf.prompts), a fixed output length, closed-loop (fixed concurrency) or open-loop (Poisson/gamma
arrivals) traffic, and raw per-request timings (llmconform.perf.records): the HTTP client and its worker processes.

What it records per request (`RequestRecord`): when it was due and sent, the arrival time of every streamed chunk that
carries a choice, the end of the stream, the server's token counts and any error. Every metric is derived afterwards
from those records (llmconform.perf.load_metrics) with the definitions of `vllm bench serve`
(docs/engines.md#load-metrics-vllms-definitions), so that our numbers and vLLM's can be compared one to one.

The traffic shapes follow `vllm bench serve` too: a closed-loop point keeps `concurrency` requests in flight (vLLM's
`--max-concurrency C --request-rate inf`); an open-loop point draws gamma inter-arrival gaps (shape = burstiness,
1 = Poisson) and rescales them so that the last request is due at exactly N / rate seconds, as vLLM does.

A point's streams are spread over worker processes (`run_point`, `choose_workers`), each on its own event loop with
its own keep-alive connections (llmconform.perf.http_stream: the response body is unframed and its SSE lines parsed
inside the read callback, with no task switch per chunk), request bodies serialised before the clock starts; one
process would otherwise cap what an 8-GPU server can be seen to stream. The workers start together on the shared
monotonic clock, so their records merge onto one time axis. Each measures its own cost (process CPU time per
streamed chunk, event-loop lag), so a run can say when the client, not the server, set the pace
(`load_metrics.client_overhead`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import json
import math
import multiprocessing
import os
import resource
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import cast

import numpy as np

from llmconform import engines
from llmconform.config.workloads import LoadPoint, Workload
from llmconform.perf.http_stream import Endpoint, ResponseBroken, StreamPool
from llmconform.perf.prompts import Prompt, PromptTokenizer, make_prompts
from llmconform.perf.records import ClientStats, PointRun, RequestRecord

# The event-loop lag probe wakes each worker this often. Every 10 ms it cost a worker streaming 16 streams at a 22 ms
# ITL about 13 of its 68 us of CPU per chunk (the scripted SSE server); at 50 ms a 10 s point still gives 200 samples.
LAG_PROBE_INTERVAL_S = 0.05
# Idle connections are dropped before uvicorn's 5 s keep-alive timeout (vLLM, SGLang and TensorRT-LLM serve through
# uvicorn): reusing one the server has just closed fails the request.
KEEPALIVE_S = 4.0
PROGRESS_EVERY_S = 0.5

@dataclass(frozen=True)
class Target:
    """Where to send: an OpenAI-compatible server, the model id it serves, and which engine it is (for the engine's
    request extensions)."""

    base_url: str
    model: str
    engine: str = "unknown"
    api_key: str | None = None

    # The engine's request extensions (llmconform.engines: Engine.accepts_*), read here, where the registry holds
    # the engines a user's conftest added, not in the worker processes the target is sent to.
    accepts_ignore_eos: bool = field(init=False)
    accepts_token_id_prompts: bool = field(init=False)

    def __post_init__(self):
        engine = engines.ENGINES.get(self.engine)
        object.__setattr__(self, "accepts_ignore_eos", bool(engine and engine.accepts_ignore_eos))
        object.__setattr__(self, "accepts_token_id_prompts", bool(engine and engine.accepts_token_id_prompts))

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


# --- running -------------------------------------------------------------------------------------------------------

def request_body(target: Target, workload: Workload, prompt: Prompt) -> dict:
    body: dict = {"model": target.model, "prompt": list(prompt.token_ids) if prompt.token_ids else prompt.text,
            "max_tokens": workload.output_tokens, "stream": True,
            "stream_options": {"include_usage": True}}
    if workload.ignore_eos and target.accepts_ignore_eos:
        body["ignore_eos"] = True
    if workload.temperature is not None:
        body["temperature"] = workload.temperature
    return body


def arrival_times(count: int, rate: float, burstiness: float, rng: np.random.Generator) -> list[float]:
    """When each request is due, as in `vllm bench serve`: gamma gaps with shape `burstiness` and mean 1/rate
    (burstiness 1 = Poisson), accumulated and rescaled so the last request is due at exactly count / rate."""
    if math.isinf(rate):
        return [0.0] * count
    gaps = rng.gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=count)
    due = np.cumsum(gaps)
    return (due * (count / rate) / due[-1]).tolist()


def run_point(target: Target, workload: Workload, point: LoadPoint, prompts: list[Prompt],
              warmup_prompts: list[Prompt], tokenizer: PromptTokenizer | None = None,
              request_timeout_s: float = 1800.0, workers: int | None = None,
              on_progress: Callable[[int, int, float], None] | None = None) -> PointRun:
    """Send the warm-up requests (unmeasured), then the point's requests, and return their raw records.
    `on_progress(requests done, choice chunks received, seconds since the timed requests began)` is called every
    PROGRESS_EVERY_S while the point runs, and once at its end.

    The requests go out from `workers` processes (default `choose_workers`), spawned (they inherit the caller's CPU
    affinity), each with its own event loop and connection pool: in one process a fast server's chunks queue behind
    each other in the loop, and in the caller's process other threads (pytest's, a server's memory sampler, log
    readers) would compete with the loop for the interpreter lock and delay its timestamps. The workers warm up,
    wait at a shared barrier, and start their timed runs at the same instant of the shared monotonic clock
    (time.perf_counter is CLOCK_MONOTONIC on Linux), so their records merge onto one time axis."""
    shares = split_point(point, workload, len(prompts), workers or choose_workers(point, workload))
    due = None
    if point.rate is not None:
        due = arrival_times(len(prompts), point.rate, workload.burstiness, np.random.default_rng([workload.seed, 0]))
    plans = []
    for w, share in enumerate(shares):
        # closed loop: every share is a stream count
        mine = range(w, len(prompts), len(shares)) if point.rate is not None else _closed_loop_jobs(
            cast(list[int], shares), w, len(prompts))
        plans.append(_WorkerPlan(
            worker=w, in_flight=share, jobs=[(i, prompts[i], due[i] if due else None) for i in mine],
            warmup=[warmup_prompts[i] for i in range(w, len(warmup_prompts), len(shares))]))
    spawn = multiprocessing.get_context("spawn")
    barrier, start_at = spawn.Barrier(len(shares)), spawn.Value("d", 0.0)
    # Per worker [requests done, choice chunks] of the timed run: each slot has one writer (its worker), read here.
    live = spawn.Array("q", 2 * len(shares), lock=False)

    def report() -> None:
        seconds = time.perf_counter() - start_at.value if start_at.value else 0.0  # one clock for all processes
        if on_progress:
            on_progress(sum(live[0::2]), sum(live[1::2]), max(0.0, seconds))

    with ProcessPoolExecutor(max_workers=len(shares), mp_context=spawn, initializer=_join_start,
                             initargs=(barrier, start_at, live)) as pool:
        futures = [pool.submit(_run_worker, target, workload, point, plan, request_timeout_s) for plan in plans]
        while True:
            done, running = concurrent.futures.wait(futures, timeout=PROGRESS_EVERY_S if on_progress else None,
                                                    return_when=concurrent.futures.FIRST_EXCEPTION)
            if not running or any(f.exception() for f in done):
                break
            report()
        if any(f.done() and f.exception() for f in futures):
            barrier.abort()  # the others would wait at the start for a worker that is gone
        results = [f.result() for f in futures]
    if on_progress:
        report()  # the final counts: every timed request
    records = sorted((r for result in results for r in result.records), key=lambda r: r.index)
    lags = [lag for result in results for lag in result.lags]
    client = ClientStats(cpu_s=sum(r.cpu_s for r in results), chunks=sum(r.chunks for r in results),
                         loop_lag_p50_ms=float(np.percentile(lags or 0, 50)) * 1e3,
                         loop_lag_p99_ms=float(np.percentile(lags or 0, 99)) * 1e3,
                         loop_lag_max_ms=max(lags, default=0.0) * 1e3, workers=len(shares),
                         worker_cpu_s=[r.cpu_s for r in results], worker_chunks=[r.chunks for r in results])
    run = PointRun(workload=workload.name, point=point, records=records, duration_s=max(r.end_s for r in results),
                   client=client, sent_ignore_eos=workload.ignore_eos and target.accepts_ignore_eos)
    if tokenizer:
        texts = {i: text for result in results for i, text in result.texts.items()}
        for record in run.records:  # vLLM's fallback when usage is missing: count the generated text's tokens
            if record.index in texts:
                record.text_tokens = tokenizer.count(texts[record.index], with_special=False)
    return run


# Worker count: a worker should take at most this many chunks per second. A worker pays ~60 us of CPU per chunk on
# an H200 host serving vLLM (each chunk arrives on its own and wakes the event loop), so 1000 chunks/s keep it about
# 6% busy; at c256 the 14 workers 16 cores allow held the client's share of each ITL window to 4.6%.
CHUNKS_PER_WORKER_S = 1000
# The chunk rate a point is expected to reach is unknown before it runs; streams in flight / this ITL is that of a
# fast GPU (a 7B model on one H200 decodes a step in 7-30 ms from c1 to c256).
EXPECTED_ITL_S = 0.01
# CPUs left to the parent process and the server's own front end when counting the cores workers may use.
RESERVED_CPUS = 2


def choose_workers(point: LoadPoint, workload: Workload, cpus: int | None = None) -> int:
    """How many worker processes a point needs: its expected chunk rate over CHUNKS_PER_WORKER_S, at most the CPUs
    this process may run on (less RESERVED_CPUS) and never more than it has streams or requests."""
    if point.rate is not None and not math.isinf(point.rate):
        chunks_per_s = point.rate * workload.output_tokens  # steady state: every request streams output_tokens
    else:
        chunks_per_s = (point.in_flight_limit or point.requests or 1) / EXPECTED_ITL_S
    usable = (cpus or len(os.sched_getaffinity(0))) - RESERVED_CPUS
    wanted = math.ceil(chunks_per_s / CHUNKS_PER_WORKER_S)
    return max(1, min(wanted, usable, point.in_flight_limit or point.requests or 1))


def split_point(point: LoadPoint, workload: Workload, requests: int, workers: int) -> list[int | None]:
    """Each worker's share of the point's in-flight limit: closed loop, its streams (concurrency split as evenly as
    it goes; more workers than streams would idle, so there are at most as many); open loop, its share of
    `max_concurrency` (None: uncapped). Every worker has at least one request."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    limit = point.in_flight_limit
    n = min(workers, max(1, requests), limit or workers)
    if limit is None:
        return [None] * n
    return [limit // n + (w < limit % n) for w in range(n)]


def _closed_loop_jobs(shares: list[int], worker: int, requests: int) -> list[int]:
    """The request indices a closed-loop worker sends: request i goes to stream i mod C of the C streams, so each
    worker gets requests in proportion to its streams and every stream starts with a request."""
    first = sum(shares[:worker])
    mine = range(first, first + shares[worker])
    total = sum(shares)
    return [i for i in range(requests) if i % total in mine]


@dataclass
class _WorkerPlan:
    worker: int
    in_flight: int | None
    jobs: list[tuple[int, Prompt, float | None]]  # (request index, prompt, when it is due in the open loop)
    warmup: list[Prompt]


@dataclass
class _WorkerResult:
    records: list[RequestRecord]
    texts: dict[int, str]
    end_s: float  # the last completion, on the shared time axis
    cpu_s: float
    chunks: int
    lags: list[float]


_START: tuple | None = None  # (barrier, shared start time, progress counters) of this worker process


def _join_start(barrier, start_at, live) -> None:
    global _START
    _START = (barrier, start_at, live)
    _raise_open_file_limit()


def _run_worker(target: Target, workload: Workload, point: LoadPoint, plan: _WorkerPlan,
                request_timeout_s: float) -> _WorkerResult:
    return _run_loop(_run_point(target, workload, point, plan, request_timeout_s))


def _run_loop(main: Coroutine):
    """Run `main` on uvloop where it is installed (Linux; a dependency there), else on asyncio's own loop. Against
    the scripted SSE server uvloop cut the client's CPU per streamed chunk by about 40% (one process: 66 -> 40 us;
    each of 4 workers: 83 -> 53 us), and that cost is what sets the client's share of each ITL window."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def _wait_for_start() -> float:
    """Every worker arrives here warmed up; one of them sets the start a little ahead of now, and all begin then."""
    assert _START is not None, "_join_start runs first in every worker process"
    barrier, start_at, _ = _START
    if barrier.wait() == 0:
        start_at.value = time.perf_counter() + START_MARGIN_S
    barrier.wait()
    return start_at.value


START_MARGIN_S = 0.05  # time for every worker to read the start after the barrier releases them


def run_workload(target: Target, workload: Workload, tokenizer: PromptTokenizer,
                 on_point: Callable[[PointRun], None] | None = None, workers: int | None = None,
                 on_progress: Callable[[LoadPoint, int, int, float], None] | None = None) -> list[PointRun]:
    """Every point of a workload's sweep, in order; `on_point` sees each run as soon as it is done, `on_progress`
    (point, requests done, chunks, seconds) how far the running one has got."""
    runs = []
    for i, point in enumerate(workload.points()):
        prompts = make_prompts(tokenizer, workload, point.requests, stream=2 * i + 1)
        warmup = make_prompts(tokenizer, workload, point.warmup, stream=2 * i + 2) if point.warmup else []
        run = run_point(target, workload, point, prompts, warmup, tokenizer, workers=workers,
                        on_progress=functools.partial(on_progress, point) if on_progress else None)
        if on_point:
            on_point(run)
        runs.append(run)
    return runs


@contextlib.contextmanager
def pinned(cpus: frozenset[int] | None) -> Iterator[None]:
    """Run the calling thread (the load generator's event loop, and threads it starts) on `cpus` only. For an engine
    on CPU cores: a client sharing the engine's cores slows the engine down by the CPU it takes, by an amount that
    depends on where the OS scheduler happens to put it."""
    if not cpus:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def other_cpus(engine_cpus) -> frozenset[int] | None:
    """The CPUs of this machine the engine was not given (None when it has them all)."""
    rest = frozenset(os.sched_getaffinity(0)) - set(engine_cpus)
    return rest or None


def _raise_open_file_limit() -> None:
    # Each stream holds a socket; thousands of them need more than the usual soft limit of 1024.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


async def _run_point(target: Target, workload: Workload, point: LoadPoint, plan: _WorkerPlan,
                     request_timeout_s: float) -> _WorkerResult:
    """One worker's share of the point: its warm-up, then its timed requests from the shared start."""
    pool = StreamPool(_endpoint(target, "/v1/completions"), KEEPALIVE_S)
    try:
        client = _Client(pool, request_timeout_s)
        if plan.warmup:
            warm = [_Job(_payload(target, workload, p), RequestRecord(i, p.tokens, workload.output_tokens))
                    for i, p in enumerate(plan.warmup)]
            await client.closed_loop(iter(warm), min(plan.in_flight or len(warm), len(warm)), time.perf_counter())
        jobs = [_Job(_payload(target, workload, p), RequestRecord(i, p.tokens, workload.output_tokens,
                                                                  scheduled_s=due, worker=plan.worker))
                for i, p, due in plan.jobs]
        client.chunks = 0
        assert _START is not None, "_join_start runs first in every worker process"
        client.live, client.slot = _START[2], 2 * plan.worker  # counted from here: the timed requests only
        start = _wait_for_start()
        await _sleep_until(start)
        lags: list[float] = []
        stop = asyncio.Event()
        watcher = asyncio.create_task(_watch_loop_lag(stop, lags))
        cpu_before = time.process_time()
        if point.rate is None:
            assert plan.in_flight is not None  # closed loop: the worker's streams
            await client.closed_loop(iter(jobs), plan.in_flight, start)
        else:
            await client.open_loop(jobs, plan.in_flight, start)
        end = time.perf_counter() - start
        cpu = time.process_time() - cpu_before
        stop.set()
        await watcher
    finally:
        pool.close()
    texts = {job.record.index: "".join(job.text) for job in jobs if job.record.ok and not job.record.completion_tokens}
    return _WorkerResult(records=[job.record for job in jobs], texts=texts, end_s=end, cpu_s=cpu,
                         chunks=client.chunks, lags=lags)


def run_requests(target: Target, requests: list[tuple[str, dict]], concurrency: int,
                 request_timeout_s: float = 600.0) -> list[dict | str]:
    """Send non-streamed requests (route, JSON body), `concurrency` in flight at a time; each answer's JSON body
    in request order, or the error text of a request that failed."""
    return _run_loop(_run_requests(target, requests, concurrency, request_timeout_s))


async def _run_requests(target: Target, requests: list[tuple[str, dict]], concurrency: int,
                        request_timeout_s: float) -> list[dict | str]:
    answers: list[dict | str] = [""] * len(requests)
    pending = iter(enumerate(requests))
    pools: dict[str, StreamPool] = {}

    async def worker():
        for index, (route, body) in pending:  # one shared iterator: the next request goes to a free worker
            if route not in pools:
                pools[route] = StreamPool(_endpoint(target, route), KEEPALIVE_S)
            pool = pools[route]
            try:
                status, text = await pool.post(json.dumps(body).encode(), timeout_s=request_timeout_s)
                answers[index] = json.loads(text) if status == 200 else _http_error(status, text)
            except (ResponseBroken, asyncio.TimeoutError, OSError, ValueError) as error:
                answers[index] = f"{type(error).__name__}: {error}"

    try:
        await asyncio.gather(*(worker() for _ in range(min(concurrency, len(requests)) or 1)))
    finally:
        for pool in pools.values():
            pool.close()
    return answers


def _http_error(status: int, body: bytes) -> str:
    return f"HTTP {status}: {body[:500].decode(errors='replace')}"


def _endpoint(target: Target, route: str) -> Endpoint:
    return Endpoint.for_url(target.base_url, route, {"Content-Type": "application/json", **target.headers})


def _payload(target: Target, workload: Workload, prompt: Prompt) -> bytes:
    return json.dumps(request_body(target, workload, prompt)).encode()


@dataclass
class _Job:
    payload: bytes
    record: RequestRecord
    text: list[str] = field(default_factory=list)


class _Client:
    def __init__(self, pool: StreamPool, request_timeout_s: float):
        self.pool = pool
        # A bound on the whole request, as `vllm bench serve` sets it: one timer per request, not one per read.
        self.request_timeout_s = request_timeout_s
        self.chunks = 0
        self.live, self.slot = None, 0  # the progress counters the caller reads while the point runs (run_point)

    async def closed_loop(self, jobs: Iterator[_Job], concurrency: int, start: float) -> None:
        async def stream_next():
            for job in jobs:  # one shared iterator: a stream takes the next job as soon as it is free
                await self.send(job, start)

        await asyncio.gather(*(stream_next() for _ in range(concurrency)))

    async def open_loop(self, jobs: list[_Job], cap: int | None, start: float) -> None:
        gate = asyncio.Semaphore(cap) if cap else None

        async def fire(job: _Job) -> None:
            if gate is None:
                await self.send(job, start)
                return
            async with gate:
                await self.send(job, start)

        tasks = []
        for job in jobs:
            assert job.record.scheduled_s is not None  # open loop: every request is due at a time
            await _sleep_until(start + job.record.scheduled_s)
            tasks.append(asyncio.create_task(fire(job)))
        await asyncio.gather(*tasks)

    async def send(self, job: _Job, start: float) -> None:
        record = job.record
        try:
            await self._post(job, start)
        except ResponseBroken as broken:
            record.status = broken.status
            record.error = f"{type(broken).__name__}: {broken}"
        except (asyncio.TimeoutError, OSError, ValueError) as error:
            record.error = f"{type(error).__name__}: {error}"
        finally:
            if record.error is None and not record.chunk_s:
                record.error = "the stream carried no choice chunk (no first token)"
            if self.live is not None:
                self.live[self.slot] += 1

    async def _post(self, job: _Job, start: float) -> None:
        record = job.record
        pending = b""

        def on_send() -> None:
            record.sent_s = time.perf_counter() - start

        def on_body(data: bytes, now: float) -> None:  # called where the bytes are read: `now` is their arrival
            nonlocal pending
            *lines, pending = (pending + data if pending else data).split(b"\n")
            for line in lines:
                if self._handle(line, now - start, job):
                    record.done_s = now - start

        status, error_body = await self.pool.post(job.payload, on_body, self.request_timeout_s, on_send)
        record.status = status
        if status != 200:
            record.error = _http_error(status, error_body)
            return
        end = time.perf_counter() - start
        if pending.strip() and self._handle(pending, end, job):
            record.done_s = end
        if record.done_s is None:  # the server closed the stream without [DONE]
            record.done_s = end

    def _handle(self, line: bytes, now: float, job: _Job) -> bool:
        """One SSE line; True at the end of the stream. Only `data:` lines matter (comments and blank separators
        do not)."""
        if not line.startswith(b"data:"):
            return False
        data = line[5:].strip()
        if data == b"[DONE]":
            return True
        self.chunks += 1
        event = json.loads(data)
        record = job.record
        choices = event.get("choices")
        if choices:
            record.chunk_s.append(now)
            if self.live is not None:
                self.live[self.slot + 1] += 1
            choice = choices[0]
            job.text.append(choice.get("text") or "")
            if choice.get("finish_reason"):
                record.finish_reason = choice["finish_reason"]
        usage = event.get("usage")
        if usage:
            record.prompt_tokens = usage.get("prompt_tokens")
            record.completion_tokens = usage.get("completion_tokens")
        if event.get("error"):
            record.error = f"error event: {json.dumps(event['error'])[:500]}"
        return False


async def _sleep_until(when: float) -> None:
    """Sleep until `when` on the perf_counter clock, never less: uvloop's timers count whole milliseconds and can
    fire up to one early."""
    while (left := when - time.perf_counter()) > 0:
        await asyncio.sleep(left)


async def _watch_loop_lag(stop: asyncio.Event, lags: list[float]) -> None:
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(LAG_PROBE_INTERVAL_S)
        lags.append(max(0.0, time.perf_counter() - before - LAG_PROBE_INTERVAL_S))
