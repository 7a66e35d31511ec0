"""Engine registry: one module per engine, looked up by name; a user's conftest adds engines through the
`pytest_llmconform_engines` hook (llmconform.pytest.hookspecs)."""

from __future__ import annotations

from llmconform.engines.base import Engine
from llmconform.engines.sglang import SGLang
from llmconform.engines.trtllm import TRTLLM
from llmconform.engines.vllm import VLLM
from llmconform.errors import UserError

ENGINES: dict[str, Engine] = {engine.name: engine for engine in (VLLM(), SGLang(), TRTLLM())}


def register(engine: Engine) -> None:
    """Add an engine under its name (the `pytest_llmconform_engines` hook); another type under a taken name is
    refused."""
    if not engine.name:
        raise UserError(f"engine {type(engine).__qualname__} has no name")
    known = ENGINES.get(engine.name)
    if known is not None and type(known) is not type(engine):
        raise UserError(f"engine {engine.name!r} is already registered ({type(known).__qualname__})")
    ENGINES[engine.name] = engine


def get(name: str) -> Engine:
    try:
        return ENGINES[name]
    except KeyError:
        raise UserError(f"unknown engine {name!r} (known: {', '.join(sorted(ENGINES))})") from None
