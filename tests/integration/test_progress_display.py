"""What a user sees while the suites run, on a real terminal (a pseudo-terminal), in a CI log (a pipe) and under -q:
the servers' startup stages, the load points' progress and numbers, and the verdict at the end. The engine is the
stand-in tests/fakes/vllm_serve.py (vLLM's startup log lines, then the fake OpenAI server): the display is the thing
under test, not the engine."""

import re
import subprocess
import sys

import pexpect
import pytest
from paths import ROOT, SUITES, pytest_command

CASE = "vllm-fake-model-tp1"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    path = tmp_path_factory.mktemp("progress") / "fake.yaml"
    path.write_text(f"""
engines:
  vllm: {{command: [{sys.executable}, {ROOT / 'tests/fakes/vllm_serve.py'}], device: cpu, startup_timeout: 120}}
models:
  fake-model: {{source: factory:qwen2-tiny}}
layouts: [tp1]
workloads:
  - {{name: short, input_tokens: 16, output_tokens: 8, concurrency: [1, 4], requests: 24, warmup: 2}}
floors:
  - output_tok_s >= 1
""")
    return path


def args(matrix, report_dir, *extra):
    return pytest_command(str(SUITES / "test_throughput.py"), "--matrix", str(matrix), "--report-dir",
                          str(report_dir), "-o", "addopts=--strict-markers", *extra)


def test_on_a_terminal_stages_bars_and_numbers_show_live(matrix, tmp_path):
    command = args(matrix, tmp_path / "report")
    child = pexpect.spawn(command[0], command[1:], cwd=str(ROOT), dimensions=(50, 200), timeout=300,
                          encoding="utf-8", codec_errors="replace")
    child.expect(pexpect.EOF)
    child.close()
    raw = child.before
    text = ANSI.sub("", raw)
    assert child.exitstatus == 0, text
    stages = [line.strip() for line in text.splitlines() if line.strip().startswith(f"[server] {CASE}:")]
    assert [s.split(": ", 1)[1].split(" (at")[0] for s in stages[:-1]] == [
        "starting vllm (1 process(es))", "api-server", "load-weights", "weights-loaded", "http-up"], stages
    assert re.fullmatch(rf"\[server\] {CASE}: ready after \d+ s", stages[-1]), stages
    assert raw != text  # a terminal gets escape codes (the bar redraws itself) ...
    assert re.search(rf"\[load\] {CASE} short c4 .*24/24 requests, [\d,]+ tok/s", text), text  # ... and the bar
    finished = re.findall(rf"\[load\] {CASE} short (c\d): 24/24 ok, [\d,]+ out tok/s", text)
    assert finished == ["c1", "c4"], text
    assert re.search(rf"{CASE} +floors 2/2 pass", text), text  # the verdict at the end


def test_in_a_log_plain_lines_and_under_q_none(matrix, tmp_path):
    logged = subprocess.run(args(matrix, tmp_path / "log"), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert logged.returncode == 0, logged.stdout + logged.stderr
    assert not ANSI.search(logged.stdout) and "requests, " not in logged.stdout  # no bar, no escape codes
    assert f"[server] {CASE}: ready after" in logged.stdout
    assert f"[load] {CASE} short c1: 24/24 ok" in logged.stdout
    quiet = subprocess.run(args(matrix, tmp_path / "quiet", "-q"), cwd=ROOT, capture_output=True, text=True,
                           timeout=300)
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    assert "[server]" not in quiet.stdout and "[load]" not in quiet.stdout
    assert re.search(rf"{CASE} +floors 2/2 pass", quiet.stdout), quiet.stdout
