"""The lifecycle machinery on stand-in processes (the lifecycle is the thing under test here): fail fast on exit,
name the stalled stage, and leave no process behind, even one that ignores SIGTERM or escapes its group."""

import os
import sys
import time

import pytest

from llmconform.config.case import Case, EngineSettings, ModelSpec
from llmconform.config.layout import Layout
from llmconform.engines.base import Engine, Placement, Plan, Process, signature, stage
from llmconform.reports.report_dir import ServerDir
from llmconform.serving.launchers import local
from llmconform.serving.server import EngineStartError, Server, marked_pids


class StandIn(Engine):
    name = "stand-in"
    stages = (stage("loading", r"LOADING", 30), stage("serving", r"SERVING", 30))
    signatures = (signature(r"BOOM", "the stand-in exploded"),)


def make_server(tmp_path, script: str, stages=None) -> Server:
    engine = StandIn()
    if stages is not None:
        engine.stages = stages
    process = Process(node=0, role="api", argv=(sys.executable, "-c", script), env={})
    case = Case(engine=EngineSettings(name="stand-in", command=(sys.executable,), version="0", device="cpu"),
                model=ModelSpec(id="m", source="path:/m", path="/m", served_name="m"), layout=Layout())
    plan = Plan(case_id="stand-in-m-tp1", engine="stand-in", layout=Layout(), processes=(process,),
                api_host="127.0.0.1", port=9, served_model="m", health_route="/health", ready_routes=("/health",))
    return Server(case=case, plan=plan, engine=engine, placement=Placement(("localhost",), ((0,),)),
                  run_dir=ServerDir(tmp_path / "run"), launch=local.start)


def test_exit_during_startup_is_reported_with_stage_diagnosis_and_log(tmp_path):
    server = make_server(tmp_path, "import sys; print('LOADING', flush=True); print('BOOM'); sys.exit(3)")
    server.start()
    with pytest.raises(EngineStartError) as caught:
        server.wait_ready(timeout_s=300, poll_s=0.1)
    error = caught.value
    assert error.exited and error.stage == "loading"
    assert error.reason == "the api process on node 0 exited with code 3"
    assert error.diagnosis == "the stand-in exploded"
    assert "BOOM" in error.tail and error.log_path.endswith("node0-api.log")
    assert "startup stage 'loading'" in str(error)
    server.stop(grace_s=1)


def test_a_stalled_stage_fails_with_its_name(tmp_path):
    stages = (stage("loading", r"LOADING", 0.5),)
    server = make_server(tmp_path, "import time; print('LOADING', flush=True); time.sleep(60)", stages)
    server.start()
    with pytest.raises(EngineStartError) as caught:
        server.wait_ready(timeout_s=300, poll_s=0.1)
    assert not caught.value.exited and caught.value.stage == "loading"
    assert "no progress past this stage" in caught.value.reason
    server.stop(grace_s=1)
    assert marked_pids(server.marker) == []


GRANDCHILD_IGNORING_TERM = """
import os, signal, subprocess, sys, time
# a child that leaves the process group and ignores SIGTERM: only the env marker can find it
subprocess.Popen([sys.executable, "-c",
    "import os, signal, time; os.setsid(); signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("LOADING", flush=True)
time.sleep(600)
"""


