"""Faults a user or the machine causes, handled without a traceback: secrets kept out of records and plans, report
dirs never shared by two runs, attach targets that are absent or not OpenAI servers, sessions with no engine."""

import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from llmconform.redaction import REDACTED, redact_argv, redact_env
from llmconform.serving.preflight import PreflightError, check_attached
from tests.fakes.openai_server import MODEL, FakeHTTPServer, FakeOpenAI


# --- secrets -------------------------------------------------------------------------------------------------------
def test_secret_flags_and_env_are_masked_in_any_spelling():
    assert redact_argv(["vllm", "serve", "m", "--api-key", "k1", "--api_key=k2", "--port", "8"]) == \
        ["vllm", "serve", "m", "--api-key", REDACTED, f"--api_key={REDACTED}", "--port", "8"]
    assert redact_env({"VLLM_API_KEY": "k", "HF_TOKEN": "t", "NCCL_DEBUG": "INFO", "TOKENIZERS_PARALLELISM": "1"}) \
        == {"VLLM_API_KEY": REDACTED, "HF_TOKEN": REDACTED, "NCCL_DEBUG": "INFO", "TOKENIZERS_PARALLELISM": "1"}


def test_vllm_gets_the_key_through_its_environment_and_plans_never_show_it(plan_of):
    plan = plan_of("vllm", "tp1", args={"api-key": "s3cret-key"})
    process = plan.processes[0]
    assert "s3cret-key" not in " ".join(process.argv) and "--api-key" not in process.argv
    assert process.env["VLLM_API_KEY"] == "s3cret-key"
    assert "s3cret-key" not in str(plan.to_dict())


def test_sglang_key_stays_on_argv_but_is_redacted_in_the_plan(plan_of):
    plan = plan_of("sglang", "tp1", args={"api-key": "s3cret-key"})
    assert "s3cret-key" in plan.processes[0].argv  # no env var for it in SGLang's server_args.py
    assert "s3cret-key" not in str(plan.to_dict())


def test_docker_and_srun_command_lines_carry_secret_env_by_name_only():
    from llmconform.engines.base import Placement, Process
    from llmconform.serving.launchers import docker, slurm

    process = Process(node=0, role="api", argv=("vllm", "serve"), env={"VLLM_API_KEY": "s3cret", "A": "1"})
    run = docker.run_argv(process, "img", "m1", {})
    assert "VLLM_API_KEY" in run and "A=1" in run and not any("s3cret" in a for a in run)
    srun = slurm.srun_argv(process, Placement(("n1",), ((0,),)))
    assert "A=1" in srun and not any("s3cret" in a for a in srun)


# --- attach preflight ----------------------------------------------------------------------------------------------
class _HTMLPage(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"<html><body>It works!</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def serving():
    servers = []

    def serve(server):
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        host, port = server.server_address[:2]
        return f"http://{host}:{port}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def _free_url() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_preflight_names_what_is_wrong_with_the_attach_target(serving):
    with pytest.raises(PreflightError, match="cannot reach it"):
        check_attached(_free_url(), MODEL, None)
    html = serving(ThreadingHTTPServer(("127.0.0.1", 0), _HTMLPage))
    with pytest.raises(PreflightError, match=r"not an OpenAI-compatible server: .* text/html"):
        check_attached(html, MODEL, None)
    fake = serving(FakeHTTPServer(FakeOpenAI(api_key="k")))
    with pytest.raises(PreflightError, match="wants an API key"):
        check_attached(fake, MODEL, None)
    with pytest.raises(PreflightError, match=r"does not serve model 'other'.*serves: fake-model"):
        check_attached(fake, "other", "k")
    check_attached(fake, MODEL, "k")


def _pytest(*args, cwd):
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_attach_to_nothing_fails_the_session_once_with_exit_2(tmp_path):
    (tmp_path / "test_x.py").write_text("def test_a(llm):\n    pass\n\ndef test_b(llm):\n    pass\n")
    run = _pytest("--llm-url", _free_url(), "--llm-model", "m", "--report-dir", str(tmp_path / "r"), cwd=tmp_path)
    out = run.stdout + run.stderr
    assert run.returncode == 2, out
    assert out.count("cannot reach it") == 1 and "Traceback" not in out


def test_suites_without_an_engine_fail_with_exit_2_not_skip(tmp_path):
    (tmp_path / "test_x.py").write_text("def test_a(llm):\n    pass\n")
    run = _pytest(cwd=tmp_path)
    assert run.returncode == 2, run.stdout
    assert "need an engine server and none was given: pass --matrix FILE" in run.stdout + run.stderr
    listed = _pytest("--collect-only", "-q", cwd=tmp_path)  # listing the suites stays possible
    assert listed.returncode == 0 and "test_a[no-engine]" in listed.stdout


def test_collect_only_makes_no_report_dir(tmp_path):
    (tmp_path / "test_x.py").write_text("def test_a(llm):\n    pass\n")
    run = _pytest("--collect-only", "-q", "--engine", "vllm", "--model", "factory:qwen2-tiny", "--engine-device",
                  "cpu", "--engine-command", f"{sys.executable} -m vllm", cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert not (tmp_path / "reports").exists()
