"""SLURM launcher: one `srun --overlap` step per node inside the user's allocation (or one MPI step across nodes
for TensorRT-LLM), optionally in a container through pyxis (`--container-image`).

`--overlap` lets the engine steps share the allocation with the test client and with each other; without it a second
step waits for the first to end (docs/engines.md#where-engines-run-slurm-and-docker). Environment goes through `env K=V
...` so that it reaches the engine unchanged inside a container too.
"""

from __future__ import annotations

import os
import subprocess

from llmconform.engines.base import Placement, Ports, Process
from llmconform.redaction import split_secret_env
from llmconform.serving import resources
from llmconform.serving.launchers import Placed, Requirement


def srun_argv(process: Process, placement: Placement, image: str | None = None,
              mounts: tuple[str, ...] = ()) -> list[str]:
    hosts = placement.hosts[process.node: process.node + process.nodes]
    argv = ["srun", "--overlap", f"--nodes={process.nodes}", f"--nodelist={','.join(hosts)}"]
    if process.tasks_per_node > 1:
        argv += ["--mpi=pmix", f"--ntasks-per-node={process.tasks_per_node}",
                 f"--ntasks={process.nodes * process.tasks_per_node}"]
    else:
        argv += ["--ntasks=1"]
    argv += [f"--job-name=llmconform-{process.role}-{process.node}", "--kill-on-bad-exit=1"]
    if image:
        argv.append(f"--container-image={image}")
        if mounts:
            argv.append(f"--container-mounts={','.join(mounts)}")
    plain, _ = split_secret_env(process.env)  # secrets reach the step through srun's environment (--export=ALL)
    env = [f"{k}={v}" for k, v in sorted(plain.items())]
    return [*argv, "env", *env, *process.argv] if env else [*argv, *process.argv]


def start(process: Process, placement: Placement, env: dict[str, str], log_path: str,
          image: str | None = None) -> subprocess.Popen:
    """Run the step in the background; the srun client runs here, its tasks on the nodes. Signalling the srun
    client (its own session) forwards the signal to the step's tasks."""
    from llmconform.serving.launchers.local import popen

    argv = srun_argv(Process(node=process.node, role=process.role, argv=process.argv,
                             env={**process.env, **env}, nodes=process.nodes,
                             tasks_per_node=process.tasks_per_node), placement, image)
    return popen(argv, {**env, **split_secret_env(process.env)[1]}, log_path)


def port_base(job_id: str | None, worker: int = 0) -> int:
    """Ports derived from the job id, so that concurrent jobs on shared nodes do not collide
    (docs/engines.md#multi-node-failures-and-their-log-signatures); each xdist worker gets its own block."""
    return 20000 + (int(job_id or 0) % 1000) * 20 + worker * 10


class SlurmLauncher:
    """One step per node of the user's allocation (`srun --overlap`); the allocation, not a lease, owns the GPUs."""

    name = "slurm"
    spans_nodes = True
    requires: tuple[Requirement, ...] = ()  # an image is optional (pyxis)
    reached_from_other_hosts = True  # the engine runs on the allocation's nodes, the client here
    runs_command_here = False  # the nodes' (or the image's)

    def problem(self) -> str | None:
        return None

    def command_line(self, process, placement, case) -> list[str]:
        return srun_argv(process, placement, case.engine.image)

    def place(self, case, hardware, worker, lease_here) -> Placed:
        layout = case.layout
        nodes = hardware.nodes[: layout.nodes]
        pools = [n.cpus if case.engine.device == "cpu" else n.gpus for n in nodes]
        addresses = [resources.node_address(n.name) for n in nodes]
        known = tuple(a for a in addresses if a)
        placement = Placement(hosts=tuple(n.name for n in nodes),
                              devices=tuple(p[: layout.gpus_per_node] for p in pools), bind_host="0.0.0.0",
                              addresses=known if len(known) == len(addresses) else ())
        ports = Ports.from_base(port_base(os.environ.get("SLURM_JOB_ID"), worker))

        def launch(process, env, log_path):
            return start(process, placement, env, log_path, case.engine.image)

        return Placed(placement, ports, [], launch)
