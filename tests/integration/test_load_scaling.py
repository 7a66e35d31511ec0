"""The load generator at scale, against the scripted fast SSE server (tests/fakes/sse_server.py: one timer streams a
chunk to every open stream per tick, at a fraction of the client's cost per chunk): one client process saturates and
says so (the point is marked invalid: client-bound), worker processes carry the same load and do not.

Judged by the client's own flags, not by wall-clock thresholds: the offered chunk rate is set from what one process
managed in a first, deliberately overloaded run on this machine (so the test means the same on a fast or a slow
machine), 1.1 times that for the comparison, which the workers share out.
"""

import pytest

from llmconform.config.workloads import LoadPoint, Workload
from llmconform.perf import load_metrics, loadgen
from llmconform.perf.loadgen import Target
from llmconform.perf.prompts import Prompt
from tests.fakes.sse_server import SseServer

pytestmark = [pytest.mark.perf]

OVERLOAD = 1.1  # offered chunk rate / what one process managed
ITL_MS = 20.0
OUTPUT_TOKENS = 100  # a stream lasts about 2 s at ITL_MS
WORKERS = 4  # each at OVERLOAD / WORKERS of one process's capacity: about a quarter busy


def closed_loop(server: SseServer, streams: int, workers: int) -> load_metrics.PointSummary:
    workload = Workload("scaling", 4, OUTPUT_TOKENS, concurrency=(streams,))
    point = LoadPoint(requests=streams, warmup=0, concurrency=streams)
    run = loadgen.run_point(Target(server.url, "fake", "vllm"), workload, point, [Prompt("a b c d", 4)] * streams, [],
                         workers=workers)
    assert all(r.ok for r in run.records)
    return load_metrics.summarize(run, 4, OUTPUT_TOKENS)


def test_one_process_saturates_and_workers_do_not():
    with SseServer(itl_ms=1) as server:  # 64 streams x 1000 chunks/s each: more than one process can parse
        calibration = closed_loop(server, 64, workers=1)
    capacity = calibration.metrics.total_output_tokens / calibration.metrics.duration_s
    streams = round(OVERLOAD * capacity * ITL_MS / 1e3)
    with SseServer(itl_ms=ITL_MS) as server:
        single = closed_loop(server, streams, workers=1)
        spread = closed_loop(server, streams, workers=WORKERS)
    offered = streams * 1e3 / ITL_MS
    numbers = (f"one process managed {capacity:.0f} chunks/s; offered {offered:.0f} chunks/s over {streams} streams; "
               f"single: {single.client.as_dict()}; workers: {spread.client.as_dict()}")
    assert single.invalid, "one process should be client-bound: " + numbers
    assert spread.client.workers == WORKERS
    assert spread.invalid is None, "the workers should keep up: " + numbers
    assert "itl" not in spread.delivery.not_measurable, numbers
    print(numbers)
