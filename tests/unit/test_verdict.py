"""The verdict at the end of a run: one aligned line per case from the results and the server records, then where
the reports are; and the live lines of llmconform.progress as a log (not a terminal) receives them."""

import io
import json

from rich.console import Console

from llmconform import progress
from llmconform.reports import terminal_verdict
from llmconform.reports.report_dir import ReportDir


def server(layout):
    return {"id": f"vllm-m-{layout}", "engine": "vllm", "engine_version": "0.32.0", "layout": layout, "model": "m"}


def conformance(layout, check, outcome, **extra):
    return {"nodeid": f"suites/test_openai_x.py::{check}[vllm-m-{layout}]", "when": "call", "outcome": outcome,
            "properties": {"llm": server(layout), "conformance": {"check": check, "spec": "S"}}, **extra}


def equivalence(layout, outcome, verdict_outcome=None, role=None):
    data = {"engine": "vllm", "model": "m", "layout": layout, "probe": "p"}
    if verdict_outcome:
        data["verdict"] = {"outcome": verdict_outcome}
    if role:
        data["role"] = role
    return {"nodeid": f"suites/test_equivalence.py::t[vllm-m-{layout}]", "when": "call", "outcome": outcome,
            "properties": {"llm": server(layout), "equivalence": data}}


def floors(layout, *statuses):
    return {"nodeid": f"suites/test_throughput.py::test_floors[vllm-m-{layout}]", "when": "call",
            "outcome": "passed", "properties": {"llm": server(layout), "floors": [
                {"floor": "f", "status": s, "detail": "", "workload": "w", "point": "c1"} for s in statuses]}}


def accuracy(layout, correct, outcome):
    return {"nodeid": f"suites/test_accuracy.py::test_accuracy_gate[vllm-m-{layout}]", "when": "call",
            "outcome": outcome, "properties": {"llm": server(layout), "accuracy": {
                "accuracy": correct / 167, "correct": correct, "problems": 167}}}


def server_record(tmp_path, layout, **fields):
    server_dir = ReportDir(tmp_path).server(f"vllm-m-{layout}")
    server_dir.create()
    server_dir.record.write_text(json.dumps({"case": f"vllm-m-{layout}", **fields}))


RESULTS = [
    conformance("tp1", "test_a", "passed"), conformance("tp1", "test_b", "skipped", xfail_reason="declared"),
    conformance("tp2", "test_a", "failed", error="E boom"),
    equivalence("tp1", "passed", role="reference"), equivalence("tp2", "passed", "close"),
    equivalence("tp2", "passed", "identical"), equivalence("pp2", "failed", "diverged"),
    floors("tp1", "pass", "pass"), floors("tp2", "pass", "fail"), floors("pp2", "skip"),
    accuracy("tp1", 167, "passed"), accuracy("tp2", 140, "failed"),
]


def test_one_aligned_line_per_case(tmp_path):
    server_record(tmp_path, "tp1", ready_s=67.4)
    server_record(tmp_path, "pp2", stage="load-weights", error="failed")
    lines = terminal_verdict.per_case(ReportDir(tmp_path), RESULTS)
    assert lines[0] == "verdict per case:"
    rows = {line.split()[0]: line for line in lines[1:]}
    cells = {case: [c.strip() for c in line.split("  ") if c.strip()][1:] for case, line in rows.items()}
    assert cells["vllm-m-tp1"] == ["conformance 1/2 (1 known)", "equivalence: reference", "accuracy 100.0% (167/167)",
                                   "floors 2/2 pass", "started in 67 s"]
    assert cells["vllm-m-tp2"] == ["conformance 0/1 (1 FAIL)", "equivalence close", "accuracy 83.8% (140/167) FAIL",
                                   "floors 1/2 pass, 1 FAIL"]
    assert cells["vllm-m-pp2"] == ["equivalence DIVERGED", "floors not checked (1 skipped)",
                                   "START FAILED at stage load-weights"]
    starts = {line.index("equivalence") for line in lines[1:]}
    assert len(starts) == 1  # the columns line up


def test_the_report_lists_the_verdict_first_and_the_report_files_last(tmp_path):
    report = ReportDir(tmp_path)
    report.results.write_text("".join(json.dumps(r) + "\n" for r in RESULTS))
    report.junit.write_text("<testsuites/>")
    lines = report.build()
    assert lines[0] == "verdict per case:"
    assert lines[-1] == f"reports in {tmp_path}: conformance.md, equivalence.md, perf.md, junit.xml, results.jsonl"


def test_progress_in_a_log_is_plain_lines():
    out = io.StringIO()
    shown = progress.Progress(Console(file=out, width=80, soft_wrap=True), plain_every_s=0)
    shown.mid_line = True
    shown.stage("vllm-m-tp1", "load-weights", 12.3)
    load = shown.load("vllm-m-tp1 w")
    load.update("c8", 80, 40, 1200, 2.0)
    load.finished("c8", "80/80 ok")
    assert out.getvalue().splitlines() == ["", "[server] vllm-m-tp1: load-weights (at 12 s)",
                                           "[load] vllm-m-tp1 w c8: 40/80 requests, 600 tok/s, 2 s",
                                           "[load] vllm-m-tp1 w c8: 80/80 ok"]
    quiet = progress.Progress()
    quiet.stage("x", "y", 1.0)
    quiet.load("x").update("c1", 1, 1, 1, 1.0)  # nothing to write to, nothing raised
