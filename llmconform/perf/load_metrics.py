"""Serving metrics from raw request records, with exactly the definitions of `vllm bench serve`
(vllm/benchmarks/serve.py `calculate_metrics`, vLLM 0.32; docs/engines.md#load-metrics-vllms-definitions):

- a request succeeded when it answered 200 and streamed at least one chunk carrying a choice; the rest are `failed`;
- TTFT = arrival of the first choice chunk - send time;
- E2EL = arrival of the last choice chunk - send time (the trailing usage chunk and [DONE] do not count);
- ITL = every gap between consecutive choice chunks, pooled over all requests (a chunk may carry several tokens);
- TPOT = (E2EL - TTFT) / (output tokens - 1), only for requests with more than one output token ("excl. 1st token");
  for goodput, a request with one output token has TPOT 0;
- output tokens = the server's usage.completion_tokens; when it is missing or 0, the generated text re-tokenised;
  failed requests count 0; input tokens = usage.prompt_tokens where the server sent it, else the prompt's length;
- duration = first dispatch to last completion; request, output and total token throughput divide by it;
- goodput = requests meeting every given SLO (TTFT, TPOT, E2EL; value <= SLO) per second of duration;
- mean, median, std and percentiles are numpy's (`np.percentile`, linear interpolation) over successful requests,
  and 0 when there are none;
- peak output throughput = the most choice chunks arriving in one 1-second bucket counted from the first send,
  and the most requests active in one bucket (vLLM's "Peak output token throughput" / "Peak concurrent requests").

Names: throughputs are `output_tok_s`, `total_tok_s`, `requests_per_s`, `goodput_requests_per_s`, `max_output_tok_s`;
latencies are vLLM's result keys `{mean,median,std,p90,p99}_{ttft,tpot,itl,e2el}_ms`. `VLLM_RESULT_KEYS` maps ours to
the keys of vLLM's saved result JSON.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from llmconform.config.floor_rules import LATENCIES, LATENCY_METRICS, THROUGHPUTS
from llmconform.config.workloads import Slo
from llmconform.perf.records import ClientStats, PointRun, RequestRecord

VLLM_RESULT_KEYS = {"output_tok_s": "output_throughput", "total_tok_s": "total_token_throughput",
                    "requests_per_s": "request_throughput", "goodput_requests_per_s": "request_goodput",
                    "max_output_tok_s": "max_output_tokens_per_s", **{m: m for m in LATENCY_METRICS}}
# The client was the bottleneck (the point is invalid) when its busiest worker spent this share of each ITL window on
# its own work (towards 1 it caps the throughput it measures and queues chunks before timestamping them) ...
CLIENT_BOUND_SHARE = 0.5
# ... or was busy this fraction of the run (a saturated event loop, whatever the ITL: with bunched delivery the
# share of an ITL window cannot be computed) ...
CLIENT_BOUND_BUSY = 0.9
# ... or its event loop was typically (lag p50) a whole median ITL late: it is behind the stream, not hit by the odd
# preemption (a single late wake-up, which the p99 shows, is the machine's noise; the warning below reports it).
CLIENT_BOUND_LAG = 1.0
# Below those, a warning: the client took a visible share of each ITL window (the goal is under 5%) ...
CLIENT_SHARE_WARNING = 0.05
# ... or its event-loop lag (p99) beyond this share of the median ITL makes chunk timestamps coarse.
LOOP_LAG_WARNING = 0.2
# Bunched delivery: ITL is not measurable when at least this share of the gaps between chunks is 0 (chunks that
# arrived in one read), TPOT when at least this share of the multi-token requests arrived in one read.
BUNCHED_SHARE = 0.5


@dataclass(frozen=True)
class LatencyStats:
    """Milliseconds."""

    mean: float
    median: float
    std: float
    p90: float
    p99: float

    @classmethod
    def of(cls, seconds: list[float]) -> LatencyStats:
        values = seconds or 0  # vLLM: numpy over an empty list would warn; it reports 0
        return cls(mean=float(np.mean(values)) * 1e3, median=float(np.median(values)) * 1e3,
                   std=float(np.std(values)) * 1e3, p90=float(np.percentile(values, 90)) * 1e3,
                   p99=float(np.percentile(values, 99)) * 1e3)


@dataclass(frozen=True)
class ServingMetrics:
    completed: int
    failed: int
    duration_s: float
    total_input_tokens: int
    total_output_tokens: int
    requests_per_s: float
    output_tok_s: float
    total_tok_s: float
    goodput_requests_per_s: float | None  # None without SLOs
    ttft: LatencyStats
    tpot: LatencyStats
    itl: LatencyStats
    e2el: LatencyStats
    max_output_tok_s: float
    max_concurrent_requests: int
    prompt_length_mismatches: int  # successful requests whose usage.prompt_tokens differs from the prompt's length
    output_length_mismatches: int  # successful requests whose output length differs from max_tokens

    def value(self, metric: str) -> float | None:
        if metric in THROUGHPUTS:
            return getattr(self, metric)
        stat, name, _ = metric.split("_")
        return getattr(getattr(self, name), stat)

    def flat(self) -> dict:
        """Every metric under its name (see the module docstring), plus the counts."""
        out = {k: v for k, v in asdict(self).items() if k not in LATENCIES}
        out.update({m: self.value(m) for m in LATENCY_METRICS})
        return out


def compute(records: list[RequestRecord], duration_s: float, slo: Slo | None = None) -> ServingMetrics:
    ttfts: list[float] = []
    tpots: list[float] = []  # requests with more than one output token
    all_tpots: list[float] = []  # 0 for one-token requests: what goodput compares
    itls: list[float] = []
    e2els: list[float] = []
    output_lens: list[int] = []
    total_input = 0
    prompt_mismatches = output_mismatches = 0
    good = 0
    for record in records:
        if not record.ok:
            output_lens.append(0)
            continue
        out = output_tokens(record)
        output_lens.append(out)
        total_input += record.prompt_tokens if record.prompt_tokens is not None else record.expected_input_tokens
        ttft = record.chunk_s[0] - record.sent_s
        e2el = record.chunk_s[-1] - record.sent_s
        tpot = (e2el - ttft) / (out - 1) if out > 1 else 0.0
        if out > 1:
            tpots.append(tpot)
        all_tpots.append(tpot)
        ttfts.append(ttft)
        e2els.append(e2el)
        itls.extend(b - a for a, b in zip(record.chunk_s, record.chunk_s[1:]))
        if record.prompt_tokens is not None and record.prompt_tokens != record.expected_input_tokens:
            prompt_mismatches += 1
        if out != record.expected_output_tokens:
            output_mismatches += 1
        if slo is not None and meets(slo, ttft, tpot, e2el):
            good += 1
    completed = len(ttfts)
    total_output = sum(output_lens)
    peak_tokens, peak_requests = _peaks([r for r in records if r.ok])
    return ServingMetrics(
        completed=completed, failed=len(records) - completed, duration_s=duration_s,
        total_input_tokens=total_input, total_output_tokens=total_output,
        requests_per_s=completed / duration_s, output_tok_s=total_output / duration_s,
        total_tok_s=(total_input + total_output) / duration_s,
        goodput_requests_per_s=good / duration_s if slo is not None else None,
        ttft=LatencyStats.of(ttfts), tpot=LatencyStats.of(tpots), itl=LatencyStats.of(itls),
        e2el=LatencyStats.of(e2els), max_output_tok_s=peak_tokens, max_concurrent_requests=peak_requests,
        prompt_length_mismatches=prompt_mismatches, output_length_mismatches=output_mismatches)


def output_tokens(record: RequestRecord) -> int:
    """vLLM: usage.completion_tokens, else the generated text re-tokenised, else 1 (no tokenizer to count with)."""
    return record.completion_tokens or record.text_tokens or 1


def meets(slo: Slo, ttft_s: float, tpot_s: float, e2el_s: float) -> bool:
    limits = ((slo.ttft_ms, ttft_s), (slo.tpot_ms, tpot_s), (slo.e2el_ms, e2el_s))
    return all(limit_ms / 1e3 >= value for limit_ms, value in limits if limit_ms is not None)


def _peaks(records: list[RequestRecord]) -> tuple[float, int]:
    """vLLM's 1-second buckets from the earliest send: most chunk arrivals, and most requests active, in a bucket."""
    if not records:
        return 0.0, 0
    first = min(r.sent_s for r in records)
    last = max(r.chunk_s[-1] for r in records)
    buckets = math.ceil(last - first) + 1
    tokens = np.zeros(buckets)
    active = np.zeros(buckets)
    for r in records:
        for t in r.chunk_s:
            tokens[int(t - first)] += 1
        active[int(r.sent_s - first): int(r.chunk_s[-1] - first) + 1] += 1
    return float(tokens.max()), int(active.max())


