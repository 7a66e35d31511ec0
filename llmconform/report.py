"""The run's report: each report section (conformance, equivalence, performance) reads the per-test results
(`results.jsonl` in the report dir) and writes its own files there; the terminal summary shows their lines."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

# Modules with `write_report(report_dir: Path, results: list[dict]) -> list[str]` (summary lines).
SECTIONS = ("llmconform.conformance", "llmconform.equivalence", "llmconform.perf")


def load_results(report_dir: Path) -> list[dict]:
    path = report_dir / "results.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def build(report_dir: Path) -> list[str]:
    results = load_results(report_dir)
    lines: list[str] = []
    for name in SECTIONS:
        lines += importlib.import_module(name).write_report(report_dir, results)
    return lines
