"""Goodput capacity: the highest open-loop request rate at which a server still meets a workload's SLO.

A rate meets the SLO when every request succeeded and the chosen percentile (default p99) of TTFT, TPOT and E2EL is
within the workload's `slo:` (milliseconds). The search is bounded: it measures `low` first (if even that misses, the
capacity is below it), then doubles the rate until a point misses or `high` is reached, then bisects between the
highest rate that met the SLO and the lowest that missed, until they are within `precision` of each other or
`max_points` points have been measured. A point where the client was the bottleneck, or whose TPOT could not be
measured while the SLO bounds it, stops the search: it cannot say whether the server met the SLO.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from llmconform.config.workloads import Slo
from llmconform.perf.load_metrics import PointSummary, not_measurable

PERCENTILES = ("median", "p90", "p99")


@dataclass(frozen=True)
class Probe:
    rate: float
    meets: bool
    why: str  # what missed, or the values that met the SLO
    summary: dict  # PointSummary.as_dict()


@dataclass
class Capacity:
    slo: Slo
    percentile: str
    probes: list[Probe] = field(default_factory=list)
    stopped: str | None = None  # why the search stopped before it converged (an invalid point)

    @property
    def rate(self) -> float | None:
        """The highest rate measured that met the SLO (None: not even the lowest)."""
        return max((p.rate for p in self.probes if p.meets), default=None)

    @property
    def lowest_miss(self) -> float | None:
        return min((p.rate for p in self.probes if not p.meets), default=None)

    def as_dict(self) -> dict:
        return {"capacity_requests_per_s": self.rate, "lowest_missing_rate": self.lowest_miss,
                "slo": asdict(self.slo), "percentile": self.percentile, "stopped": self.stopped,
                "probes": [asdict(p) for p in self.probes]}


class CannotJudge(Exception):
    """A point that cannot say whether the server met the SLO."""


def judge(summary: PointSummary, slo: Slo, percentile: str = "p99") -> tuple[bool, str]:
    """(met, why) for one measured point; CannotJudge when the measurement cannot tell."""
    if summary.invalid:
        raise CannotJudge(f"rate {summary.rate:g}: {summary.invalid}")
    point = summary.as_dict()
    if slo.tpot_ms is not None and not_measurable(f"{percentile}_tpot_ms", point):
        raise CannotJudge(f"rate {summary.rate:g}: TPOT is {not_measurable(f'{percentile}_tpot_ms', point)}")
    m = summary.metrics
    if m.failed:
        return False, f"{m.failed} of {m.failed + m.completed} requests failed"
    checks = []
    for name, limit in (("ttft", slo.ttft_ms), ("tpot", slo.tpot_ms), ("e2el", slo.e2el_ms)):
        if limit is not None:
            value = m.value(f"{percentile}_{name}_ms")
            assert value is not None  # requests completed and none failed: each latency was measured
            checks.append((value <= limit, f"{percentile} {name.upper()} {value:.1f} ms "
                                           f"{'<=' if value <= limit else '>'} {limit:g}"))
    return all(ok for ok, _ in checks), ", ".join(text for _, text in checks)


def search(measure: Callable[[float], PointSummary], slo: Slo, low: float, high: float, max_points: int = 8,
           precision: float = 0.05, percentile: str = "p99", log: Callable[[str], None] = print) -> Capacity:
    """Find the capacity between `low` and `high` requests/s with at most `max_points` calls of `measure(rate)`."""
    if not (slo.ttft_ms or slo.tpot_ms or slo.e2el_ms):
        raise ValueError("a capacity search needs an SLO (ttft_ms, tpot_ms or e2el_ms)")
    if not 0 < low < high:
        raise ValueError(f"the rates must satisfy 0 < low < high, got low {low:g}, high {high:g}")
    if max_points < 2:
        raise ValueError("a capacity search needs at least 2 points")
    if percentile not in PERCENTILES:
        raise ValueError(f"percentile {percentile!r} is not one of {', '.join(PERCENTILES)}")
    result = Capacity(slo, percentile)

    def probe(rate: float) -> bool:
        summary = measure(rate)
        meets, why = judge(summary, slo, percentile)
        result.probes.append(Probe(rate, meets, why, summary.as_dict()))
        log(f"rate {rate:.3g} req/s: {'meets' if meets else 'misses'} the SLO ({why}); output "
            f"{summary.metrics.output_tok_s:.1f} tok/s")
        return meets

    try:
        if not probe(low):
            return result
        good, bad = low, None
        while bad is None and good < high and len(result.probes) < max_points:
            rate = min(2 * good, high)
            if probe(rate):
                good = rate
            else:
                bad = rate
        while bad is not None and (bad - good) / good > precision and len(result.probes) < max_points:
            rate = (good + bad) / 2
            if probe(rate):
                good = rate
            else:
                bad = rate
    except CannotJudge as why:
        result.stopped = str(why)
        log(f"stopped: {why}")
    return result
