"""ReportDir: the one owner of a run's folder layout. The names on disk are a format: `llmconform compare` reads
report dirs written by earlier llmconform versions, so each one is pinned here."""

import json
from pathlib import Path

import pytest

from llmconform.errors import UserError
from llmconform.reports.report_dir import ReportDir


def test_the_layout_on_disk(tmp_path):
    report = ReportDir(tmp_path)
    server = report.server("vllm-m-tp2")
    named = {
        report.results: "results.jsonl", report.run_identity: "run.json", report.junit: "junit.xml",
        report.interrupted: "INTERRUPTED",
        server.record: "servers/vllm-m-tp2/server.json", server.log(1, "worker"): "servers/vllm-m-tp2/node1-worker.log",
        server.plan_file("extra.yaml"): "servers/vllm-m-tp2/extra.yaml",
        report.equivalence_outputs("vllm-m-tp2"): "equivalence/vllm-m-tp2.json",
        report.accuracy_result("vllm-m-tp2"): "accuracy/vllm-m-tp2.json",
        report.perf_records("vllm-m-tp2", "chat", "c4"): "perf/vllm-m-tp2/chat-c4.records.jsonl",
        report.conformance_page: "conformance.md", report.conformance_json: "conformance.json",
        report.equivalence_page: "equivalence.md", report.equivalence_json: "equivalence.json",
        report.perf_page: "perf.md", report.perf_summary: "perf-summary.json", report.perf_curves: "perf-curves.png",
        report.perf_latency: "perf-latency.png", report.regression_page: "regression.md",
        report.regression_json: "regression.json", report.regression_html: "regression.html",
    }
    assert {path.relative_to(tmp_path).as_posix(): name for path, name in named.items()} == \
        {name: name for name in named.values()}
    assert str(report) == str(tmp_path)


def test_default_report_dirs_of_runs_started_in_the_same_second_differ(tmp_path):
    dirs = [ReportDir.create(None, tmp_path, "cpu-smoke-20261201-120000") for _ in range(3)]
    assert [d.path.name for d in dirs] == ["cpu-smoke-20261201-120000", "cpu-smoke-20261201-120000-2",
                                           "cpu-smoke-20261201-120000-3"]
    assert all(d.path.is_dir() for d in dirs)


def test_a_chosen_report_dir_holding_results_is_refused(tmp_path):
    chosen = tmp_path / "run"
    report = ReportDir.create(chosen, tmp_path, "x")  # new or empty: fine
    assert report.path == chosen.resolve() and chosen.is_dir()
    report.results.write_text("{}\n")
    with pytest.raises(UserError, match="already holds the results of an earlier run"):
        ReportDir.create(chosen, tmp_path, "x")


def test_reading_an_earlier_run_needs_its_folder_and_results(tmp_path):
    with pytest.raises(UserError, match="no such folder"):
        ReportDir.existing(tmp_path / "absent")
    with pytest.raises(UserError, match=r"has no results\.jsonl: not a report dir"):
        ReportDir.existing(tmp_path)
    ReportDir(tmp_path).results.write_text("")
    assert ReportDir.existing(tmp_path) == ReportDir(tmp_path)


def test_results_are_read_back_and_a_line_that_is_no_test_record_is_named(tmp_path):
    report = ReportDir(tmp_path)
    assert report.load_results() == []  # a run that has not finished a test yet
    record = {"nodeid": "suites/x.py::t", "when": "call", "outcome": "passed"}
    report.results.write_text(json.dumps(record) + "\n" + json.dumps({"nodeid": "y"}) + "\n")
    with pytest.raises(UserError, match=r"results.jsonl: record 2 is not a test record \(needs nodeid, when"):
        report.load_results()
    report.results.write_text(json.dumps(record) + "\n")
    assert report.load_results() == [record]


def test_server_records_and_saved_outputs_are_found_by_case(tmp_path):
    report = ReportDir(tmp_path)
    for case_id in ("vllm-m-tp2", "vllm-m-tp1"):
        report.server(case_id).create()
        report.server(case_id).record.write_text("{}")
        report.equivalence_outputs(case_id).parent.mkdir(exist_ok=True)
        report.equivalence_outputs(case_id).write_text("{}")
    report.server("vllm-m-pp2").create()  # a server folder without a record yet (still starting)
    assert report.server_records() == {"vllm-m-tp1": report.server("vllm-m-tp1").record,
                                       "vllm-m-tp2": report.server("vllm-m-tp2").record}
    assert list(report.equivalence_output_files()) == ["vllm-m-tp1", "vllm-m-tp2"]


def test_the_summary_names_only_the_reports_written_and_the_plots_that_exist(tmp_path):
    report = ReportDir(tmp_path)
    assert report.written_reports() == [] and list(report.perf_plots()) == []
    for path in (report.results, report.perf_page, report.perf_latency, report.regression_page):
        path.write_text("")
    assert report.written_reports() == ["perf.md", "perf-latency.png", "results.jsonl"]
    assert list(report.perf_plots()) == [report.perf_latency]


def test_an_interrupted_run_says_so_in_its_report(tmp_path):
    report = ReportDir(tmp_path)
    assert report.interrupted_because() is None
    report.mark_interrupted("interrupted by SIGTERM at 2026-12-01 12:00:00")
    assert report.interrupted_because() == "interrupted by SIGTERM at 2026-12-01 12:00:00"
    assert report.build()[0].startswith("INTERRUPTED run: interrupted by SIGTERM")


def test_a_moved_report_dir_still_finds_its_records_by_name(tmp_path):
    moved = ReportDir(tmp_path / "moved")
    recorded = Path("/elsewhere/perf/vllm-m-tp1/chat-c1.records.jsonl")
    assert moved.perf_records_file("vllm-m-tp1", recorded.name) == moved.perf_records("vllm-m-tp1", "chat", "c1")