@dataclass(frozen=True)
class ClientOverhead:
    """What the load generator itself cost during a run, against the server's inter-token latency.

    `share_of_itl`: within one median ITL window every stream past its first token delivers about one chunk, so a
    worker spends (CPU per chunk x its mean streams decoding) of each window on its own work; near 1 the client, not
    the server, sets the pace. Mean streams decoding come from Little's law over the decode phase (sum of first to
    last chunk / duration): a stream still waiting for its first token (under load, a third of its life at c256 on
    an H200) delivers nothing in the window. The busiest worker counts. `bound` says why the point is invalid (the
    client was the bottleneck), None when it was not."""

    cpu_us_per_chunk: float | None
    busy_fraction: float  # the busiest worker's CPU time / duration
    share_of_itl: float | None
    loop_lag_p99_ms: float
    warning: str | None
    loop_lag_p50_ms: float = 0.0
    workers: int = 1
    bound: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def client_overhead(client: ClientStats, metrics: ServingMetrics, records: list[RequestRecord]) -> ClientOverhead:
    per_chunk = client.cpu_s / client.chunks if client.chunks else None
    median_itl_s = metrics.itl.median / 1e3
    worker_cpu = client.worker_cpu_s or [client.cpu_s]
    worker_chunks = client.worker_chunks or [client.chunks]
    busiest, share, where = max(worker_cpu) / metrics.duration_s, None, ""
    for w, (cpu, chunks) in enumerate(zip(worker_cpu, worker_chunks)):
        decoding = sum(r.chunk_s[-1] - r.chunk_s[0] for r in records if r.ok and r.worker == w) / metrics.duration_s
        if chunks and median_itl_s > 0:
            mine = cpu / chunks * decoding / median_itl_s
            if share is None or mine > share:
                share = mine
                where = (f"{cpu / chunks * 1e6:.0f} us per chunk x {decoding:.1f} streams decoding"
                         + (f" on worker {w} of {len(worker_cpu)}" if len(worker_cpu) > 1 else "")
                         + f" vs median ITL {metrics.itl.median:.2f} ms")
    lag_s, typical_lag_s = client.loop_lag_p99_ms / 1e3, client.loop_lag_p50_ms / 1e3
    bound, warnings = [], []
    if share is not None and share >= CLIENT_BOUND_SHARE:
        bound.append(f"the client's own work is {share:.0%} of each ITL window ({where})")
    elif share is not None and share >= CLIENT_SHARE_WARNING:
        warnings.append(f"the client's own work is {share:.0%} of each ITL window ({where})")
    if busiest >= CLIENT_BOUND_BUSY:
        bound.append(f"the busiest client worker was busy {busiest:.0%} of the run "
                     f"({client.workers} worker process(es))")
    # The time between tokens a late loop is measured against: the median ITL, or where chunks came bunched (median
    # gap 0) the mean TPOT: a loop late by more than that may itself have bunched them, reading several per wake-up.
    between_tokens_s, named = (median_itl_s, "median ITL") if median_itl_s > 0 else (metrics.tpot.mean / 1e3,
                                                                                     "mean TPOT")
    if between_tokens_s > 0 and typical_lag_s >= CLIENT_BOUND_LAG * between_tokens_s:
        bound.append(f"the client's event loop ran {client.loop_lag_p50_ms:.2f} ms late (p50), more than the "
                     f"{named} of {between_tokens_s * 1e3:.2f} ms")
    elif median_itl_s > 0 and lag_s >= LOOP_LAG_WARNING * median_itl_s:
        warnings.append(f"the client's event loop ran {client.loop_lag_p99_ms:.2f} ms late (p99) against a median "
                        f"ITL of {metrics.itl.median:.2f} ms: chunk timestamps are that coarse")
    if bound:
        warnings.insert(0, "client-bound, the point is invalid: " + "; ".join(bound)
                        + " (more --workers, or a machine with more cores, for the client)")
    return ClientOverhead(cpu_us_per_chunk=per_chunk * 1e6 if per_chunk is not None else None,
                          busy_fraction=busiest, share_of_itl=share, loop_lag_p99_ms=client.loop_lag_p99_ms,
                          warning="; ".join(warnings) or None, loop_lag_p50_ms=client.loop_lag_p50_ms,
                          workers=client.workers, bound="; ".join(bound) or None)


