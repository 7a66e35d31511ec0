"""What every engine module provides, and the pure data a launch plan is made of."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import ClassVar

from llmconform.config.case import Case
from llmconform.config.layout import Layout
from llmconform.errors import LayoutError, UserError
from llmconform.redaction import redact_argv, redact_env


@dataclass(frozen=True)
class Ports:
    """Ports of one launch. `http` serves the API; the others are the engines' rendezvous ports."""

    http: int
    master: int  # vLLM --master-port (torch.distributed across nodes)
    dp_rpc: int  # vLLM --data-parallel-rpc-port
    dist_init: int  # SGLang --dist-init-addr HOST:PORT (SGLang also uses the next few ports and +13)

    @classmethod
    def from_base(cls, base: int) -> Ports:
        """A block of ports from one base; `resources` picks bases that do not collide."""
        return cls(http=base, master=base + 1, dp_rpc=base + 2, dist_init=base + 3)


@dataclass(frozen=True)
class Placement:
    """Where a launch runs: one entry per node (hostname, the GPU ids or CPU cores given to it)."""

    hosts: tuple[str, ...]
    devices: tuple[tuple[int, ...], ...]  # GPU ids (cuda) or CPU core ids (cpu) per node
    bind_host: str = "127.0.0.1"  # what the API server binds; launchers on other nodes need 0.0.0.0
    addresses: tuple[str, ...] = ()  # each node's IP where known (names may not resolve on every side)

    @property
    def head(self) -> str:
        """How other nodes and the client reach node 0: its address if known, else its name."""
        return self.addresses[0] if self.addresses else self.hosts[0]

    def address(self, node: int) -> str | None:
        return self.addresses[node] if self.addresses else None


@dataclass(frozen=True)
class Process:
    """One command of a launch. `tasks_per_node` > 1 means one MPI launch across `nodes` (srun --mpi=pmix)."""

    node: int  # index into Placement.hosts (the first node of an MPI launch)
    role: str  # "api" serves HTTP; "worker" is a headless rank of the same server
    argv: tuple[str, ...]
    env: dict[str, str]
    nodes: int = 1
    tasks_per_node: int = 1


@dataclass(frozen=True)
class Plan:
    case_id: str
    engine: str
    layout: Layout
    processes: tuple[Process, ...]
    api_host: str
    port: int
    served_model: str  # the model id the server lists in /v1/models and expects in requests
    health_route: str
    ready_routes: tuple[str, ...]
    files: dict[str, str] = field(default_factory=dict)  # files (relative to the run dir) the launcher writes first
    notes: tuple[str, ...] = ()

    @property
    def base_url(self) -> str:
        return f"http://{self.api_host}:{self.port}"

    def to_dict(self) -> dict:
        return {
            "case": self.case_id,
            "engine": self.engine,
            "layout": str(self.layout),
            "gpus": self.layout.gpus,
            "nodes": self.layout.nodes,
            "base_url": self.base_url,
            "served_model": self.served_model,
            "health_route": self.health_route,
            "ready_routes": list(self.ready_routes),
            "processes": [
                {"node": p.node, "role": p.role, "argv": redact_argv(p.argv), "env": redact_env(p.env),
                 "nodes": p.nodes, "tasks_per_node": p.tasks_per_node}
                for p in self.processes
            ],
            "files": self.files,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class Stage:
    """A startup stage, entered when `marker` appears in the log; `budget_s` bounds the time spent in it."""

    name: str
    marker: re.Pattern
    budget_s: float


@dataclass(frozen=True)
class Signature:
    """A known failure: a log pattern and the one-line diagnosis it means."""

    pattern: re.Pattern
    diagnosis: str


def stage(name: str, marker: str, budget_s: float) -> Stage:
    return Stage(name, re.compile(marker), budget_s)


def signature(pattern: str, diagnosis: str) -> Signature:
    return Signature(re.compile(pattern), diagnosis)


# Failures every torch.distributed engine can hit (docs/engines.md#multi-node-failures-and-their-log-signatures).
COMMON_SIGNATURES = (
    signature(r"CUDA out of memory|torch\.OutOfMemoryError|OutOfMemoryError",
              "GPU out of memory: lower the memory fraction, max model length or batch size, or use more GPUs"),
    signature(r"Address already in use|Errno 98|Port is already in use",
              "a port is already in use: another server or a leftover process holds it"),
    signature(r"Using the loopback address as fallback|Gloo connectFullMesh failed",
              "Gloo bound to loopback on a multi-NIC host: set GLOO_SOCKET_IFNAME and NCCL_SOCKET_IFNAME on every "
              "node"),
    signature(r"client socket has timed out|DistStoreError|wait timeout after \d+ms",
              "torch.distributed rendezvous timed out: a node cannot reach the master address/port, or a node "
              "rank/count is wrong"),
    signature(r"Error while creating shared memory segment|/dev/shm.*(No space|too small)",
              "/dev/shm too small (in a container: use --ipc=host or a larger --shm-size)"),
    signature(r"ncclSystemError|ncclInternalError|NCCL error",
              "NCCL failed: check the interconnect, NCCL_SOCKET_IFNAME and (in containers) --ipc=host"),
    signature(r"No such file or directory: '[^']*config\.json'|does not appear to have a file named config\.json",
              "the model directory has no config.json"),
    signature(r"Segmentation fault|SIGSEGV|exit code: -11|signal 11",
              "an engine process crashed with a segmentation fault"),
    signature(r"Killed process|Out of memory: Killed|exit code: -9\b",
              "an engine process was killed (host out of memory?)"),
)


@dataclass(frozen=True)
class DeterminismSwitch:
    """What makes an engine batch-invariant: environment and/or flags
    (docs/engines.md#why-greedy-outputs-differ-across-layouts-and-the-determinism-switches)."""

    env: dict[str, str] = field(default_factory=dict)
    args: dict = field(default_factory=dict)

    def is_on(self, case: Case) -> bool:
        env_on = all(str(case.env.get(k, "")).lower() in (v, "true") for k, v in self.env.items())
        args_on = all(case.args.get(k, case.args.get(k.replace("-", "_"))) in (v, "true", "1")
                      for k, v in self.args.items())
        return env_on and args_on

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in self.env.items()] + [f"--{k}" for k in self.args]
        return " ".join(parts)


