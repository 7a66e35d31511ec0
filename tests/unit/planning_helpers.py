"""Cases and placements for planning tests."""

from llmconform import engines, models
from llmconform.config.case import Case, EngineSettings, ModelSpec
from llmconform.config.layout import parse
from llmconform.engines.base import Placement, Ports


def make_case(engine="vllm", layout="tp1", source="hf:org/model", version=None, device="cuda", args=None, env=None,
              served_name="m", config=None, command=None):
    module = engines.get(engine)
    kind, _, ref = source.partition(":")
    dummy = False
    path = ref
    if kind in ("factory", "shape"):
        preset = models.preset(ref)
        config, dummy, path = preset.config, kind == "shape", f"/models/{ref}"
    model = ModelSpec(id=served_name, source=source, path=path, served_name=served_name, config=config,
                      dummy_weights=dummy)
    settings = EngineSettings(name=engine, command=tuple(command or module.default_command),
                              version=version or module.default_version, device=device)
    return Case(engine=settings, model=model, layout=parse(layout), args=args or {}, env=env or {})


def placement(nodes=1, per_node=8, bind_host="0.0.0.0"):
    return Placement(hosts=tuple(f"n{i + 1}" for i in range(nodes)),
                     devices=tuple(tuple(range(per_node)) for _ in range(nodes)), bind_host=bind_host)


PORTS = Ports(http=8000, master=29501, dp_rpc=29550, dist_init=25000)
