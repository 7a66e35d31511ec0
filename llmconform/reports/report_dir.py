"""The run's report: each report section (conformance, equivalence, performance) reads the per-test results
(`results.jsonl` in the report dir) and writes its own files there; the terminal summary shows their lines."""

from __future__ import annotations

import importlib
from pathlib import Path

from llmconform.config import userfiles
from llmconform.errors import UserError

# Modules with `write_report(report_dir: Path, results: list[dict]) -> list[str]` (summary lines).
SECTIONS = ("llmconform.reports.conformance_section", "llmconform.reports.equivalence_section",
            "llmconform.reports.perf_section")


RESULTS = "results.jsonl"
ENGINE_FAILURE = "engine_failure"  # result property of the test that met a failed engine: case, what, diagnosis, log
INTERRUPTED = "INTERRUPTED"  # marker file: the run was stopped by Ctrl-C or SIGTERM; its reports are partial


def create_report_dir(chosen: Path | None, parent: Path, stem: str) -> Path:
    """The report dir of a new run. A chosen dir may exist but must not hold an earlier run's results; a default
    one (`parent/stem`) is created atomically, with -2, -3 ... appended when the name is taken (runs started in the
    same second must not share a folder)."""
    if chosen is not None:
        if (chosen / RESULTS).exists():
            raise UserError(f"--report-dir {chosen} already holds the results of an earlier run ({RESULTS}); "
                            f"choose a new folder or remove that one")
        try:
            chosen.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(f"--report-dir {chosen}: cannot create it ({error.strerror})") from None
        return chosen.resolve()
    parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 1000):
        path = parent / (stem if attempt == 1 else f"{stem}-{attempt}")
        try:
            path.mkdir(exist_ok=False)
        except FileExistsError:
            continue
        return path.resolve()
    raise UserError(f"{parent}: 999 report dirs named {stem}-N exist already; pass --report-dir")


def mark_interrupted(report_dir: Path, why: str) -> None:
    (report_dir / INTERRUPTED).write_text(f"{why}\nThe reports of this run cover only the tests that finished.\n")


def check_report_dir(report_dir: Path) -> None:
    """A user error unless `report_dir` holds a run's results (for commands that read an earlier run)."""
    if not report_dir.is_dir():
        raise UserError(f"{report_dir}: no such folder (expected the report dir of an llmconform run)")
    if not (report_dir / RESULTS).is_file():
        raise UserError(f"{report_dir} has no {RESULTS}: not a report dir of an llmconform run")


def load_results(report_dir: Path) -> list[dict]:
    """The run's per-test records; a line that is not a record (a run killed while writing it) is a user error that
    names the file and line."""
    path = report_dir / RESULTS
    if not path.exists():
        return []
    records = userfiles.read_json_lines(path, "an llmconform results file (JSON lines)")
    for number, record in enumerate(records, 1):
        if not isinstance(record, dict) or not {"nodeid", "when", "outcome"} <= record.keys():
            raise UserError(f"{path}: record {number} is not a test record (needs nodeid, when, outcome)")
    return records


def build(report_dir: Path) -> list[str]:
    """Write every section's files; return the verdict per case, each section's lines and where the reports are."""
    from llmconform.reports import terminal_verdict

    results = load_results(report_dir)
    lines: list[str] = []
    if (report_dir / INTERRUPTED).exists():
        lines.append(f"INTERRUPTED run: {(report_dir / INTERRUPTED).read_text().splitlines()[0]}; "
                     f"the reports cover only the tests that finished")
    lines += engine_failure_lines(results)
    for name in SECTIONS:
        lines += importlib.import_module(name).write_report(report_dir, results)
    return terminal_verdict.per_case(report_dir, results) + lines + [terminal_verdict.where(report_dir)]


def engine_failure_lines(results: list[dict]) -> list[str]:
    """One line per engine that failed to start, died or hung, and how many of its case's tests did not run."""
    lines = []
    for record in results:
        failure = record.get("properties", {}).get(ENGINE_FAILURE)
        if not failure:
            continue
        not_run = sum(1 for r in results if (r.get("skip_reason") or "").startswith(f"not run: {failure['what']}"))
        lines.append(f"ENGINE FAILURE {failure['what']} (in {record['nodeid']}; {not_run} later test(s) of the case "
                     f"not run); diagnosis: {failure.get('diagnosis', '-')}; log: {failure.get('log', '-')}")
    return lines
