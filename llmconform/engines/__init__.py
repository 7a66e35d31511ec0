"""Engine registry: one module per engine, looked up by name; a user's conftest adds engines through the
`pytest_llmconform_engines` hook (llmconform.pytest.hookspecs)."""

from __future__ import annotations

from llmconform.engines.base import Engine
from llmconform.engines.sglang import SGLang
from llmconform.engines.trtllm import TRTLLM
from llmconform.engines.vllm import VLLM
from llmconform.registry import Registry

ENGINES: Registry[Engine] = Registry("engine")
for _engine in (VLLM(), SGLang(), TRTLLM()):
    ENGINES.add(_engine)
register = ENGINES.add  # the `pytest_llmconform_engines` hook's engines
get = ENGINES.named
