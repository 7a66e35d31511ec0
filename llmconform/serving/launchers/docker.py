"""Docker launcher: each engine process in a container of the engine's `image`, on this machine.

The container runs attached (`docker run`, not `-d`) through the local launcher, so that its Popen lives exactly as
long as the container, its output goes to the server's log, and the SIGTERM of a normal teardown reaches the engine
(`docker run` proxies signals; `--init` forwards them to the engine's process tree). A SIGKILLed client leaves its
container running, so teardown also removes the server's containers by their label. Only containers labelled with
one of our own server markers are ever removed, never others on the same daemon.

Host network and host IPC: the engine's ports are the ones the plan chose, and its ranks share memory as they would
outside a container (docs/engines.md#where-engines-run-slurm-and-docker). The model directory is mounted read-only at
the same path, and the server's run dir (plan files, logs) read-write, so the plan's argv works unchanged inside the
container.
"""

from __future__ import annotations

import functools
import os
import subprocess
from dataclasses import dataclass

from llmconform.engines.base import Process
from llmconform.errors import UserError
from llmconform.redaction import is_secret_env, split_secret_env
from llmconform.serving.launchers import Placed, Requirement

LABEL = "llmconform.marker"


@dataclass(frozen=True)
class Mount:
    path: str  # the same path on the host and inside the container
    read_only: bool = True


def container_name(marker: str, process: Process) -> str:
    return f"llmconform-{marker}-{process.node}-{process.role}"


def run_argv(process: Process, image: str, marker: str, env: dict[str, str], gpus: tuple[int, ...] = (),
             mounts: tuple[Mount, ...] = ()) -> list[str]:
    """The `docker run` command for one process. `gpus`: the host's GPU ids to expose (none for CPU engines);
    docker numbers the GPUs it exposes from 0, so CUDA_VISIBLE_DEVICES inside becomes 0..n-1."""
    argv = ["docker", "run", "--rm", "--init", "--name", container_name(marker, process), "--label",
            f"{LABEL}={marker}", "--network", "host", "--ipc", "host"]
    if gpus:
        # The quotes keep the comma inside the device list (the CLI splits --gpus on commas).
        argv += ["--gpus", f'"device={",".join(str(g) for g in gpus)}"']
    for mount in mounts:
        argv += ["-v", f"{mount.path}:{mount.path}:{'ro' if mount.read_only else 'rw'}"]
    full_env = {**process.env, **env}
    if gpus:
        full_env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(len(gpus)))
    for key, value in full_env.items():
        # A secret goes in by name only: docker takes its value from the client's environment, not from argv.
        argv += ["-e", key if is_secret_env(key) else f"{key}={value}"]
    return [*argv, image, *process.argv]


def host_gpus(devices: tuple[int, ...], visible: str | None) -> tuple[int, ...]:
    """Our GPU ids are positions in CUDA_VISIBLE_DEVICES when it is set (resources.parse_visible_devices); docker
    wants the host's ids."""
    if not visible:
        return tuple(devices)
    ids = [v.strip() for v in visible.split(",") if v.strip()]
    return tuple(int(ids[d]) for d in devices)


@dataclass(frozen=True)
class DockerLaunch:
    """The `launch` callable of a docker case (see Server.launch), with `cleanup(marker)` for teardown."""

    image: str
    marker_env: str  # the env key whose value names the server (server.MARKER_ENV)
    gpus: tuple[int, ...] = ()
    mounts: tuple[Mount, ...] = ()

    def __call__(self, process: Process, env: dict[str, str], log_path: str) -> subprocess.Popen:
        from llmconform.serving.launchers.local import popen

        # The client carries the marker too, so that teardown waits for it and finds it if it lingers.
        secret = split_secret_env(process.env)[1]
        return popen(self.argv_for(process, env, log_path), {**env, **secret}, log_path)

    def argv_for(self, process: Process, env: dict[str, str], log_path: str) -> list[str]:
        if process.nodes > 1:
            raise UserError("a launch across nodes needs the slurm launcher")
        run_dir = Mount(os.path.dirname(os.path.abspath(log_path)), read_only=False)  # plan files, engine output
        return run_argv(process, self.image, env[self.marker_env], env, self.gpus, (*self.mounts, run_dir))

    def cleanup(self, marker: str) -> None:
        remove_containers(marker)


