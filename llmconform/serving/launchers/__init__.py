"""Where engine processes run, behind one protocol: `local`, `docker` and `slurm` here, others registered by a
user's conftest through the `pytest_llmconform_launchers` hook. (A server started elsewhere is attached to with
--llm-url.)"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from llmconform.registry import Registry

if TYPE_CHECKING:
    from llmconform.config.case import Case
    from llmconform.engines.base import Placement, Ports, Process
    from llmconform.serving.resources import Hardware, Lease

# start(process, env, log_path) -> the process (or the client that stands for it, such as `docker run` or `srun`)
Start = Callable[["Process", dict, str], subprocess.Popen]


@dataclass
class Placed:
    """A case's server placed: where it runs, its ports, the leases to release after it, and how to start it."""

    placement: Placement
    ports: Ports
    leases: list[Lease]
    start: Start


@dataclass(frozen=True)
class Requirement:
    """An engine setting that every case of a launcher must have (the matrix's `engines.NAME.<setting>`)."""

    setting: str  # a field of llmconform.config.case.EngineSettings, e.g. "image"
    why: str  # the matrix error's words
    allowed: str  # what a value looks like


class LeaseHere(Protocol):
    def __call__(self, case: Case) -> tuple[Placement, Ports, list[Lease]]:
        """Devices and ports on this machine, leased for `case` (released with the server)."""


class Launcher(Protocol):
    """What the matrix, the planner and `llmconform plan` ask of a launcher; none of them compares launcher names."""

    name: str
    spans_nodes: bool  # whether one server may span several nodes (else it runs on one machine)
    requires: tuple[Requirement, ...]  # engine settings every case must set (checked when the matrix is read)
    reached_from_other_hosts: bool  # servers listen on every interface (the client runs on another host)
    runs_command_here: bool  # the engine's command is this machine's own (checked before a run, its runtime recorded)

    def problem(self) -> str | None:
        """Why this launcher cannot start anything here (e.g. the docker daemon does not answer), else None."""

    def place(self, case: Case, hardware: Hardware, worker: int, lease_here: LeaseHere) -> Placed:
        """Where `case`'s processes run and how they start (xdist `worker` numbers the session's workers)."""

    def command_line(self, process: Process, placement: Placement, case: Case) -> list[str] | None:
        """The command this launcher runs for `process` where it wraps the engine's env and argv (`srun ... env K=V
        vllm serve ...`), which `llmconform plan` prints in their place; None where it runs them as they are."""


# A launcher lacking a part of the protocol is refused when registered, not when a run first asks for that part.
PROTOCOL = tuple(member for member in (*Launcher.__annotations__, *vars(Launcher))
                 if not member.startswith("_") and member != "name")
LAUNCHERS: Registry[Launcher] = Registry("launcher", members=PROTOCOL)
register = LAUNCHERS.add  # the `pytest_llmconform_launchers` hook's launchers
get = LAUNCHERS.named


def _register_builtin() -> None:
    from llmconform.serving.launchers import docker, local, slurm

    for launcher in (local.LocalLauncher(), docker.DockerLauncher(), slurm.SlurmLauncher()):
        register(launcher)


_register_builtin()
