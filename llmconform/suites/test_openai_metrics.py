"""Beside the OpenAI API: the engine's Prometheus endpoint exposes the request and token counters its docs name, and
they count what the suite sent."""

# The `conformance` fixture is imported by name; pytest passes it to the checks' parameters of that name.

import time

import pytest

from llmconform import engines
from llmconform.api import metrics
from llmconform.api.calls import generate, get
from llmconform.api.endpoints import COMPLETIONS
from llmconform.pytest.conformance_fixture import Conformance

# Counters are updated by the engine's stats loop, which may trail the response by a moment.
SETTLE_S = 10.0


def scrape(llm, route: str) -> tuple[dict | None, list[str]]:
    answer = get(llm, route)
    if answer.status != 200:
        return None, [f"GET {route} answered HTTP {answer.status}: {answer.text[:200]!r}"]
    try:
        return metrics.parse(answer.text), []
    except ValueError as error:
        return None, [f"GET {route}: {error}"]


def engine_metrics(llm):
    engine = engines.ENGINES.get(llm.engine)
    if engine is None or not engine.metrics_route:
        pytest.skip(f"no Prometheus counters are known for engine {llm.engine!r}")
    return engine


def test_metrics_counters_exposed(llm, conformance):
    """Spec: the engine's Prometheus endpoint (vLLM /metrics; SGLang /metrics with --enable-metrics) answers the
    text format and exposes the request and token counters its docs name."""
    engine = engine_metrics(llm)
    totals, problems = scrape(llm, engine.metrics_route)
    if totals is None and engine.metrics_flag:
        pytest.skip(f"{problems[0]}: start {engine.name} with {engine.metrics_flag}")
    if totals is not None:
        problems += metrics.missing_counters(totals, engine.metrics_counters)
    conformance.require(problems)


def test_metrics_count_a_request(llm, conformance: Conformance):
    """Spec: the prompt and generation token counters move by the request's usage.prompt_tokens and
    usage.completion_tokens, and the request counter by one, within the run."""
    engine = engine_metrics(llm)
    before, problems = scrape(llm, engine.metrics_route)
    if before is None:
        if engine.metrics_flag:
            pytest.skip(f"{problems[0]}: start {engine.name} with {engine.metrics_flag}")
        conformance.stop(problems)
    body, problems = generate(llm, COMPLETIONS, "Count these tokens, please.", max_tokens=5, temperature=0)
    if body is None:
        conformance.stop(problems)
    usage = body.get("usage") or {}
    expected = {"prompt_tokens": usage.get("prompt_tokens"), "generation_tokens": usage.get("completion_tokens"),
                "requests": 1}
    deadline = time.monotonic() + SETTLE_S
    while True:
        after, scraped = scrape(llm, engine.metrics_route)
        moved = scraped if after is None else metrics.movement_problems(before, after, engine.metrics_counters,
                                                                         expected)
        if not moved or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    conformance.require(problems + moved)
