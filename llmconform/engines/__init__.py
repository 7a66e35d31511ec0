"""Engine registry: one module per engine, looked up by name."""

from __future__ import annotations

from ..errors import UserError
from .base import Engine
from .sglang import SGLang
from .trtllm import TRTLLM
from .vllm import VLLM

ENGINES: dict[str, Engine] = {engine.name: engine for engine in (VLLM(), SGLang(), TRTLLM())}


def get(name: str) -> Engine:
    try:
        return ENGINES[name]
    except KeyError:
        raise UserError(f"unknown engine {name!r} (known: {', '.join(sorted(ENGINES))})") from None
