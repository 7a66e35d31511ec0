import json

from llmconform.reports import conformance_section
from llmconform.reports.report_dir import ReportDir

SERVER = {"id": "vllm-m-tp1", "engine": "vllm", "engine_version": "0.32.0", "layout": "tp1", "model": "m"}


def record(check: str, outcome: str, when="call", server=SERVER, **extra) -> dict:
    return {"nodeid": f"suites/test_openai_x.py::{check}[{server['id']}]", "when": when, "outcome": outcome,
            "properties": {"llm": server, "conformance": {"check": check, "spec": "Usage: total = a + b",
                                                          "engine_version": server["engine_version"]}},
            **extra}


RESULTS = [
    record("test_pass", "passed"),
    record("test_fail", "failed", error="E   AssertionError\ntest_fail (x):\n  usage.total_tokens 6 != 5"),
    record("test_known", "skipped", xfail_reason="vLLM sets an integer code"),
    record("test_fixed", "failed", error="[XPASS(strict)] vLLM sets an integer code"),
    record("test_skipped", "skipped", skip_reason="Skipped: no API key"),
    record("test_teardown", "passed"),
    record("test_teardown", "failed", when="teardown", error="engine died while serving"),
    {"nodeid": "suites/test_openai_x.py::test_pass[vllm-m-tp2]", "when": "setup", "outcome": "skipped",
     "properties": {}, "skip_reason": "vllm-m-tp2: needs 2 CPU cores, 1 here"},
    {"nodeid": "suites/test_other.py::test_perf[vllm-m-tp1]", "when": "call", "outcome": "passed", "properties": {}},
]


def test_cells_per_check_and_server():
    table = conformance_section.build_table(RESULTS)
    key = "vllm-m-tp1 @ 0.32.0"
    assert list(table.columns) == [key]
    outcomes = {name: (c.cells[key].outcome, c.cells[key].reason) for name, c in table.checks.items()}
    assert outcomes == {
        "test_pass": ("pass", ""),
        "test_fail": ("fail", "AssertionError / test_fail (x): / usage.total_tokens 6 != 5"),
        "test_known": ("xfail", "vLLM sets an integer code"),
        "test_fixed": ("xpass", "declared deviation did not happen: vLLM sets an integer code"),
        "test_skipped": ("skip", "no API key"),
        "test_teardown": ("fail", "engine died while serving"),
    }
    assert table.totals(key) == {"fail": 2, "xpass": 1, "xfail": 1, "skip": 1, "pass": 1}
    assert table.not_reached == [{"test": "suites/test_openai_x.py::test_pass[vllm-m-tp2]", "outcome": "skip",
                                  "reason": "vllm-m-tp2: needs 2 CPU cores, 1 here"}]


def test_one_column_per_server_and_version():
    newer = {**SERVER, "engine_version": "0.33.0"}
    table = conformance_section.build_table([record("test_a", "passed"), record("test_a", "failed", server=newer,
                                                                       error="x")])
    assert list(table.columns) == ["vllm-m-tp1 @ 0.32.0", "vllm-m-tp1 @ 0.33.0"]


def test_writes_markdown_and_json(tmp_path):
    lines = conformance_section.write_report(ReportDir(tmp_path), RESULTS)
    assert lines[0] == ("conformance vllm-m-tp1 @ 0.32.0: DOES NOT CONFORM: 1/5 pass, 2 FAIL, 1 XPASS (fixed "
                        "deviation), 1 known deviation(s), 1 skipped")
    assert lines[1] == "  failing: test_fail, test_fixed, test_teardown"
    assert "never reached a server" in lines[2]
    markdown = (tmp_path / "conformance.md").read_text()
    assert markdown.splitlines()[2] == "- **vllm-m-tp1 @ 0.32.0**: " + lines[0].split(": ", 1)[1]
    assert "| `test_known` | Usage | xfail [2] |" in markdown
    assert "2. vLLM sets an integer code" in markdown
    data = json.loads((tmp_path / "conformance.json").read_text())
    assert data["columns"][0]["engine_version"] == "0.32.0"
    assert data["checks"][0] == {"check": "test_pass", "spec": "Usage: total = a + b",
                                 "results": {"vllm-m-tp1 @ 0.32.0": {"outcome": "pass", "reason": ""}}}


def test_no_conformance_results_writes_nothing(tmp_path):
    assert conformance_section.write_report(ReportDir(tmp_path), [RESULTS[-1]]) == []
    assert not (tmp_path / "conformance.md").exists()


def test_a_clean_server_conforms():
    table = conformance_section.build_table([record("test_a", "passed"),
                                             record("test_b", "skipped", xfail_reason="known")])
    assert table.verdict("vllm-m-tp1 @ 0.32.0") == "conforms: 1/2 pass, 1 known deviation(s)"


def test_spec_column_keeps_braces_whole():
    assert conformance_section._short("ErrorResponse {error: {message, type}}: a 4xx carries it") == \
        "ErrorResponse {error: {message, type}}"
    assert conformance_section._short("Usage: total = a + b") == "Usage"
    assert conformance_section._short("x" * 100).endswith("...") and len(conformance_section._short("x" * 100)) == 80
