"""Plan a case without starting anything: the engine's launch plan on a placement, whether it fits the hardware,
and advice where a layout would be rejected or would leave GPUs of the target idle."""

from __future__ import annotations

from dataclasses import dataclass, field

from llmconform import engines
from llmconform.config.case import Case
from llmconform.config.layout import Layout
from llmconform.engines.base import Placement, Plan, Ports
from llmconform.errors import LayoutError, UserError
from llmconform.serving import launchers
from llmconform.serving.resources import Hardware

DEFAULT_MASTER_PORT = 29501  # vLLM --master-port default
DEFAULT_DP_RPC_PORT = 29550  # vLLM --data-parallel-rpc-port default
DEFAULT_DIST_INIT_PORT = 25000  # what SGLang's docs and pysheeet use for --dist-init-addr


@dataclass
class CasePlan:
    case: Case
    plan: Plan | None = None
    error: UserError | None = None  # the case cannot run anywhere as written
    unfit: str | None = None  # it could run, but not on this hardware
    advice: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


def default_ports(engine_name: str) -> Ports:
    return Ports(http=engines.get(engine_name).default_port, master=DEFAULT_MASTER_PORT,
                 dp_rpc=DEFAULT_DP_RPC_PORT, dist_init=DEFAULT_DIST_INIT_PORT)


def placement_on(hardware: Hardware, case: Case, bind_host: str) -> Placement:
    """The first nodes of `hardware` (stand-ins `node0..` if it has too few), the first devices of each."""
    layout = case.layout
    per_node = layout.gpus_per_node
    enough = len(hardware.nodes) >= layout.nodes
    hosts, devices = [], []
    for i in range(layout.nodes):
        node = hardware.nodes[i] if enough else None
        hosts.append(node.name if node else f"node{i}")
        pool = (node.cpus if case.engine.device == "cpu" else node.gpus) if node else ()
        devices.append(tuple(pool[:per_node]) if len(pool) >= per_node else tuple(range(per_node)))
    return Placement(hosts=tuple(hosts), devices=tuple(devices), bind_host=bind_host)


def bind_host_of(case: Case) -> str:
    """Every interface where a client on another host reaches the server (several nodes, a launcher that runs the
    engine elsewhere), else the loopback."""
    remote = case.layout.nodes > 1 or launchers.get(case.launcher).reached_from_other_hosts
    return "0.0.0.0" if remote else "127.0.0.1"


def plan_case(case: Case, hardware: Hardware, *, target: Hardware | None = None, ports: Ports | None = None,
              run_dir: str = "RUN_DIR", bind_host: str | None = None) -> CasePlan:
    engine = engines.get(case.engine.name)
    result = CasePlan(case)
    if bind_host is None:
        bind_host = bind_host_of(case)
    result.unfit = hardware.why_not(case)
    # Show the plan on the target's nodes when it cannot run here (hostnames of the target, not of this machine).
    on = target if result.unfit and target is not None else hardware
    try:
        result.plan = engine.plan(case, placement_on(on, case, bind_host),
                                  ports or default_ports(case.engine.name), run_dir)
    except UserError as error:
        result.error = error
    if target is not None:
        result.advice.extend(_advice(engine, case.layout, case.model.config, case.engine.device, target))
    return result


def _advice(engine, layout: Layout, model_config, device: str, target: Hardware) -> list[str]:
    nodes, per_node = len(target.nodes), len(target.nodes[0].gpus)
    total = nodes * per_node
    advice = []
    if layout.gpus_per_node > per_node or layout.nodes > nodes:
        needed_nodes = -(-layout.gpus // per_node)
        text = (f"{layout} needs {layout.gpus} GPUs ({layout.gpus_per_node} per node on {layout.nodes} node(s)); "
                f"the target has {per_node} per node on {nodes} node(s)")
        spread = Layout(tp=layout.tp, pp=layout.pp, dp=layout.dp, adp=layout.adp, ep=layout.ep, nodes=needed_nodes)
        if needed_nodes > layout.nodes and _valid(engine, spread, model_config, device):
            text += f"; spread over nodes it is {spread}"
        advice.append(text)
    elif layout.nodes == nodes and layout.gpus < total:
        text = f"{layout} uses {layout.gpus} of the target's {total} GPUs"
        suggestion = engine.fill_suggestion(layout, nodes, per_node)
        if suggestion is not None and _valid(engine, suggestion, model_config, device):
            text += f"; {suggestion} uses all of them the way {layout} means to"
        advice.append(text)
    return advice


def _valid(engine, layout: Layout, model_config, device: str) -> bool:
    try:
        engine.check_layout(layout, model_config, device)
    except LayoutError:
        return False
    return True
