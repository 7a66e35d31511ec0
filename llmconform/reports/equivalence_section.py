"""The equivalence report section: from the `equivalence` property each test of the equivalence suite records, the
table of layouts x probes per engine and model (equivalence.md, equivalence.json), with the servers that never
started, and the summary lines for the terminal."""

from __future__ import annotations

import json

from llmconform.equivalence.policy import PROPERTY
from llmconform.reports.report_dir import ReportDir

DIFFERENT = ("close", "diverged", "variant", "nondeterministic")  # verdict outcomes whose details the report shows


def write_report(report: ReportDir, results: list[dict]) -> list[str]:
    """The equivalence table (markdown + JSON) from the tests' `equivalence` properties; returns summary lines."""
    rows = [_row(r) for r in results if isinstance(r.get("properties", {}).get(PROPERTY), dict)]
    if not rows:
        return []
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["engine"], row["model"]), []).append(row)
    for row in _start_failures(report, rows):
        groups[(row["engine"], row["model"])].append(row)
    markdown = ["# Output equivalence", ""]
    document = []
    lines = []
    for (engine, model), members in groups.items():
        group = _group(engine, model, members)
        document.append(group)
        markdown += _group_markdown(group)
        lines.append(_group_line(group))
    report.equivalence_page.write_text("\n".join(markdown) + "\n")
    report.equivalence_json.write_text(json.dumps({"groups": document}, indent=1))
    return [*lines, f"equivalence report: {report.equivalence_page}"]


def _row(result: dict) -> dict:
    prop = result["properties"][PROPERTY]
    row = {key: prop.get(key) for key in ("engine", "model", "served_model", "layout", "reference", "probe",
                                          "comparator", "why", "verdict", "control")}
    row["status"], row["cell"] = _cell(result, prop.get("verdict"))
    row["test"] = result.get("nodeid")
    row["reason"] = result.get("xfail_reason") if row["status"] == "known engine failure" else None
    return row


def _start_failures(report: ReportDir, rows: list[dict]) -> list[dict]:
    """A layout whose server never started has no test properties; its server record says what happened."""
    models = {(row["engine"], row["served_model"]): row["model"] for row in rows}
    seen = {(row["engine"], row["model"], row["layout"]) for row in rows}
    failures = []
    for record_path in report.server_records().values():
        record = json.loads(record_path.read_text())
        model = models.get((record.get("engine"), record.get("served_model")))
        if not record.get("error") or model is None or (record["engine"], model, record["layout"]) in seen:
            continue
        diagnosis = next((line.split("diagnosis:", 1)[1].strip() for line in record["error"].splitlines()
                          if "diagnosis:" in line), _first_line(record["error"]))
        failures.append({"engine": record["engine"], "model": model, "layout": record["layout"], "reference": None,
                         "probe": "probe set", "comparator": None, "why": None, "verdict": None, "test": None,
                         "reason": None,
                         "served_model": record.get("served_model"), "status": "FAILED",
                         "cell": f"**SERVER FAILED TO START** (stage {record.get('stage')}): {diagnosis}"})
    return failures


def _cell(result: dict, verdict: dict | None) -> tuple[str, str]:
    outcome = result.get("outcome")
    xfail = result.get("xfail_reason")
    if result["properties"][PROPERTY].get("role") == "reference":
        return "reference", "reference"
    if outcome == "skipped" and xfail and xfail.startswith("known engine failure"):
        return "known engine failure", "KNOWN ENGINE FAILURE (below)"
    shown = (verdict or {}).get("cell")
    if outcome == "skipped" and xfail:
        return "xfail", f"{shown} [xfail: {_first_line(xfail)}]" if shown else f"xfail: {_first_line(xfail)}"
    if outcome == "passed" and xfail:
        return "xpass", f"{shown} [XPASS: {_first_line(xfail)}]" if shown else f"XPASS: {_first_line(xfail)}"
    if outcome == "skipped":
        return "skipped", f"skipped: {_first_line(result.get('skip_reason') or '')}"
    if verdict:
        text = verdict.get("cell") or verdict.get("summary", "")
        return ("ok" if outcome == "passed" else "FAILED"), (text if outcome == "passed" else f"**{text}**")
    if outcome == "passed":
        return "ok", "ok"
    return "FAILED", f"**FAILED**: {_first_line(result.get('error') or '')}"


