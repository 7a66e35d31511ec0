"""Local launcher: engine processes on this machine, each in its own session (process group), so that teardown can
signal the whole tree, and with a parent-death signal so that a killed pytest does not leave an engine behind."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess

from llmconform.engines.base import Process
from llmconform.errors import UserError
from llmconform.serving.launchers import Placed

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def popen(argv: list[str], env: dict[str, str], log_path: str, cwd: str | None = None) -> subprocess.Popen:
    """Start argv with `env` added to ours, output (stdout+stderr) appended to `log_path`."""
    full_env = {**os.environ, **env}
    with open(log_path, "ab") as log:
        try:
            return subprocess.Popen(argv, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=cwd, start_new_session=True,
                                    preexec_fn=_die_with_parent)
        except FileNotFoundError:
            raise UserError(f"engine executable not found: {argv[0]!r} (set `command` for this engine in the "
                            f"matrix, or install the engine)") from None


def start(process: Process, env: dict[str, str], log_path: str) -> subprocess.Popen:
    if process.nodes > 1:
        raise UserError("a launch across nodes needs the slurm launcher")
    return popen(list(process.argv), {**process.env, **env}, log_path)


class LocalLauncher:
    """Processes on this machine, on the devices and ports leased for the case."""

    name = "local"
    spans_nodes = False

    def problem(self) -> str | None:
        return None

    def place(self, case, hardware, worker, lease_here) -> Placed:
        placement, ports, leases = lease_here(case)
        return Placed(placement, ports, leases, start)
