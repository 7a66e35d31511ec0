"""A real vLLM-CPU server in a container (launcher: docker) through the framework: start, serve, stop, and leave no
container or process behind; a container that dies at startup is reported at once with its stage.

Needs a reachable docker daemon and the image of matrices/cpu-docker.yaml; scripts/run-tests.sh starts an isolated
daemon (scripts/docker-ci-up.sh) and makes the image (scripts/make-engine-image.sh) when run as root."""

import dataclasses
import json
import os
import signal
import time
import uuid
from pathlib import Path

import httpx
import pytest
from paths import ROOT

from llmconform.config import matrix
from llmconform.engines.base import Process
from llmconform.reports.report_dir import ReportDir
from llmconform.serving import resources
from llmconform.serving.launchers import docker
from llmconform.serving.pool import ServerPool
from llmconform.serving.resources import _bindable
from llmconform.serving.server import MARKER_ENV, EngineStartError, marked_pids

pytestmark = [pytest.mark.engine, pytest.mark.vllm, pytest.mark.slow]

CPU_DOCKER = ROOT / "matrices" / "cpu-docker.yaml"


@pytest.fixture(scope="module")
def docker_case():
    case = matrix.load(CPU_DOCKER).cases[0]
    reason = resources.detect().why_not(case)  # what a suite run would skip with: no daemon reachable
    if reason:
        pytest.skip(reason)
    import docker as sdk

    client = sdk.from_env()
    try:
        client.images.get(case.engine.image)
    except sdk.errors.ImageNotFound:
        pytest.skip(f"image {case.engine.image} not on the docker daemon (scripts/make-engine-image.sh makes it)")
    finally:
        client.close()
    return case


def _in_container(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            return "docker" in f.read()
    except OSError:
        return False


def test_start_serve_stop_in_container(docker_case, tmp_path, record_property):
    pool = ServerPool(ReportDir(tmp_path / "report"), resources.detect())
    server = pool.start(docker_case)
    try:
        assert docker.containers_of(server.marker) == [f"llmconform-{server.marker}-0-api"]
        reply = httpx.post(f"{server.base_url}/v1/completions", timeout=60, json={
            "model": server.model, "prompt": "The quick brown fox", "max_tokens": 8, "temperature": 0}).json()
        assert reply["usage"]["completion_tokens"] == 8
        assert server.version == "0.32.0"
        pids = marked_pids(server.marker)  # the `docker run` client here, the engine's processes in the container
        assert any(_in_container(p) for p in pids), "the engine runs in the container"
        record_property("startup", {"ready_s": round(server.ready_s, 1)})
    finally:
        started = time.monotonic()
        pool.stop_all()
        stop_s = time.monotonic() - started
    assert docker.containers_of(server.marker) == []
    assert marked_pids(server.marker) == []
    assert all(r.popen.poll() is not None for r in server.running)
    assert _bindable(server.plan.port)
    assert stop_s < 25, f"SIGTERM reaches the engine through `docker run` (stopped in {stop_s:.1f} s, grace 30 s)"
    record_property("stop_s", round(stop_s, 1))


def test_startup_failure_in_container_is_reported_at_once_with_stage(docker_case, tmp_path):
    case = dataclasses.replace(docker_case, args={**docker_case.args, "dtype": "float33"})
    pool = ServerPool(ReportDir(tmp_path / "report"), resources.detect())
    started = time.monotonic()
    with pytest.raises(EngineStartError) as caught:
        pool.start(case)
    elapsed = time.monotonic() - started
    error = caught.value
    assert error.exited, "the failure must come from the container's exit, not from waiting out the timeout"
    assert error.stage == "starting"
    assert "vLLM rejected a command-line argument" in error.diagnosis
    assert elapsed < 90, f"reported after {elapsed:.0f} s"
    assert "float33" in Path(error.log_path).read_text(), "the container's output reaches the server's log"
    marker = json.loads((tmp_path / "report" / "servers" / case.id / "server.json").read_text())["marker"]
    assert docker.containers_of(marker) == [] and marked_pids(marker) == []


def test_killed_client_container_is_removed_by_label_and_only_ours(docker_case, tmp_path):
    """A SIGKILLed `docker run` client leaves its container running; cleanup removes it by its label, and never a
    container of another server on the same daemon."""
    python = str(ROOT / ".engines" / "vllm-cpu" / "bin" / "python")
    sleeper = Process(node=0, role="api", argv=(python, "-c", "import time; time.sleep(600)"), env={})
    launch = docker.DockerLaunch(image=docker_case.engine.image, marker_env=MARKER_ENV)
    ours, other = uuid.uuid4().hex[:12], uuid.uuid4().hex[:12]
    clients = {m: launch(sleeper, {MARKER_ENV: m}, str(tmp_path / f"{m}.log")) for m in (ours, other)}
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(docker.containers_of(m) for m in (ours, other)):
            time.sleep(0.2)
        os.killpg(clients[ours].pid, signal.SIGKILL)
        clients[ours].wait(timeout=10)
        time.sleep(1)
        assert docker.containers_of(ours), "the container outlives its killed client"
        launch.cleanup(ours)
        assert docker.containers_of(ours) == []
        assert docker.containers_of(other), "another server's container is left alone"
    finally:
        for marker, client in clients.items():
            docker.remove_containers(marker)
            client.wait(timeout=30)
