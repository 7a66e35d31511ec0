import pytest
from planning_helpers import PORTS, make_case, placement

from llmconform import engines


@pytest.fixture
def plan_of():
    """plan_of(engine, layout, **case options) -> Plan on n1..nN with 8 GPUs each."""
    def plan(engine, layout, nodes=None, per_node=8, **kwargs):
        case = make_case(engine, layout, **kwargs)
        return engines.get(engine).plan(case, placement(nodes or case.layout.nodes, per_node), PORTS, "/run")
    return plan
