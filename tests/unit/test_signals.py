"""After a first Ctrl-C the run only finishes: later SIGINTs are ignored up to the process's very exit."""

import subprocess
import sys

# The run after its first Ctrl-C, with SIGINT arriving without pause until it has exited (a shell loop, as a user
# holding Ctrl-C would send them): every one must be ignored, including those that land while the interpreter exits.
FINISHING_RUN = """
import os, subprocess, sys, time
from llmconform.serving.server import ignore_signals, ignore_signals_through_exit
ignore_signals("finishing the interrupted run")
{through_exit}
subprocess.Popen(["sh", "-c", f"while kill -INT {{os.getpid()}} 2>/dev/null; do :; done"],
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # it ends when this process is reaped
time.sleep(0.2)
"""


def finishing_run(through_exit: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", FINISHING_RUN.format(through_exit=through_exit)],
                          capture_output=True, text=True, timeout=60)


def test_sigint_while_the_interpreter_exits_is_ignored():
    result = finishing_run("ignore_signals_through_exit()")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "SIGINT ignored while finishing the interrupted run" in result.stderr


def test_without_it_python_restores_the_default_and_dies_of_the_signal():
    """The reason for ignore_signals_through_exit: a Python-level handler is reset to SIG_DFL at exit."""
    assert finishing_run("").returncode == -2