def remove_containers(marker: str) -> list[str]:
    """Force-remove the containers of one server (its label); returns their names."""
    if not marker:
        raise ValueError("a server marker is needed: without it every llmconform container would match")
    from docker.errors import APIError

    client = _client()
    try:
        removed = []
        for name in _labelled(client, marker):
            try:
                client.api.remove_container(name, force=True)
            except APIError as error:
                if error.status_code not in (404, 409):  # gone already, or being removed (--rm): fine
                    raise
            removed.append(name)
        return removed
    finally:
        client.close()


def containers_of(marker: str) -> list[str]:
    """Names of the containers (running or not) that carry a server's label."""
    client = _client()
    try:
        return _labelled(client, marker)
    finally:
        client.close()


def _labelled(client, marker: str) -> list[str]:
    """Names of the containers with a server's label, from one list call: docker-py's `containers.list` inspects each
    container afterwards, which fails (404) when one is removed in between (`--rm`)."""
    listed = client.api.containers(all=True, filters={"label": f"{LABEL}={marker}"})
    return [entry["Names"][0].lstrip("/") for entry in listed]


def daemon_problem() -> str | None:
    """None if a docker daemon answers (at DOCKER_HOST, else the default socket), else why not."""
    where = os.environ.get("DOCKER_HOST") or "the default socket (unix:///var/run/docker.sock)"
    try:
        import docker
    except ImportError:
        return "the docker launcher needs the docker Python SDK: pip install 'llmconform[docker]'"
    try:
        client = docker.from_env(timeout=5)  # asks the daemon for its API version
    except docker.errors.DockerException as error:
        cause = str(error).removeprefix("Error while fetching server API version: ")
        return f"docker daemon not reachable at {where}: {cause[:160]}"
    client.close()
    return None


def _client(timeout: int = 60):
    try:
        import docker
    except ImportError:
        raise UserError("the docker launcher needs the docker Python SDK: pip install 'llmconform[docker]'") from None
    return docker.from_env(timeout=timeout)


class DockerLauncher:
    """Each process in a container of the engine's image, on this machine, on the devices and ports leased for it."""

    name = "docker"
    spans_nodes = False
    requires: tuple[Requirement, ...] = (
        Requirement("image", "the docker launcher needs the engine's container image",
                    "an image tag present on the docker daemon, e.g. llmconform/vllm-cpu:0.32.0 "
                    "(scripts/make-engine-image.sh)"),)
    reached_from_other_hosts = False  # host networking: the server listens on this machine's loopback
    runs_command_here = False  # the image's

    def problem(self) -> str | None:
        return _daemon_problem_at(os.environ.get("DOCKER_HOST"))

    def command_line(self, process, placement, case) -> None:
        return None  # the engine's env and argv as they are, in the container (the docker SDK starts it)

    def place(self, case, hardware, worker, lease_here) -> Placed:
        placement, ports, leases = lease_here(case)
        return Placed(placement, ports, leases, launch_of(case, placement.devices[0]))


@functools.cache
def _daemon_problem_at(docker_host: str | None) -> str | None:
    """Whether the daemon answers, asked once per DOCKER_HOST (every docker case asks)."""
    return daemon_problem()


def launch_of(case, devices: tuple[int, ...]) -> DockerLaunch:
    """The launch of `case` on these of this machine's devices (CUDA ordinals as the pool leased them)."""
    from llmconform.serving.server import MARKER_ENV  # imported here: a matrix's parse imports the launchers, no server

    # A hub id (`hf:`) is not a directory: the engine in the image fetches or finds it itself.
    mounts = () if case.model.kind == "hf" else (Mount(case.model.path),)
    gpus = () if case.engine.device == "cpu" else host_gpus(devices, os.environ.get("CUDA_VISIBLE_DEVICES"))
    return DockerLaunch(image=case.engine.image, marker_env=MARKER_ENV, gpus=gpus, mounts=mounts)
