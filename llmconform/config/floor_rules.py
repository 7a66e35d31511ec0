"""The matrix's `floors:` section: the floor grammar, and the metrics a floor (or a regression tolerance) may name.
How floors are checked against measured points is llmconform.perf.floors.

A matrix declares them as one line each (`parse_floors`):

```yaml
floors:
  - output_tok_s >= 4000 at concurrency 64 on H100          # absolute, on one hardware profile
  - p99_ttft_ms <= 2000 in chat-512-128                      # SLO-style, every point of a workload, any hardware
  - decode >= 60% of roofline on H100                        # median TPOT at concurrency 1 vs the bandwidth bound
  - output_tok_s:-5%                                         # relative to a saved baseline (pytest-benchmark-style)
  - p99_ttft_ms:+10% at concurrency 64 for vllm-qwen2.5-7b-*  # ... for the cases whose id matches a glob
```

Metrics are those of llmconform.perf.load_metrics (`output_tok_s`, `p99_ttft_ms`, `median_tpot_ms`, ...). Clauses,
each at most once and in any order: `in WORKLOAD`, `at concurrency N` / `at rate R`, `on PROFILE` (hardware), `for GLOB`
(case ids). Without `in` / `at`, a floor holds at every measured point.
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass

from llmconform.config import schema
from llmconform.config.workloads import Workload

# The metrics of llmconform.perf.load_metrics, which computes them with vLLM's definitions.
LATENCIES = ("ttft", "tpot", "itl", "e2el")
STATISTICS = ("mean", "median", "std", "p90", "p99")
THROUGHPUTS = ("output_tok_s", "total_tok_s", "requests_per_s", "goodput_requests_per_s", "max_output_tok_s")
LATENCY_METRICS = tuple(f"{stat}_{name}_ms" for name in LATENCIES for stat in STATISTICS)
METRICS = THROUGHPUTS + LATENCY_METRICS

KINDS = ("bound", "roofline", "baseline")
GRAMMAR = schema.schema()["$defs"]["floor"]["description"]
_NUMBER = r"\d+(?:\.\d+)?(?:e[+-]?\d+)?"


def higher_is_better(metric: str) -> bool:
    return metric in THROUGHPUTS


@dataclass(frozen=True)
class Floor:
    """One declared floor. bound: metric op value. roofline: bound/measured >= value (a fraction). baseline: the
    metric may move by at most `value` (a fraction) in its bad direction against the saved baseline."""

    text: str
    kind: str
    metric: str
    value: float
    op: str = ">="
    workload: str | None = None
    concurrency: int | None = None
    rate: float | None = None
    hardware: str | None = None
    cases: str | None = None

    def applies_to(self, case_id: str) -> bool:
        return self.cases is None or fnmatch.fnmatchcase(case_id, self.cases)


_HEADS = (
    ("roofline", re.compile(rf"decode\s*>=\s*(?P<value>{_NUMBER})\s*%\s*of\s+roofline", re.IGNORECASE)),
    ("baseline", re.compile(rf"(?P<metric>[a-z0-9_]+)\s*:\s*(?P<sign>[+-])\s*(?P<value>{_NUMBER})\s*%")),
    ("bound", re.compile(rf"(?P<metric>[a-z0-9_]+)\s*(?P<op>>=|<=)\s*(?P<value>{_NUMBER})")),
)
_CLAUSES = (
    ("workload", re.compile(r"\s+in\s+(?P<v>[A-Za-z0-9_.-]+)")),
    ("concurrency", re.compile(r"\s+at\s+concurrency\s+(?P<v>\d+)")),
    ("rate", re.compile(rf"\s+at\s+rate\s+(?P<v>{_NUMBER}|inf)")),
    ("hardware", re.compile(r"\s+on\s+(?P<v>[A-Za-z0-9-]+)")),
    ("cases", re.compile(r"\s+for\s+(?P<v>\S+)")),
)


def parse_floor(text: str) -> Floor:
    """One floor expression (see the module docstring); ValueError says what is wrong with it."""
    source = text.strip()
    for kind, head in _HEADS:  # noqa: B007 - the matching head's kind is read after the loop
        match = head.match(source)
        if match:
            break
    else:
        raise ValueError(f"{source!r} is not a floor expression")
    fields: dict = {"text": source, "kind": kind, "value": float(match["value"])}
    if kind == "roofline":
        fields.update(metric="median_tpot_ms", value=fields["value"] / 100, concurrency=1)
    else:
        metric = match["metric"]
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r} (known: {', '.join(METRICS)})")
        fields["metric"] = metric
        if kind == "bound":
            fields["op"] = match["op"]
        else:
            bad = "-" if higher_is_better(metric) else "+"
            if match["sign"] != bad:
                raise ValueError(f"{metric} is {'higher' if bad == '-' else 'lower'} is better: a regression "
                                 f"allowance is written {metric}:{bad}{match['value']}%")
            fields["value"] = fields["value"] / 100
    rest = source[match.end():]
    seen: set[str] = set()
    while rest.strip():
        for name, clause in _CLAUSES:  # noqa: B007 - the matching clause's name is read after the loop
            found = clause.match(rest)
            if found:
                break
        else:
            raise ValueError(f"cannot read {rest.strip()!r} (clauses: in WORKLOAD, at concurrency N, at rate R, "
                             f"on PROFILE, for CASE-GLOB)")
        slot = "at concurrency / at rate" if name in ("concurrency", "rate") else name
        if slot in seen:
            raise ValueError(f"{found.group(0).strip()!r}: a floor has at most one '{slot}' clause")
        seen.add(slot)
        value = found["v"]
        if name == "concurrency":
            if kind == "roofline" and int(value) != 1:
                raise ValueError("the roofline floor is measured at concurrency 1")
            fields["concurrency"] = int(value)
        elif name == "rate":
            if kind == "roofline":
                raise ValueError("the roofline floor is measured at concurrency 1, not at a rate")
            fields["rate"] = math.inf if value == "inf" else float(value)
        else:
            fields[name] = value
        rest = rest[found.end():]
    return Floor(**fields)


def parse_floors(value, fail: schema.Fail,
                 workloads: tuple[Workload, ...] | None = None) -> tuple[Floor, ...]:
    """Validate a matrix's `floors:` section (a list of floor expressions). `fail(path, problem, allowed)` must raise.
    With the matrix's workloads, floors that name a workload or point that does not exist fail too. Items that are
    already `Floor`s pass through."""
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        schema.check(value, fail, "floors", "floors")
    floors = []
    for i, item in enumerate(value):
        if isinstance(item, Floor):
            floors.append(item)
            continue
        schema.check(item, fail, "floor", f"floors[{i}]")
        try:
            floor = parse_floor(item)
        except ValueError as error:
            fail(f"floors[{i}]", str(error), GRAMMAR)
        if workloads is not None:
            problem = _unmeasurable(floor, workloads)
            if problem:
                fail(f"floors[{i}]", problem[0], problem[1])
        floors.append(floor)
    return tuple(floors)


def _unmeasurable(floor: Floor, workloads: tuple[Workload, ...]) -> tuple[str, str] | None:
    names = [w.name for w in workloads]
    if floor.workload is not None and floor.workload not in names:
        return (f"{floor.text!r} names workload {floor.workload!r}, which the matrix does not declare",
                ", ".join(names) or "declare it under `workloads:`")
    chosen = [w for w in workloads if floor.workload in (None, w.name)]
    which = "workload" if floor.workload is None else repr(floor.workload)
    if floor.concurrency is not None and not any(floor.concurrency in w.concurrency for w in chosen):
        have = sorted({c for w in chosen for c in w.concurrency})
        problem = f"{floor.text!r} needs a point at concurrency {floor.concurrency}, which no {which} measures"
        return problem, ", ".join(map(str, have)) or "a workload with `concurrency:`"
    if floor.rate is not None and not any(floor.rate in w.rates for w in chosen):
        rates = sorted({r for w in chosen for r in w.rates})
        problem = f"{floor.text!r} needs a point at rate {floor.rate:g}, which no {which} measures"
        return problem, ", ".join(f"{r:g}" for r in rates) or "a workload with `rate:`"
    return None
