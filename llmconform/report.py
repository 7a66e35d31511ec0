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
    """The run's per-test records; a line that is not a record (a run killed while writing it) is a user error that
    names the file and line."""
    path = report_dir / RESULTS
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise UserError(f"{path}: line {number} is not a JSON record (truncated? was the run killed while writing "
                            f"it?): {line[:80]!r}") from None
        if not isinstance(record, dict) or not {"nodeid", "when", "outcome"} <= record.keys():
            raise UserError(f"{path}: line {number} is not a test record (needs nodeid, when, outcome)")
        records.append(record)
    return records


def build(report_dir: Path) -> list[str]:
    results = load_results(report_dir)
    lines: list[str] = []
    for name in SECTIONS:
        lines += importlib.import_module(name).write_report(report_dir, results)
    return lines