@dataclass(frozen=True)
class Delivery:
    """How the server delivered the streams: bunched delivery (several chunks in one network read, timestamped alike)
    makes per-token timing meaningless. `not_measurable` maps `itl` / `tpot` to why they are not measurable."""

    zero_itl_share: float  # gaps between consecutive chunks of 0 (same read)
    one_read_share: float  # multi-chunk requests whose chunks all arrived in one read
    not_measurable: dict[str, str]

    def as_dict(self) -> dict:
        return asdict(self)


def delivery(records: list[RequestRecord]) -> Delivery:
    multi = [r for r in records if r.ok and output_tokens(r) > 1]  # streams that have a TPOT
    gaps = [b - a for r in multi for a, b in zip(r.chunk_s, r.chunk_s[1:])]
    zero = sum(g == 0 for g in gaps) / len(gaps) if gaps else 0.0
    at_once = sum(r.chunk_s[-1] == r.chunk_s[0] for r in multi) / len(multi) if multi else 0.0
    reasons = {}
    if multi and not gaps:
        reasons["itl"] = "bunched delivery: every stream carried all its tokens in one chunk (no gap to time)"
    elif gaps and zero >= BUNCHED_SHARE:
        reasons["itl"] = (f"bunched delivery: {zero:.0%} of the gaps between chunks are 0 (chunks arriving together "
                          f"in one read)")
    if multi and at_once >= BUNCHED_SHARE:
        reasons["tpot"] = f"bunched delivery: {at_once:.0%} of the streams arrived whole, in one read"
    return Delivery(zero_itl_share=zero, one_read_share=at_once, not_measurable=reasons)


