"""The verdict at the end of a run, for the terminal: one line per case (conformance passed of checked, equivalence
against the reference, accuracy on a task with known answers, floors, the best throughput and how many points are
flagged, how long the server took to start), then where the reports are. Built from the run's results and the files
the report sections wrote."""

from __future__ import annotations

import json

from llmconform.equivalence import policy
from llmconform.reports import conformance_section, perf_section
from llmconform.reports.report_dir import ReportDir


def per_case(report: ReportDir, results: list[dict]) -> list[str]:
    cells: dict[str, dict[str, str]] = {}  # case -> column -> text

    def put(case: str | None, column: str, text: str) -> None:
        if case:
            cells.setdefault(case, {})[column] = text

    table = conformance_section.build_table(results)
    for column in table.columns.values():
        put(column.server, "conformance", _conformance(table.totals(column.key)))
    for case, text in _equivalence(results).items():
        put(case, "equivalence", text)
    for result in results:
        props = result.get("properties") or {}
        if isinstance(props.get("accuracy"), dict):
            put((props.get("llm") or {}).get("id"), "accuracy", _accuracy(props["accuracy"], result.get("outcome")))
    runs, verdicts = perf_section.collect(results)
    for case in dict.fromkeys(v["case"] for v in verdicts):
        put(case, "floors", _floors([v["status"] for v in verdicts if v["case"] == case]))
    for case in dict.fromkeys(r["case"] for r in runs):
        case_runs = [r for r in runs if r["case"] == case]
        best = max(case_runs, key=lambda r: r["metrics"]["output_tok_s"])
        flagged = sum(bool(r["flags"]) for r in case_runs)
        put(case, "perf", f"best {best['metrics']['output_tok_s']:,.0f} out tok/s ({best['point']})"
                          + (f", {flagged} point(s) flagged" if flagged else ""))
    for path in report.server_records().values():
        record = json.loads(path.read_text())
        if record.get("error"):
            put(record["case"], "start", f"START FAILED at stage {record.get('stage')}")
        elif record.get("ready_s") is not None:
            put(record["case"], "start", f"started in {record['ready_s']:.0f} s")
    if not cells:
        return []
    columns = [c for c in ("conformance", "equivalence", "accuracy", "floors", "perf", "start")
               if any(c in row for row in cells.values())]
    rows = [[case, *(row.get(c, "") for c in columns)] for case, row in cells.items()]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["verdict per case:"] + ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
                                    for row in rows]


def where(report: ReportDir) -> str:
    return f"reports in {report}: {', '.join(report.written_reports()) or 'none written'}"


def _conformance(totals: dict[str, int]) -> str:
    checked = sum(totals.values()) - totals["skip"]
    text = f"conformance {totals['pass']}/{checked}"
    problems = [text for count, text in ((totals["fail"], f"{totals['fail']} FAIL"),
                                         (totals["xpass"], f"{totals['xpass']} XPASS"),
                                         (totals["xfail"], f"{totals['xfail']} known")) if count]
    return text + (f" ({', '.join(problems)})" if problems else "")


def _equivalence(results: list[dict]) -> dict[str, str]:
    """Per case: reference, identical, close or DIVERGED against the reference (or FAILED / known engine failure)."""
    seen: dict[str, dict] = {}
    for result in results:
        props = result.get("properties") or {}
        data, server = props.get(policy.PROPERTY), props.get("llm") or {}
        if not isinstance(data, dict) or not server.get("id"):
            continue
        state = seen.setdefault(server["id"], {"reference": False, "outcomes": set(), "failed": 0, "known": False})
        state["reference"] |= data.get("role") == "reference"
        outcome = (data.get("verdict") or {}).get("outcome")
        if outcome in ("identical", "close", "diverged"):
            state["outcomes"].add(outcome)
        if result.get("outcome") == "failed":
            state["failed"] += 1
        elif (result.get("xfail_reason") or "").startswith("known engine failure"):
            state["known"] = True
    verdicts = {}
    for case, state in seen.items():
        if "diverged" in state["outcomes"]:
            text = "equivalence DIVERGED"
        elif state["failed"]:
            text = f"equivalence FAILED ({state['failed']} test(s))"
        elif state["known"]:
            text = "equivalence: known engine failure"
        elif state["reference"]:
            text = "equivalence: reference"
        elif "close" in state["outcomes"]:
            text = "equivalence close"
        elif state["outcomes"]:
            text = "equivalence identical"
        else:
            continue
        verdicts[case] = text
    return verdicts


def _accuracy(summary: dict, outcome: str | None) -> str:
    text = f"accuracy {summary['accuracy']:.1%} ({summary['correct']}/{summary['problems']})"
    return text + (" FAIL" if outcome == "failed" else "")


def _floors(statuses: list[str]) -> str:
    passed, failed = statuses.count("pass"), statuses.count("fail")
    if not passed and not failed:
        return f"floors not checked ({len(statuses)} skipped)"
    return f"floors {passed}/{passed + failed} pass" + (f", {failed} FAIL" if failed else "")
