"""The conformance report section: OpenAI API checks x servers (engine, version, layout), each cell pass, fail,
xfail (a declared known deviation, with its reason), XPASS (a declared deviation that no longer happens: the
deviation list must be updated) or skip (with its reason). Written as conformance.md and conformance.json."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llmconform.api import PROPERTY
from llmconform.reports.report_dir import ReportDir

SUITE_FILE_PREFIX = "test_openai_"  # suites whose tests that never reached a server are listed as not reached
# When a test has several records (call, teardown), the worst one is its outcome.
SEVERITY = {"fail": 4, "xpass": 3, "xfail": 2, "skip": 1, "pass": 0}
FAILING = ("fail", "xpass")


@dataclass
class Cell:
    outcome: str  # pass, fail, xfail, xpass, skip
    reason: str = ""


@dataclass
class Column:
    key: str
    server: str  # the llm id: engine-model-layout, or external-ENGINE
    engine: str
    engine_version: str | None
    layout: str
    model: str


@dataclass
class Check:
    check: str
    spec: str
    cells: dict[str, Cell] = field(default_factory=dict)


@dataclass
class Table:
    columns: dict[str, Column] = field(default_factory=dict)
    checks: dict[str, Check] = field(default_factory=dict)
    not_reached: list[dict] = field(default_factory=list)  # tests whose server never served them

    def verdict(self, key: str) -> str:
        """One line for a server: conforms or not, passed of checked, and what else there was."""
        counts = self.totals(key)
        checked = sum(counts.values()) - counts["skip"]
        head = "DOES NOT CONFORM" if counts["fail"] or counts["xpass"] else "conforms"
        extras = [f"{counts['fail']} FAIL" if counts["fail"] else "",
                  f"{counts['xpass']} XPASS (fixed deviation)" if counts["xpass"] else "",
                  f"{counts['xfail']} known deviation(s)" if counts["xfail"] else "",
                  f"{counts['skip']} skipped" if counts["skip"] else ""]
        return f"{head}: {counts['pass']}/{checked} pass" + "".join(f", {e}" for e in extras if e)

    def totals(self, key: str) -> dict[str, int]:
        counts = {outcome: 0 for outcome in SEVERITY}
        for check in self.checks.values():
            if key in check.cells:
                counts[check.cells[key].outcome] += 1
        return counts


def classify(record: dict) -> Cell:
    outcome = record.get("outcome")
    if outcome == "passed":
        return Cell("pass")
    if outcome == "skipped" and "xfail_reason" in record:
        return Cell("xfail", record["xfail_reason"])
    if outcome == "skipped":
        return Cell("skip", (record.get("skip_reason") or "").removeprefix("Skipped: "))
    error = record.get("error") or ""
    if "[XPASS(strict)]" in error:
        return Cell("xpass", "declared deviation did not happen: " + error.split("[XPASS(strict)]", 1)[1].strip())
    return Cell("fail", _last_lines(error))


def build_table(results: list[dict]) -> Table:
    table = Table()
    tagged: dict[tuple[str, str, str], list[dict]] = {}  # (test, check, column) -> its records
    untagged: dict[str, list[dict]] = {}  # tests that failed or skipped before the conformance fixture ran
    for record in results:
        props = record.get("properties") or {}
        if PROPERTY not in props or "llm" not in props:
            untagged.setdefault(record["nodeid"], []).append(record)
            continue
        server, meta = props["llm"], props[PROPERTY]
        version = server.get("engine_version") or meta.get("engine_version")
        key = f"{server['id']} @ {version or 'unknown version'}"
        table.columns.setdefault(key, Column(key=key, server=server["id"], engine=server["engine"],
                                             engine_version=version, layout=server["layout"], model=server["model"]))
        table.checks.setdefault(meta["check"], Check(meta["check"], meta.get("spec", "")))
        tagged.setdefault((record["nodeid"], meta["check"], key), []).append(record)
    for (_, check, key), records in tagged.items():
        table.checks[check].cells[key] = _worst(records)
    reached = {nodeid for nodeid, _, _ in tagged}
    for nodeid, records in untagged.items():
        if nodeid not in reached and Path(nodeid.split("::", 1)[0]).name.startswith(SUITE_FILE_PREFIX):
            cell = _worst(records)
            table.not_reached.append({"test": nodeid, "outcome": cell.outcome, "reason": cell.reason})
    return table


def _worst(records: list[dict]) -> Cell:
    return max((classify(r) for r in records), key=lambda cell: SEVERITY[cell.outcome])


def render_markdown(table: Table) -> str:
    keys = list(table.columns)
    notes: dict[str, int] = {}

    def cell_text(cell: Cell | None) -> str:
        if cell is None:
            return ""
        label = {"pass": "pass", "fail": "**FAIL**", "xpass": "**XPASS**", "xfail": "xfail", "skip": "skip"}[
            cell.outcome]
        if not cell.reason:
            return label
        number = notes.setdefault(cell.reason, len(notes) + 1)
        return f"{label} [{number}]"

    legend = ("pass: conforms. xfail: a declared known deviation (llmconform/engines/deviations.yaml). "
              "XPASS: a declared deviation that did not happen (update the list). skip: not checkable here.")
    verdicts = [f"- **{_escape(k)}**: {table.verdict(k)}" for k in keys]
    lines = ["# OpenAI API conformance", "", *verdicts, "", legend, "",
             "| check | spec | " + " | ".join(_escape(k) for k in keys) + " |",
             "|---|---|" + "---|" * len(keys)]
    for check in table.checks.values():
        cells = " | ".join(cell_text(check.cells.get(k)) for k in keys)
        lines.append(f"| `{_escape(check.check)}` | {_escape(_short(check.spec))} | {cells} |")
    totals = [", ".join(f"{n} {o}" for o, n in table.totals(k).items() if n) for k in keys]
    lines.append("| **total** | | " + " | ".join(totals) + " |")
    if notes:
        lines += ["", "## Reasons", ""]
        lines += [f"{number}. {_escape(reason)}" for reason, number in notes.items()]
    if table.not_reached:
        lines += ["", "## Not reached (no server served these tests)", ""]
        lines += [f"- `{t['test']}`: {t['outcome']} {_escape(t['reason'])}" for t in table.not_reached]
    return "\n".join(lines) + "\n"


def to_json(table: Table) -> dict:
    return {
        "columns": [asdict(c) for c in table.columns.values()],
        "checks": [{"check": c.check, "spec": c.spec, "results": {k: asdict(cell) for k, cell in c.cells.items()}}
                   for c in table.checks.values()],
        "totals": {k: table.totals(k) for k in table.columns},
        "not_reached": table.not_reached,
    }


def write_report(report: ReportDir, results: list[dict]) -> list[str]:
    table = build_table(results)
    if not table.checks and not table.not_reached:
        return []
    markdown = report.conformance_page
    markdown.write_text(render_markdown(table))
    report.conformance_json.write_text(json.dumps(to_json(table), indent=2) + "\n")
    lines = []
    for key in table.columns:
        lines.append(f"conformance {key}: {table.verdict(key)}")
        failing = [c.check for c in table.checks.values() if key in c.cells and c.cells[key].outcome in FAILING]
        if failing:
            lines.append(f"  failing: {', '.join(failing[:8])}{' ...' if len(failing) > 8 else ''}")
    if table.not_reached:
        lines.append(f"conformance: {len(table.not_reached)} test(s) never reached a server (see {markdown.name})")
    lines.append(f"conformance table: {markdown}")
    return lines


def _short(spec: str, limit: int = 80) -> str:
    """The spec field a check names: its Spec: text up to the first ': ' outside braces and brackets (so that
    `ErrorResponse {error: Error}` stays whole), at most `limit` characters."""
    depth = 0
    for i, char in enumerate(spec):
        depth += char in "{[("
        depth -= char in "}])"
        if depth == 0 and spec.startswith(": ", i):
            spec = spec[:i]
            break
    return spec if len(spec) <= limit else spec[: limit - 3] + "..."


def _last_lines(text: str, count: int = 3) -> str:
    """The end of a failure report, where the problems are; pytest's 'E   ' prefixes dropped."""
    lines = [line.removeprefix("E ").strip() for line in text.strip().splitlines() if line.strip()]
    return " / ".join(lines[-count:])[:500]


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
