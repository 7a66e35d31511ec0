"""The engines' Prometheus endpoints: the text exposition format read into counter totals, and how a request must
move them."""

from __future__ import annotations

import re

# name{labels} value [timestamp]; label values may hold any escaped text
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\})?\s+(\S+)(?:\s+-?\d+)?\s*$')


def parse(text: str) -> dict[str, float]:
    """Each metric's value summed over its label sets (a counter's total across models, finish reasons, ...)."""
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            raise ValueError(f"not a Prometheus sample line: {line[:120]!r}")
        name, value = match.group(1), float(match.group(3))
        totals[name] = totals.get(name, 0.0) + value
    return totals


def missing_counters(totals: dict[str, float], counters: dict[str, str]) -> list[str]:
    return [f"{role} counter {name} is not exposed" for role, name in counters.items() if name not in totals]


def movement_problems(before: dict[str, float], after: dict[str, float], counters: dict[str, str],
                      expected: dict[str, int | None]) -> list[str]:
    """Each counter moved by exactly what was sent (the usage the server reported, one request; None where the
    usage left that count out, which no movement matches)."""
    problems = []
    for role, want in expected.items():
        name = counters.get(role)
        if name is None:
            continue
        moved = after.get(name, 0.0) - before.get(name, 0.0)
        if moved != want:
            problems.append(f"{name} moved by {moved:g}, expected {want} ({role} of the request)")
    return problems
