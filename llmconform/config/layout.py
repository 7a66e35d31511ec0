"""Parallelism layouts: `tp4pp2`, `tp8ep2`, `tp8dp2`, `tp8adp2`, `tp4pp2@2nodes`, or a YAML mapping.

A layout is engine-neutral arithmetic. What EP and attention-DP mean differs per engine, so the engine modules
check a layout against their own rules (`Engine.check_layout`); this module only knows the universal ones.

- tp: tensor parallel size;  pp: pipeline parallel size;
- dp: data-parallel *replicas* (each replica has tp x pp GPUs);
- adp: attention data parallelism *inside* the TP group (SGLang `--attn-dp-size`/`--enable-dp-attention`,
  TRT-LLM `enable_attention_dp`); it adds no GPUs;
- ep: expert-parallel size; 1 = off. A bare `ep` means "experts spread over every GPU of the MoE group",
  which is tp x dp (vLLM's `--enable-expert-parallel` spans TP x DP; for the others with dp=1 it equals tp);
- nodes: how many nodes the GPUs are spread over (evenly).
GPUs = tp x pp x dp.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from llmconform.errors import LayoutError

_TOKEN = re.compile(r"(tp|pp|dp|adp|ep)(\d*)")
_NODES = re.compile(r"@(\d+)nodes?$")
FIELDS = ("tp", "pp", "dp", "adp", "ep", "nodes")


@dataclass(frozen=True)
class Layout:
    tp: int = 1
    pp: int = 1
    dp: int = 1
    adp: int = 1
    ep: int = 1
    nodes: int = 1

    def __post_init__(self):
        for key in FIELDS:
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise LayoutError("positive-sizes", f"{key} must be a positive integer, got {value!r}")
        if self.gpus % self.nodes:
            raise LayoutError(
                "even-node-split",
                f"{self.gpus} GPUs (tp x pp x dp = {self.tp}x{self.pp}x{self.dp}) cannot be split evenly over "
                f"{self.nodes} nodes",
            )

    @property
    def gpus(self) -> int:
        return self.tp * self.pp * self.dp

    @property
    def gpus_per_node(self) -> int:
        return self.gpus // self.nodes

    @property
    def replica_gpus(self) -> int:
        """GPUs of one model replica (one DP rank)."""
        return self.tp * self.pp

    def ranks_by_node(self) -> list[range]:
        """Global ranks (0..gpus-1, DP-major, then PP, then TP) that live on each node, in node order."""
        per = self.gpus_per_node
        return [range(n * per, (n + 1) * per) for n in range(self.nodes)]

    def __str__(self) -> str:
        return canonical(self)


def canonical(layout: Layout) -> str:
    parts = [f"{key}{getattr(layout, key)}" for key in ("tp", "pp", "dp", "adp", "ep") if getattr(layout, key) != 1]
    text = "".join(parts) or "tp1"
    if layout.nodes != 1:
        text += f"@{layout.nodes}nodes"
    return text


def parse(spec: str | dict | Layout) -> Layout:
    """Parse `tp4pp2@2nodes` or `{tp: 4, pp: 2, nodes: 2}` (bare `ep`/`ep: true` = EP over tp x dp)."""
    if isinstance(spec, Layout):
        return spec
    if isinstance(spec, dict):
        return _from_mapping(spec)
    if not isinstance(spec, str):
        raise LayoutError("syntax", f"a layout is a string like 'tp4pp2' or a mapping, got {spec!r}")
    text = spec.strip().lower()
    values: dict[str, int | bool] = {}
    nodes_match = _NODES.search(text)
    body = text[: nodes_match.start()] if nodes_match else text
    position = 0
    while position < len(body):
        match = _TOKEN.match(body, position)
        if not match:
            raise LayoutError(
                "syntax",
                f"cannot parse layout {spec!r} at {body[position:]!r}: expected tpN, ppN, dpN, adpN, epN or ep, "
                f"optionally followed by @Nnodes",
            )
        key, digits = match.group(1), match.group(2)
        if key in values:
            raise LayoutError("syntax", f"layout {spec!r} names {key} twice")
        if not digits and key != "ep":
            raise LayoutError("syntax", f"layout {spec!r}: {key} needs a size, e.g. {key}2")
        values[key] = int(digits) if digits else True
        position = match.end()
    if not values:
        raise LayoutError("syntax", f"layout {spec!r} is empty")
    if nodes_match:
        values["nodes"] = int(nodes_match.group(1))
    return _build(values)


def _from_mapping(spec: dict) -> Layout:
    unknown = set(spec) - set(FIELDS)
    if unknown:
        raise LayoutError("syntax", f"unknown layout keys {sorted(unknown)}; allowed: {', '.join(FIELDS)}")
    return _build(dict(spec))


def _build(values: dict) -> Layout:
    ep = values.get("ep", 1)
    if ep is True:
        ep = values.get("tp", 1) * values.get("dp", 1)
    elif ep is False:
        ep = 1
    return Layout(
        tp=values.get("tp", 1), pp=values.get("pp", 1), dp=values.get("dp", 1), adp=values.get("adp", 1),
        ep=ep, nodes=values.get("nodes", 1),
    )
