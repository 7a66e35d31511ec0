"""The matrix's `workloads:` section: what the perf suite sends, and at which concurrencies or rates (keys, types and
ranges: the matrix schema's `workload`; the rules between keys here). The load generator that runs them is
llmconform.perf.loadgen."""

from __future__ import annotations

import math
from dataclasses import dataclass

from llmconform.config import schema

PROMPT_KINDS = schema.choices("workload", "prompts")
DEFAULT_REQUESTS_PER_STREAM = 5
MIN_REQUESTS = 16
MAX_DEFAULT_WARMUP = 64


@dataclass(frozen=True)
class Slo:
    """Service-level objectives for goodput, in milliseconds (vLLM `--goodput ttft:.. tpot:.. e2el:..`)."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2el_ms: float | None = None


@dataclass(frozen=True)
class LoadPoint:
    """One measured point of a sweep. Closed loop: `concurrency` streams kept in flight. Open loop: `rate` requests
    per second (inf: all due at t=0), optionally capped at `max_concurrency` in flight."""

    requests: int
    warmup: int
    concurrency: int | None = None
    rate: float | None = None
    max_concurrency: int | None = None

    @property
    def label(self) -> str:
        if self.rate is None:
            return f"c{self.concurrency}"
        rate = "inf" if math.isinf(self.rate) else f"{self.rate:g}"
        return f"r{rate}" + (f"-c{self.max_concurrency}" if self.max_concurrency else "")

    @property
    def in_flight_limit(self) -> int | None:
        return self.concurrency if self.rate is None else self.max_concurrency


@dataclass(frozen=True)
class Workload:
    """A matrix `workloads:` entry: what to send and at which concurrencies or rates (see `parse_workloads`)."""

    name: str
    input_tokens: int
    output_tokens: int
    concurrency: tuple[int, ...] = ()
    rates: tuple[float, ...] = ()
    requests: int | None = None
    requests_per_stream: int = DEFAULT_REQUESTS_PER_STREAM
    warmup: int | None = None
    prompts: str = "random"
    text: str | None = None
    burstiness: float = 1.0
    max_concurrency: int | None = None
    ignore_eos: bool = True
    temperature: float | None = None
    slo: Slo | None = None
    seed: int = 0

    def points(self) -> list[LoadPoint]:
        points = []
        for c in self.concurrency:
            requests = self.requests or max(MIN_REQUESTS, self.requests_per_stream * c)
            warmup = self.warmup if self.warmup is not None else min(c, MAX_DEFAULT_WARMUP)
            points.append(LoadPoint(requests=requests, warmup=warmup, concurrency=c))
        for rate in self.rates:
            assert self.requests is not None, f"workload {self.name}: an open-loop point needs `requests`"
            warmup = self.warmup if self.warmup is not None else min(self.max_concurrency or 8, MAX_DEFAULT_WARMUP)
            points.append(LoadPoint(requests=self.requests, warmup=warmup, rate=rate,
                                    max_concurrency=self.max_concurrency))
        return points


def parse_workloads(value, fail: schema.Fail) -> tuple[Workload, ...]:
    """Validate a matrix's `workloads:` section (keys, types and ranges: the matrix schema's `workload`; here the
    rules between keys) and make its `Workload`s. `fail(path, problem, allowed)` must raise (matrix.py turns it into
    a MatrixError naming the file). Items that are already `Workload`s pass through.

    ```yaml
    workloads:
      - name: decode-512-128     # unique; floors refer to it (`in decode-512-128`)
        input_tokens: 512        # exact prompt length, as the server counts it (usage.prompt_tokens)
        output_tokens: 128       # exact output length (ignore_eos where the engine accepts it)
        concurrency: [1, 64]     # closed loop: streams in flight, one point each ...
        rate: [2, 8, inf]        # ... or open loop: requests/s (gamma arrivals; burstiness 1 = Poisson)
        burstiness: 1.0
        max_concurrency: 256     # open loop: cap on requests in flight
        requests: 320            # per point (default: 5 per stream, at least 16; required with rate)
        requests_per_stream: 5
        warmup: 8                # unmeasured requests first (default: one wave, at most 64)
        prompts: random          # random tokens | text (cut from `text`, default: built-in prose)
        ignore_eos: true
        temperature: 0           # default: the server's
        slo: {ttft_ms: 2000, tpot_ms: 100, e2el_ms: 20000}   # goodput: requests meeting all of them
        seed: 0
    ```
    """
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        schema.check(value, fail, "workloads", "workloads")
    workloads: list[Workload] = []
    for i, item in enumerate(value):
        if isinstance(item, Workload):
            workloads.append(item)
            continue
        schema.check(item, fail, "workload", f"workloads[{i}]")
        workloads.append(_parse_workload(item, f"workloads[{i}]", fail))
    names = [w.name for w in workloads]
    for i, name in enumerate(names):
        if names.index(name) != i:
            fail(f"workloads[{i}].name", f"workload name {name!r} is used twice", "unique names")
    return tuple(workloads)


def _parse_workload(item: dict, path: str, fail) -> Workload:
    def listed(key: str) -> list:
        v = item.get(key)
        if v is None:
            return []
        return list(v) if isinstance(v, list) else [v]

    concurrency = listed("concurrency")
    rates = [math.inf if r == "inf" else float(r) for r in listed("rate")]
    if bool(concurrency) == bool(rates):
        fail(path, "give exactly one of `concurrency` (closed loop) and `rate` (open loop)",
             "concurrency: [1, 64] or rate: [2, 8]")
    requests = item.get("requests")
    if rates and requests is None:
        fail(f"{path}.requests", "an open-loop workload (rate) needs `requests` per point", None)
    if "requests_per_stream" in item and (requests is not None or rates):
        fail(f"{path}.requests_per_stream", "only for closed-loop workloads without `requests`", None)
    if "max_concurrency" in item and not rates:
        fail(f"{path}.max_concurrency", "only for open-loop workloads (rate); closed loops use concurrency", None)
    prompts = item.get("prompts", "random")
    text = item.get("text")
    if text is not None and prompts != "text":
        fail(f"{path}.text", "`text` is used with `prompts: text`", None)
    temperature = item.get("temperature")
    slo = item.get("slo")
    return Workload(
        name=item["name"], input_tokens=item["input_tokens"], output_tokens=item["output_tokens"],
        concurrency=tuple(concurrency), rates=tuple(rates), requests=requests,
        requests_per_stream=item.get("requests_per_stream", DEFAULT_REQUESTS_PER_STREAM),
        warmup=item.get("warmup"), prompts=prompts, text=text, burstiness=float(item.get("burstiness", 1.0)),
        max_concurrency=item.get("max_concurrency"), ignore_eos=item.get("ignore_eos", True),
        temperature=float(temperature) if temperature is not None else None,
        slo=Slo(**{k: float(v) for k, v in slo.items()}) if slo is not None else None, seed=item.get("seed", 0))