class Engine:
    """Base class for one serving engine. Subclasses set the class attributes and implement `_argv`."""

    name: str = ""
    default_port: int = 8000
    health_route: str = "/health"
    ready_routes: tuple[str, ...] = ("/health", "/v1/models")
    # What the per-test "is it still serving?" probe asks (Server.death, after every test): a route that answers
    # at once; hangs are the watchdog's to find, through health_route.
    live_route: str = "/health"
    # Stop the api process by SIGTERM to its leader only, for an engine whose own shutdown ends its children (a
    # SIGTERM to the whole group reaches them first); the group gets SIGKILL after the grace period either way.
    stop_leader_first: bool = False
    checked_versions: str = ""  # the engine versions whose source the flags were checked against
    default_version: str = ""
    default_command: tuple[str, ...] = ()
    arg_style: str = "kebab"  # how extra args are spelled: kebab (--foo-bar) or snake (--foo_bar)
    runs_on_cpu: bool = False  # a build of the engine serves on CPUs (`device: cpu` in a matrix)
    # Request extensions of its /v1/completions the load generator uses: `ignore_eos` (exact output lengths; else
    # only max_tokens is sent and the lengths are checked afterwards), and a prompt given as a list of token ids,
    # counted as given (the fallback when no text of the exact length can be made).
    accepts_ignore_eos: bool = False
    accepts_token_id_prompts: bool = False
    determinism: DeterminismSwitch | None = None  # what makes it batch-invariant, for `compare.deterministic`
    owned_args: tuple[str, ...] = ()  # flags the planner sets from the layout/ports; users may not pass them
    stages: tuple[Stage, ...] = ()
    signatures: tuple[Signature, ...] = ()
    # Prometheus: the route, the counters its docs name (prompt_tokens, generation_tokens, requests: summed over
    # their labels), and the flag that turns the endpoint on where it is off by default.
    metrics_route: str | None = None
    metrics_counters: ClassVar[dict[str, str]] = {}
    metrics_flag: str | None = None

    # --- rules -----------------------------------------------------------------------------------------------
    def check_layout(self, layout: Layout, model_config: dict | None, device: str = "cuda") -> None:
        """Raise LayoutError naming the rule if this engine cannot run `layout` for this model."""
        if layout.ep > 1 and model_config is not None and num_experts(model_config) == 0:
            raise LayoutError("ep-needs-moe", f"expert parallelism (ep{layout.ep}) needs an MoE model; this model "
                                              f"has no experts")
        if model_config is not None:
            heads = model_config.get("num_attention_heads")
            if heads and heads % layout.tp:
                raise LayoutError("heads-divisible-by-tp",
                                  f"{heads} attention heads are not divisible by tp={layout.tp}")
            layers = model_config.get("num_hidden_layers")
            if layers and layout.pp > layers:
                raise LayoutError("pp-at-most-layers", f"pp={layout.pp} exceeds the model's {layers} layers")

    def fill_suggestion(self, layout: Layout, nodes: int, gpus_per_node: int) -> Layout | None:
        """The layout that uses every GPU of `nodes` x `gpus_per_node` the way `layout` means to, if it does not."""
        total = nodes * gpus_per_node
        if layout.gpus >= total or total % layout.gpus:
            return None
        factor = total // layout.gpus
        return Layout(tp=layout.tp * factor, pp=layout.pp, dp=layout.dp, adp=layout.adp,
                      ep=layout.ep, nodes=nodes)

    # --- plans -----------------------------------------------------------------------------------------------
    def plan(self, case: Case, placement: Placement, ports: Ports, run_dir: str) -> Plan:
        layout = case.layout
        self.check_layout(layout, case.model.config, case.engine.device)
        if len(placement.hosts) != layout.nodes:
            raise LayoutError("placement-matches-nodes",
                              f"layout {layout} needs {layout.nodes} node(s), placement has {len(placement.hosts)}")
        self._check_owned_args(case.args)
        processes, files, notes = self._processes(case, placement, ports, run_dir)
        api_host = placement.head if placement.bind_host in ("0.0.0.0", "::") else placement.bind_host
        return Plan(case_id=case.id, engine=self.name, layout=layout, processes=tuple(processes),
                    api_host=api_host, port=ports.http, served_model=self.served_model_name(case.model),
                    health_route=self.health_route,
                    ready_routes=self.ready_routes, files=files, notes=tuple(notes))

    def _processes(self, case: Case, placement: Placement, ports: Ports, run_dir: str):
        """(processes, files to write into the run dir, notes) of a launch."""
        raise NotImplementedError

    def served_model_name(self, model) -> str:
        return model.served_name

    def extra_args(self, args: dict) -> list[str]:
        return render_args(args, self.arg_style)

    def _check_owned_args(self, args: dict) -> None:
        for key in args:
            if normalize_flag(key) in {normalize_flag(a) for a in self.owned_args}:
                raise UserError(f"{self.name}: set '{key}' through the layout or the launcher, not as an extra "
                                f"argument (llmconform plans it: {', '.join(self.owned_args)})")

    def expected_parse(self, case: Case, plan: Plan, process: Process) -> dict:
        """What the engine's own argument parser must read from `process.argv` (its dest names -> values):
        the layout, node rank, model path and the port it was planned on (checked by llmconform.serving.argcheck)."""
        raise NotImplementedError

    def version_argv(self, command: tuple[str, ...]) -> list[str]:
        raise NotImplementedError

    # --- diagnosis -------------------------------------------------------------------------------------------
    def diagnose(self, log_text: str) -> str | None:
        """One-line diagnosis from the first known-failure signature found in the log, engine-specific first."""
        for sig in (*self.signatures, *COMMON_SIGNATURES):
            if sig.pattern.search(log_text):
                return sig.diagnosis
        return None

    def stage_of(self, log_text: str) -> str:
        """The last startup stage whose marker appears in the log ('starting' if none)."""
        reached = "starting"
        for st in self.stages:
            if st.marker.search(log_text):
                reached = st.name
        return reached


def num_experts(config: dict) -> int:
    for key in ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts"):
        value = config.get(key)
        if value:
            return int(value)
    return 0


def is_python(executable: str) -> bool:
    return executable.rsplit("/", 1)[-1].startswith("python")


def normalize_flag(name: str) -> str:
    return name.lstrip("-").replace("_", "-").lower()


def render_args(args: dict, style: str) -> list[str]:
    """Extra engine flags from a mapping: true -> bare flag, false/null -> omitted, list -> repeated values,
    mapping -> JSON. Keys are written as the engine spells them, with or without leading dashes."""
    out: list[str] = []
    for key, value in args.items():
        name = key.lstrip("-")
        name = name.replace("_", "-") if style == "kebab" else name.replace("-", "_")
        flag = f"--{name}"
        if value is True:
            out.append(flag)
        elif value is False or value is None:
            continue
        elif isinstance(value, (list, tuple)):
            out.append(flag)
            out.extend(str(v) for v in value)
        elif isinstance(value, dict):
            out.extend([flag, json.dumps(value, separators=(",", ":"), sort_keys=True)])
        else:
            out.extend([flag, str(value)])
    return out
