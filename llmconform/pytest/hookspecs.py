"""Hooks through which a user's conftest.py (or plugin) extends llmconform without editing it.

    # conftest.py of the directory you run pytest (or llmconform plan / run) in
    from llmconform.engines.vllm import VLLM

    class MyVLLMFork(VLLM):
        name = "myvllm"
        default_command = ("myvllm", "serve")

    def pytest_llmconform_engines():
        return [MyVLLMFork()]

The plugin collects the answers in pytest_configure, before it reads any matrix, so the matrices of that run may
name the new engines and launchers. `llmconform plan` and `llmconform run` configure pytest in the current directory
to the same end, so they see the same conftest.py files and installed plugins as `pytest` there.
"""

import pytest


@pytest.hookspec
def pytest_llmconform_engines() -> list:
    """Engines to add: instances of llmconform.engines.base.Engine subclasses, each under its `name`."""


@pytest.hookspec
def pytest_llmconform_launchers() -> list:
    """Launchers to add: objects meeting llmconform.serving.launchers.Launcher, each under its `name`."""


@pytest.hookspec
def pytest_llmconform_deviations() -> list:
    """Deviation files to add (paths; relative ones from the rootdir) in the format of the packaged
    llmconform/engines/deviations.yaml: API deviations and known failures of the user's engines or builds, in force
    beside the packaged ones."""