def _group(engine: str, model: str, members: list[dict]) -> dict:
    probes: list[str] = []
    layouts_seen: list[str] = []
    for row in members:
        if row["probe"] not in probes:
            probes.append(row["probe"])
        if row["layout"] not in layouts_seen:
            layouts_seen.append(row["layout"])
    reference = next((r["reference"] for r in members if r.get("reference")), None)
    comparator = next((r["comparator"] for r in members if r.get("comparator")), None)
    why = next((r["why"] for r in members if r.get("why")), None)
    table = {layout: {row["probe"]: {"status": row["status"], "cell": row["cell"], "verdict": row["verdict"],
                                     "test": row["test"]}
                      for row in members if row["layout"] == layout}
             for layout in layouts_seen}
    controls = {row["probe"]: row["control"] for row in members if row.get("control")}
    known: dict[str, str] = {}
    for row in members:
        if row.get("reason") and (row["layout"] not in known or "diagnosis:" in row["reason"]):
            known[row["layout"]] = row["reason"]  # the reason with the diagnosis, where one test has it
    return {"engine": engine, "model": model, "reference": reference, "comparator": comparator, "why": why,
            "probes": probes, "layouts": table, "known_engine_failures": known, "controls": controls}


def _group_markdown(group: dict) -> list[str]:
    out = [f"## {group['engine']} / {group['model']}: reference {group['reference'] or 'none'}, comparator "
           f"{group['comparator']} ({group['why']})", ""]
    out += [f"Control, not asserted: **{probe}**: {reason}." for probe, reason in group["controls"].items()]
    out += [""] if group["controls"] else []
    out.append("| layout | " + " | ".join(group["probes"]) + " |")
    out.append("|---" * (len(group["probes"]) + 1) + "|")
    for layout, cells in group["layouts"].items():
        name = f"{layout} (reference)" if layout == group["reference"] else layout
        out.append(f"| {name} | " + " | ".join(_escape(cells[p]["cell"]) if p in cells else ""
                                                for p in group["probes"]) + " |")
    if group["known_engine_failures"]:
        out += ["", "### Known engine failures", ""]
        out += [f"- **{layout}**: {reason}" for layout, reason in group["known_engine_failures"].items()]
    details = [(layout, probe, cell) for layout, cells in group["layouts"].items() for probe, cell in cells.items()
               if cell["verdict"] and cell["verdict"].get("explain") and cell["verdict"].get("outcome") in DIFFERENT]
    if details:
        out += ["", "### Where outputs differ", ""]
        for layout, probe, cell in details:
            out += [f"**{layout} / {probe}** ({cell['status']})", "", "```", cell["verdict"]["explain"], "```", ""]
    return [*out, ""]


def _group_line(group: dict) -> str:
    states = []
    for layout, cells in group["layouts"].items():
        if layout == group["reference"]:
            continue
        statuses = {c["status"] for c in cells.values()}
        for status in ("FAILED", "known engine failure", "skipped"):
            if status in statuses:
                states.append(f"{layout} {status}")
                break
        else:
            outcomes = {(c["verdict"] or {}).get("outcome") for c in cells.values()} & {"identical", "close"}
            states.append(f"{layout} {'identical' if outcomes == {'identical'} else 'equivalent'}")
    return (f"equivalence {group['engine']}/{group['model']} vs {group['reference']} ({group['comparator']}): "
            + (", ".join(states) or "no other layouts"))


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
