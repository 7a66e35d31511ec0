"""The docker launcher's command lines (labels, mounts, env, GPU renumbering) and the matrix rules for it; nothing
is started (the real containers are in tests/integration/test_docker_vllm_cpu.py)."""

import dataclasses
from pathlib import Path

import pytest
from planning_helpers import PORTS, make_case, placement

from llmconform import engines
from llmconform.config import matrix
from llmconform.engines.base import Process
from llmconform.errors import MatrixError
from llmconform.serving.launchers import docker
from llmconform.serving.resources import Hardware, Node
from llmconform.serving.server import MARKER_ENV

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "llmconform/vllm-cpu:0.32.0"


def _values(argv, flag):
    return [argv[i + 1] for i, item in enumerate(argv[:-1]) if item == flag]


def test_run_argv_for_a_cpu_process():
    process = Process(node=0, role="api", argv=("/venv/bin/vllm", "serve", "/models/m", "--port", "8000"),
                      env={"VLLM_CPU_KVCACHE_SPACE": "1"})
    argv = docker.run_argv(process, IMAGE, "abc123", {MARKER_ENV: "abc123"},
                           mounts=(docker.Mount("/models/m"), docker.Mount("/run/x", read_only=False)))
    assert argv[:12] == ["docker", "run", "--rm", "--init", "--name", "llmconform-abc123-0-api", "--label",
                         "llmconform.marker=abc123", "--network", "host", "--ipc", "host"]
    assert "--gpus" not in argv and "-d" not in argv and "--detach" not in argv  # attached: Popen = container
    assert _values(argv, "-v") == ["/models/m:/models/m:ro", "/run/x:/run/x:rw"]
    assert _values(argv, "-e") == ["VLLM_CPU_KVCACHE_SPACE=1", f"{MARKER_ENV}=abc123"]
    assert argv[-6:] == [IMAGE, "/venv/bin/vllm", "serve", "/models/m", "--port", "8000"]


def test_gpus_are_exposed_by_host_id_and_renumbered_inside():
    process = Process(node=0, role="api", argv=("vllm", "serve", "m"), env={"CUDA_VISIBLE_DEVICES": "4,5"})
    argv = docker.run_argv(process, "img", "m1", {MARKER_ENV: "m1"}, gpus=(4, 5))
    assert _values(argv, "--gpus") == ['"device=4,5"']
    assert "CUDA_VISIBLE_DEVICES=0,1" in _values(argv, "-e")
    assert "CUDA_VISIBLE_DEVICES=4,5" not in _values(argv, "-e")


@pytest.mark.parametrize("devices, visible, expected", [
    ((0, 1), None, (0, 1)),
    ((2, 3), "", (2, 3)),
    ((1, 2), "2,3,6,7", (3, 6)),  # our ids are positions in CUDA_VISIBLE_DEVICES; docker wants the host's
])
def test_host_gpus(devices, visible, expected):
    assert docker.host_gpus(devices, visible) == expected


def test_launch_of_a_planned_cuda_case_mounts_model_and_run_dir(tmp_path):
    case = dataclasses.replace(make_case("vllm", "tp2", source="factory:qwen2-tiny"), launcher="docker")
    case = dataclasses.replace(case, engine=dataclasses.replace(case.engine, image="vllm/vllm-openai:v0.26.0"))
    place = dataclasses.replace(placement(per_node=2), devices=((6, 7),))
    plan = engines.get("vllm").plan(case, place, PORTS, str(tmp_path))
    launch = docker.launch_of(case, (6, 7))
    argv = launch.argv_for(plan.processes[0], {MARKER_ENV: "srv1"}, str(tmp_path / "node0-api.log"))
    assert _values(argv, "--gpus") == ['"device=6,7"']
    assert "CUDA_VISIBLE_DEVICES=0,1" in _values(argv, "-e")
    assert _values(argv, "-v") == ["/models/qwen2-tiny:/models/qwen2-tiny:ro", f"{tmp_path}:{tmp_path}:rw"]
    image_at = argv.index("vllm/vllm-openai:v0.26.0")
    assert argv[image_at + 1:] == list(plan.processes[0].argv)


def test_cpu_case_of_the_docker_matrix_gets_no_gpus_and_a_hub_model_no_mount():
    case = matrix.load(ROOT / "matrices" / "cpu-docker.yaml").cases[0]
    assert case.launcher == "docker" and case.engine.image == IMAGE and case.engine.device == "cpu"
    launch = docker.launch_of(case, (0,))
    assert launch.gpus == () and launch.mounts == (docker.Mount(case.model.path),)
    hub = dataclasses.replace(case, model=dataclasses.replace(case.model, source="hf:org/m", path="org/m"))
    assert docker.launch_of(hub, (0,)).mounts == ()


def test_a_multi_node_process_is_refused(tmp_path):
    launch = docker.DockerLaunch(image="img", marker_env=MARKER_ENV)
    with pytest.raises(Exception, match="needs the slurm launcher"):
        launch.argv_for(Process(node=0, role="api", argv=("x",), env={}, nodes=2), {MARKER_ENV: "m"},
                        str(tmp_path / "log"))


def test_removal_needs_a_marker():
    with pytest.raises(ValueError, match="marker"):  # an empty one would match every llmconform container
        docker.remove_containers("")


def test_docker_matrix_needs_an_image():
    data = {"launcher": "docker", "engines": {"vllm": {"device": "cpu"}},
            "models": {"m": {"source": "factory:qwen2-tiny"}}, "layouts": ["tp1"]}
    with pytest.raises(MatrixError) as caught:
        matrix.parse(data, file="x.yaml")
    assert caught.value.path == "engines.vllm.image"
    assert str(caught.value).startswith("x.yaml: engines.vllm.image: the docker launcher needs")
    data["engines"]["vllm"]["image"] = IMAGE
    assert matrix.parse(data, file="x.yaml").cases[0].launcher == "docker"


def _docker_case(layout="tp1"):
    return dataclasses.replace(make_case("vllm", layout, device="cpu"), launcher="docker")


def test_docker_case_is_skipped_when_no_daemon_answers(monkeypatch, tmp_path):
    host = f"unix://{tmp_path}/no-daemon.sock"
    monkeypatch.setenv("DOCKER_HOST", host)
    hw = Hardware((Node("n0", (), (0, 1)),), "local")
    reason = hw.why_not(_docker_case())
    assert reason.startswith(f"docker daemon not reachable at {host}: ") and "No such file" in reason


def test_docker_runs_on_one_machine():
    hw = Hardware((Node("n0", (), (0, 1)), Node("n1", (), (0, 1))), "slurm")
    assert "the docker launcher runs on one machine" in hw.why_not(_docker_case("tp2@2nodes"))
