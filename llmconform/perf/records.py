"""What the load generator records: raw per-request timings (`RequestRecord`), the client's own cost
(`ClientStats`), one measured point (`PointRun`), and their JSON-lines files in a report dir."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llmconform.config.workloads import LoadPoint


@dataclass
class RequestRecord:
    """Raw timings of one request, in seconds since the start of its run (the clock is `time.perf_counter`)."""

    index: int
    expected_input_tokens: int
    expected_output_tokens: int
    scheduled_s: float | None = None  # open loop: when it was due
    sent_s: float = 0.0  # when the request went out (after any client-side queueing)
    chunk_s: list[float] = field(default_factory=list)  # arrival of each streamed chunk that carries a choice
    done_s: float | None = None  # end of the stream ([DONE] or connection close)
    prompt_tokens: int | None = None  # usage, as the server counted
    completion_tokens: int | None = None
    text_tokens: int | None = None  # the generated text re-tokenised, only where the server sent no usage
    finish_reason: str | None = None
    status: int | None = None
    error: str | None = None
    worker: int = 0  # which worker process sent it

    @property
    def ok(self) -> bool:
        """vLLM's `success`: answered 200 and streamed at least one choice chunk."""
        return self.error is None and bool(self.chunk_s)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> RequestRecord:
        return cls(**data)


@dataclass
class ClientStats:
    """The client's own cost during the timed run, over all its worker processes: CPU seconds (each worker's
    process CPU time), streamed chunks parsed, and how late each event loop woke up for a periodic probe (lag = how
    long a chunk may wait before it is timestamped). `worker_cpu_s` / `worker_chunks` per worker, in worker order:
    one saturated worker is client-bound even when the average is not."""

    cpu_s: float
    chunks: int
    loop_lag_p99_ms: float
    loop_lag_max_ms: float
    loop_lag_p50_ms: float = 0.0
    workers: int = 1
    worker_cpu_s: list[float] = field(default_factory=list)
    worker_chunks: list[int] = field(default_factory=list)


@dataclass
class PointRun:
    workload: str
    point: LoadPoint
    records: list[RequestRecord]
    duration_s: float  # vLLM's benchmark duration: first dispatch to last completion
    client: ClientStats
    sent_ignore_eos: bool


def write_records(path: Path, run: PointRun) -> None:
    """Raw records of one point as JSON lines (one request per line), after a header line with the point."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as out:
        out.write(json.dumps({"workload": run.workload, "point": asdict(run.point), "duration_s": run.duration_s,
                              "client": asdict(run.client), "sent_ignore_eos": run.sent_ignore_eos}) + "\n")
        out.writelines(json.dumps(record.to_json()) + "\n" for record in run.records)


def read_records(path: Path) -> PointRun:
    lines = Path(path).read_text().splitlines()
    head = json.loads(lines[0])
    return PointRun(workload=head["workload"], point=LoadPoint(**head["point"]),
                    records=[RequestRecord.from_json(json.loads(line)) for line in lines[1:] if line.strip()],
                    duration_s=head["duration_s"], client=ClientStats(**head["client"]),
                    sent_ignore_eos=head["sent_ignore_eos"])
