"""The run's report dir: `ReportDir` is the one place that knows where each file of a run lives. Writers (the
plugin, the servers, the suites, `llmconform bench run`, the report sections, `llmconform compare`) and readers
(`llmconform report`, `llmconform compare`) ask it for paths; no other module joins a path inside a report dir.

Layout (names relative to the report dir):

    run.json                        what the run ran on (reports/run_identity.py)
    results.jsonl                   one record per test outcome (nodeid, when, outcome, properties ...)
    junit.xml                       JUnit XML, unless --junitxml puts it elsewhere
    INTERRUPTED                     marker: the run was stopped (Ctrl-C, SIGTERM); its reports are partial
    servers/<case>/server.json      each server's record (argv, env, version, stage, error, ...)
    servers/<case>/node<N>-<role>.log   each engine process's output
    servers/<case>/<file>           the files an engine's plan writes beside its logs
    equivalence/<case>.json         each layout's answers to the probe set, for the reference and `compare`
    accuracy/<case>.json            each layout's accuracy gate summary
    perf/<case>/<workload>-<point>.records.jsonl   each measured point's per-request records
    conformance.md, conformance.json                 the conformance section
    equivalence.md, equivalence.json                 the equivalence section
    perf.md, perf-summary.json, perf-curves.png, perf-latency.png   the perf section (perf-summary.json is also
                                                                    the baseline format of `METRIC:-X%` floors)
    regression.md, regression.json, regression.html  `llmconform compare`'s verdict (in the candidate's dir
                                                     unless --out names another folder)

`build()` writes every report section from results.jsonl; the terminal summary shows their lines.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from llmconform.config import userfiles
from llmconform.errors import UserError

# Modules with `write_report(report: ReportDir, results: list[dict]) -> list[str]` (summary lines).
SECTIONS = ("llmconform.reports.conformance_section", "llmconform.reports.equivalence_section",
            "llmconform.reports.perf_section")
ENGINE_FAILURE = "engine_failure"  # result property of the test that met a failed engine: case, what, diagnosis, log


@dataclass(frozen=True)
class ServerDir:
    """One server's folder: its record, its processes' logs and the files its plan writes."""

    path: Path

    @property
    def record(self) -> Path:
        return self.path / "server.json"

    def log(self, node: int, role: str) -> Path:
        return self.path / f"node{node}-{role}.log"

    def plan_file(self, name: str) -> Path:
        return self.path / name

    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)


@dataclass(frozen=True)
class ReportDir:
    """A run's report dir (layout in the module docstring)."""

    path: Path

    def __str__(self) -> str:
        return str(self.path)

    # --- creating and opening ------------------------------------------------------------------------------------
    @classmethod
    def create(cls, chosen: Path | None, parent: Path, stem: str) -> ReportDir:
        """The report dir of a new run. A chosen dir may exist but must not hold an earlier run's results; a default
        one (`parent/stem`) is created atomically, with -2, -3 ... appended when the name is taken (runs started in
        the same second must not share a folder)."""
        if chosen is not None:
            report = cls(chosen)
            if report.results.exists():
                raise UserError(f"--report-dir {chosen} already holds the results of an earlier run "
                                f"({report.results.name}); choose a new folder or remove that one")
            try:
                chosen.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise UserError(f"--report-dir {chosen}: cannot create it ({error.strerror})") from None
            return cls(chosen.resolve())
        parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, 1000):
            path = parent / (stem if attempt == 1 else f"{stem}-{attempt}")
            try:
                path.mkdir(exist_ok=False)
            except FileExistsError:
                continue
            return cls(path.resolve())
        raise UserError(f"{parent}: 999 report dirs named {stem}-N exist already; pass --report-dir")

    @classmethod
    def existing(cls, path: Path) -> ReportDir:
        """An earlier run's report dir (for commands that read one); a user error unless it holds a run's results."""
        report = cls(Path(path))
        if not report.path.is_dir():
            raise UserError(f"{path}: no such folder (expected the report dir of an llmconform run)")
        if not report.results.is_file():
            raise UserError(f"{path} has no {report.results.name}: not a report dir of an llmconform run")
        return report

    # --- the run -------------------------------------------------------------------------------------------------
    @property
    def results(self) -> Path:
        return self.path / "results.jsonl"

    @property
    def run_identity(self) -> Path:
        return self.path / "run.json"

    @property
    def junit(self) -> Path:
        return self.path / "junit.xml"

    @property
    def interrupted(self) -> Path:
        return self.path / "INTERRUPTED"

    def server(self, case_id: str) -> ServerDir:
        return ServerDir(self.path / "servers" / case_id)

    def server_records(self) -> dict[str, Path]:
        """Each server's record that exists, by the case id its folder is named after, in case order."""
        return {path.parent.name: path for path in sorted((self.path / "servers").glob("*/server.json"))}

    def equivalence_outputs(self, case_id: str) -> Path:
        return self.path / "equivalence" / f"{case_id}.json"

    def equivalence_output_files(self) -> dict[str, Path]:
        """Every layout's saved answers, by case id."""
        return {path.stem: path for path in sorted((self.path / "equivalence").glob("*.json"))}

    def accuracy_result(self, case_id: str) -> Path:
        return self.path / "accuracy" / f"{case_id}.json"

    def perf_records(self, case_id: str, workload: str, point: str) -> Path:
        return self.perf_records_file(case_id, f"{workload}-{point}.records.jsonl")

    def perf_records_file(self, case_id: str, name: str) -> Path:
        """A case's records file by its name (where a moved report dir keeps the file its summary points to)."""
        return self.path / "perf" / case_id / name

    # --- the report sections -------------------------------------------------------------------------------------
    @property
    def conformance_page(self) -> Path:
        return self.path / "conformance.md"

    @property
    def conformance_json(self) -> Path:
        return self.path / "conformance.json"

    @property
    def equivalence_page(self) -> Path:
        return self.path / "equivalence.md"

    @property
    def equivalence_json(self) -> Path:
        return self.path / "equivalence.json"

    @property
    def perf_page(self) -> Path:
        return self.path / "perf.md"

    @property
    def perf_summary(self) -> Path:
        return self.path / "perf-summary.json"

    @property
    def perf_curves(self) -> Path:
        return self.path / "perf-curves.png"

    @property
    def perf_latency(self) -> Path:
        return self.path / "perf-latency.png"

    @property
    def regression_page(self) -> Path:
        return self.path / "regression.md"

    @property
    def regression_json(self) -> Path:
        return self.path / "regression.json"

    @property
    def regression_html(self) -> Path:
        return self.path / "regression.html"

    def written_reports(self) -> list[str]:
        """The names of the report files a user opens that this run has (for the summary's last line)."""
        shown = (self.conformance_page, self.equivalence_page, self.perf_page, self.perf_curves, self.perf_latency,
                 self.junit, self.results)
        return [path.name for path in shown if path.exists()]

    def perf_plots(self) -> Iterator[Path]:
        """The perf section's plots that exist."""
        return (path for path in (self.perf_curves, self.perf_latency) if path.is_file())

    # --- reading and writing -------------------------------------------------------------------------------------
    def mark_interrupted(self, why: str) -> None:
        self.interrupted.write_text(f"{why}\nThe reports of this run cover only the tests that finished.\n")

    def interrupted_because(self) -> str | None:
        """Why the run was interrupted (the marker's first line), or None when it was not."""
        if not self.interrupted.exists():
            return None
        return self.interrupted.read_text().splitlines()[0]

    def load_results(self) -> list[dict]:
        """The run's per-test records; a line that is not a record (a run killed while writing it) is a user error
        that names the file and line."""
        if not self.results.exists():
            return []
        records = userfiles.read_json_lines(self.results, "an llmconform results file (JSON lines)")
        for number, record in enumerate(records, 1):
            if not isinstance(record, dict) or not {"nodeid", "when", "outcome"} <= record.keys():
                raise UserError(f"{self.results}: record {number} is not a test record (needs nodeid, when, "
                                f"outcome)")
        return records

    def build(self) -> list[str]:
        """Write every section's files; return the verdict per case, each section's lines and where the reports
        are."""
        from llmconform.reports import terminal_verdict

        results = self.load_results()
        lines: list[str] = []
        why = self.interrupted_because()
        if why is not None:
            lines.append(f"INTERRUPTED run: {why}; the reports cover only the tests that finished")
        lines += engine_failure_lines(results)
        for name in SECTIONS:
            lines += importlib.import_module(name).write_report(self, results)
        return terminal_verdict.per_case(self, results) + lines + [terminal_verdict.where(self)]


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
