"""The run's report: each report section (conformance, equivalence, performance) reads the per-test results
(`results.jsonl` in the report dir) and writes its own files there; the terminal summary shows their lines."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from .errors import UserError

# Modules with `write_report(report_dir: Path, results: list[dict]) -> list[str]` (summary lines).
SECTIONS = ("llmconform.conformance", "llmconform.equivalence", "llmconform.perf")


RESULTS = "results.jsonl"


def check_report_dir(report_dir: Path) -> None:
    """A user error unless `report_dir` holds a run's results (for commands that read an earlier run)."""
    if not (report_dir / RESULTS).is_file():
        raise UserError(f"{report_dir} has no {RESULTS}: not a report dir of an llmconform run")


def load_results(report_dir: Path) -> list[dict]:
    path = report_dir / RESULTS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def build(report_dir: Path) -> list[str]:
    """Write every section's files; return the verdict per case, each section's lines and where the reports are."""
    from . import verdict

    results = load_results(report_dir)
    lines: list[str] = []
    for name in SECTIONS:
        lines += importlib.import_module(name).write_report(report_dir, results)
    return verdict.per_case(report_dir, results) + lines + [verdict.where(report_dir)]