def test_stop_kills_everything_the_server_started(tmp_path):
    server = make_server(tmp_path, GRANDCHILD_IGNORING_TERM)
    server.start()
    deadline = time.monotonic() + 30
    while len(marked_pids(server.marker)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(marked_pids(server.marker)) == 2
    server.stop(grace_s=1)
    assert marked_pids(server.marker) == []
    record = ServerDir(tmp_path / "run").record.read_text()
    assert '"exit_code": -9' in record


def test_a_died_server_is_reported_after_start(tmp_path):
    server = make_server(tmp_path, "import time; print('LOADING', flush=True); time.sleep(0.5); print('BOOM')")
    server.start()
    deadline = time.monotonic() + 30
    while server.running[0].popen.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    death = server.death()
    assert "exited with code 0" in death and "diagnosis: the stand-in exploded" in death
    server.stop(grace_s=1)


HEALTHY_ON_PORT = """
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class Health(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *args):
        pass
print("SERVING", flush=True)
HTTPServer(("127.0.0.1", int(sys.argv[1])), Health).serve_forever()
"""


def test_watchdog_declares_a_stopped_server_hung_once_and_kills_it(tmp_path):
    import dataclasses
    import os
    import signal
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = make_server(tmp_path, HEALTHY_ON_PORT)
    process = dataclasses.replace(server.plan.processes[0], argv=(*server.plan.processes[0].argv, str(port)))
    server.plan = dataclasses.replace(server.plan, port=port, processes=(process,))
    server.start()
    server.wait_ready(timeout_s=30, poll_s=0.1)
    server.watch(hang_timeout_s=1.5)
    time.sleep(2)
    assert server.death() is None, "a server that answers is not hung"
    os.kill(server.running[0].popen.pid, signal.SIGSTOP)  # alive, not answering
    deadline = time.monotonic() + 30
    while server.running[0].popen.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    death = server.death()
    assert death.startswith("stand-in-m-tp1: engine hung while serving: no answer to GET /health for ")
    assert "--hang-timeout 2); llmconform killed it" in death.splitlines()[0]
    server.stop(grace_s=1)
    assert marked_pids(server.marker) == []


ANSWERS_MODELS_NOT_HEALTH = """
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class Routes(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(503 if self.path == "/health" else 200)
        self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *args):
        pass
print("SERVING", flush=True)
HTTPServer(("127.0.0.1", int(sys.argv[1])), Routes).serve_forever()
"""


@pytest.mark.parametrize("live_route, death", [("/v1/models", None), ("/health", "GET /health answered 503")])
def test_the_per_test_liveness_probe_asks_the_engines_live_route(tmp_path, live_route, death):
    """SGLang's /health generates a token (>= 1 s): its live_route is /v1/models, and death() asks that."""
    import dataclasses
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = make_server(tmp_path, ANSWERS_MODELS_NOT_HEALTH)
    server.engine.live_route = live_route
    process = dataclasses.replace(server.plan.processes[0], argv=(*server.plan.processes[0].argv, str(port)))
    server.plan = dataclasses.replace(server.plan, port=port, processes=(process,), ready_routes=("/ready",))
    server.start()
    server.wait_ready(timeout_s=30, poll_s=0.1)
    found = server.death()
    server.stop(grace_s=1)
    assert found == death if death is None else death in found.splitlines()[0]


LEADER_AND_CHILD = """
import os, signal, subprocess, sys, time
log = sys.argv[1]
child = subprocess.Popen([sys.executable, "-c", f'''
import signal, sys, time
def term(*_):
    open({log!r}, "a").write("child got SIGTERM\\\\n"); sys.exit(0)
signal.signal(signal.SIGTERM, term)
print("CHILD UP", flush=True)
time.sleep(600)
'''])
def term(*_):  # like SGLang: the leader ends its own children, then itself
    time.sleep(0.3)
    open(log, "a").write("leader got SIGTERM\\n")
    child.kill(); child.wait(); sys.exit(0)
signal.signal(signal.SIGTERM, term)
print("LOADING", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("leader_first, expected", [
    (True, ["leader got SIGTERM"]),
    (False, ["child got SIGTERM", "leader got SIGTERM"]),
])
def test_stop_leader_first_leaves_the_children_to_the_engine(tmp_path, leader_first, expected):
    """An engine that stops its own children (SGLang) gets SIGTERM on its leader only; otherwise the whole group."""
    import dataclasses

    log = tmp_path / "signals.log"
    server = make_server(tmp_path, LEADER_AND_CHILD)
    server.engine.stop_leader_first = leader_first
    process = dataclasses.replace(server.plan.processes[0], argv=(*server.plan.processes[0].argv, str(log)))
    server.plan = dataclasses.replace(server.plan, processes=(process,))
    server.start()
    deadline = time.monotonic() + 30
    while len(marked_pids(server.marker)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # the child's handler is installed before it sleeps
    server.stop(grace_s=10)
    assert marked_pids(server.marker) == []
    assert log.read_text().splitlines() == expected


def test_an_engine_on_cpus_yields_to_the_load_generator(tmp_path):
    assert local.niceness_for("cpu") == local.CPU_ENGINE_NICENESS
    assert local.niceness_for("cuda") == 0
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    process = Process(node=0, role="api", argv=(sys.executable, "-c", "import time; time.sleep(30)"), env={})
    child = local.start(process, {}, str(tmp_path / "log"), niceness=local.niceness_for("cpu"))
    try:
        assert os.getpriority(os.PRIO_PROCESS, child.pid) == min(19, mine + local.CPU_ENGINE_NICENESS)
    finally:
        child.kill()
        child.wait()
