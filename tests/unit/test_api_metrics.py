import pytest

from llmconform import engines
from llmconform.api import metrics

# As vLLM 0.32 exposes them (labels abridged)
EXPOSITION = """# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="qwen2-tiny"} 120.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="qwen2-tiny"} 3.0
vllm:request_success_total{engine="0",finished_reason="stop",model_name="qwen2-tiny"} 2.0
vllm:generation_tokens_total{engine="0",model_name="a \\"quoted\\" {name}"} 4.5e+01 1700000000000
"""


def test_counters_are_summed_over_their_labels():
    totals = metrics.parse(EXPOSITION)
    assert totals == {"vllm:prompt_tokens_total": 120.0, "vllm:request_success_total": 5.0,
                      "vllm:generation_tokens_total": 45.0}
    with pytest.raises(ValueError, match="not a Prometheus sample line"):
        metrics.parse("vllm:broken{ 1")


def test_missing_and_moved_counters():
    counters = engines.get("vllm").metrics_counters
    totals = metrics.parse(EXPOSITION)
    assert metrics.missing_counters(totals, counters) == []
    assert metrics.missing_counters({}, {"requests": "sglang:num_requests_total"}) == [
        "requests counter sglang:num_requests_total is not exposed"]
    after = {**totals, "vllm:prompt_tokens_total": 127.0, "vllm:generation_tokens_total": 49.0,
             "vllm:request_success_total": 6.0}
    expected = {"prompt_tokens": 7, "generation_tokens": 5, "requests": 1}
    assert metrics.movement_problems(totals, after, counters, expected) == [
        "vllm:generation_tokens_total moved by 4, expected 5 (generation_tokens of the request)"]
    # A counter the engine does not name is not asked for (SGLang documents no request counter).
    assert metrics.movement_problems(totals, totals, engines.get("sglang").metrics_counters, {"requests": 1}) == []