def not_measurable(metric: str, point: dict) -> str | None:
    """Why a latency metric of a point (PointSummary.as_dict) is not measurable, or None."""
    reasons = (point.get("delivery") or {}).get("not_measurable") or {}
    return next((why for name, why in reasons.items() if f"_{name}_" in f"_{metric}_"), None)


@dataclass(frozen=True)
class PointSummary:
    """One measured point: what was run, its metrics and the client's overhead (JSON for reports and baselines)."""

    workload: str
    point: str
    concurrency: int | None
    rate: float | None
    requests: int
    input_tokens: int
    output_tokens: int
    sent_ignore_eos: bool
    metrics: ServingMetrics
    client: ClientOverhead
    delivery: Delivery
    traffic: dict  # offered vs achieved rates (`traffic`)

    @property
    def invalid(self) -> str | None:
        """Why the point does not measure the server (the client was the bottleneck), or None."""
        return self.client.bound

    def as_dict(self) -> dict:
        rate = None if self.rate is None else ("inf" if math.isinf(self.rate) else self.rate)
        return {"workload": self.workload, "point": self.point, "concurrency": self.concurrency, "rate": rate,
                "requests": self.requests, "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "sent_ignore_eos": self.sent_ignore_eos, "metrics": self.metrics.flat(),
                "client": self.client.as_dict(), "delivery": self.delivery.as_dict(), "traffic": self.traffic,
                "invalid": self.invalid}


def traffic(run: PointRun, metrics: ServingMetrics) -> dict:
    """Offered vs achieved: the open loop's offered rate, the rate requests actually went out at (first to last
    send; below the offered rate when the client or the in-flight cap fell behind the schedule), how late they went
    out (p99 of sent - due), and the rate they completed at."""
    sent = sorted(r.sent_s for r in run.records)
    late = [r.sent_s - r.scheduled_s for r in run.records if r.scheduled_s is not None]
    offered = run.point.rate
    return {"offered_requests_per_s": None if offered is None else ("inf" if math.isinf(offered) else offered),
            "sent_requests_per_s": (len(sent) - 1) / (sent[-1] - sent[0]) if len(sent) > 1 and sent[-1] > sent[0]
            else None,
            "p99_send_delay_ms": float(np.percentile(late, 99)) * 1e3 if late else None,
            "completed_requests_per_s": metrics.requests_per_s}


def summarize(run: PointRun, input_tokens: int, output_tokens: int, slo: Slo | None = None) -> PointSummary:
    metrics = compute(run.records, run.duration_s, slo)
    return PointSummary(workload=run.workload, point=run.point.label, concurrency=run.point.concurrency,
                        rate=run.point.rate, requests=len(run.records), input_tokens=input_tokens,
                        output_tokens=output_tokens, sent_ignore_eos=run.sent_ignore_eos, metrics=metrics,
                        client=client_overhead(run.client, metrics, run.records), delivery=delivery(run.records),
                        traffic=traffic(run, metrics))


def check_measurement(summary: PointSummary, run: PointRun) -> tuple[list[str], list[str]]:
    """(problems, warnings) of one point's measurement itself: problems when it is not the declared workload (failed
    requests, prompts counted differently, outputs of the wrong length despite ignore_eos), warnings for what the
    numbers stand with (no ignore_eos, the client's overhead)."""
    m, where = summary.metrics, f"{summary.workload} {summary.point}"
    problems, warnings = [], []
    if m.failed:
        first = next(r.error for r in run.records if not r.ok)
        problems.append(f"{where}: {m.failed} of {m.failed + m.completed} requests failed; first: {first}")
    if m.prompt_length_mismatches:
        problems.append(f"{where}: the server counted {m.prompt_length_mismatches} prompt(s) differently from "
                        f"{summary.input_tokens} tokens")
    if m.output_length_mismatches:
        text = f"{where}: {m.output_length_mismatches} output(s) not {summary.output_tokens} tokens long"
        if summary.sent_ignore_eos:
            problems.append(text + " although ignore_eos was sent")
        else:  # an engine without ignore_eos: EOS may end a request early; the numbers stand, with that caveat
            warnings.append(text + " (this engine takes no ignore_eos; EOS ended them)")
    if summary.client.warning:
        warnings.append(f"{where}: {summary.client.warning}")
    warnings += [f"{where}: {name.upper()} not measurable: {why}"
                 for name, why in sorted(summary.delivery.not_measurable.items())]
    return problems, warnings
