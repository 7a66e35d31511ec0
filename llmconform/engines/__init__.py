"""Engine registry: one module per engine, looked up by name."""

from __future__ import annotations

from llmconform.engines.base import Engine
from llmconform.engines.sglang import SGLang
from llmconform.engines.trtllm import TRTLLM
from llmconform.engines.vllm import VLLM
from llmconform.errors import UserError

ENGINES: dict[str, Engine] = {engine.name: engine for engine in (VLLM(), SGLang(), TRTLLM())}


def get(name: str) -> Engine:
    try:
        return ENGINES[name]
    except KeyError:
        raise UserError(f"unknown engine {name!r} (known: {', '.join(sorted(ENGINES))})") from None
