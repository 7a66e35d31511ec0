"""A user's launcher and engine as a conftest would write them (tests register them directly, or copy this file's
source into a conftest that returns them from the pytest_llmconform_* hooks)."""

from llmconform.engines.vllm import VLLM
from llmconform.serving.launchers import Requirement


class ToyLauncher:
    """Runs each process through `toyrun` on a host of its own, from an image the case must name."""

    name = "toy"
    spans_nodes = True
    requires = (Requirement("image", "the toy launcher runs every engine from an image", "a toy image name"),)
    reached_from_other_hosts = True
    runs_command_here = False

    def problem(self):
        return "the toy launcher plans only"

    def place(self, case, hardware, worker, lease_here):
        raise NotImplementedError("the toy launcher plans only")

    def command_line(self, process, placement, case):
        return ["toyrun", f"--image={case.engine.image}", f"--host={placement.hosts[process.node]}", *process.argv]


class ToyEngine(VLLM):
    """vLLM's command line under its own name and command (a fork, say)."""

    name = "toyllm"
    default_command = ("toyllm", "serve")
