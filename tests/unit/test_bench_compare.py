"""The comparison with `vllm bench serve`: the command it runs, reading vLLM's per-request timings back, and the
verdict rule (a difference must stand out from the machine's noise)."""

import math
from pathlib import Path

import pytest

from llmconform.config.workloads import LoadPoint, Slo, Workload
from llmconform.perf import bench
from llmconform.perf.loadgen import Target

TARGET = Target("http://127.0.0.1:8000", "qwen2-tiny", "vllm")


def rounds(*pairs):
    """Rounds where every gated metric has the given values (ours, vllm)."""
    return [{"ours": dict.fromkeys(bench.GATED, ours), "vllm": dict.fromkeys(bench.GATED, theirs)}
            for ours, theirs in pairs]


def test_agreeing_rounds_are_ok():
    c = bench.PointComparison("c32", rounds((102.0, 100.0), (99.0, 100.0)))
    assert c.difference("output_tok_s") == pytest.approx(0.005)
    assert c.noise("output_tok_s") == pytest.approx(0.015)
    assert c.verdict("output_tok_s", 0.05) == "ok"


def test_a_consistent_gap_is_different():
    c = bench.PointComparison("c32", rounds((120.0, 100.0), (121.0, 100.0)))
    assert c.verdict("output_tok_s", 0.05) == "DIFFERENT"


def test_noisy_rounds_are_inconclusive_even_when_their_median_agrees():
    c = bench.PointComparison("c32", rounds((119.0, 100.0), (85.0, 100.0)))
    assert abs(c.difference("output_tok_s")) < 0.05
    assert c.verdict("output_tok_s", 0.05) == "inconclusive"


def test_one_round_has_no_noise_estimate():
    c = bench.PointComparison("c1", rounds((101.0, 100.0)))
    assert c.noise("output_tok_s") is None and c.verdict("output_tok_s", 0.05) == "ok"
    assert bench.exit_code([c], 0.05) == 0
    assert bench.exit_code([bench.PointComparison("c1", rounds((150.0, 100.0)))], 0.05) == 1


def test_vllm_bench_gets_the_same_traffic():
    closed = Workload("w", 512, 128, concurrency=(64,), slo=Slo(ttft_ms=2000, tpot_ms=50))
    argv = bench.vllm_bench_argv(["vllm", "bench", "serve"], TARGET, closed, LoadPoint(320, 64, concurrency=64),
                                 "/models/q", Path("/out"), "r.json", seed=17)
    text = " ".join(argv)
    assert text.startswith("vllm bench serve --backend openai --base-url http://127.0.0.1:8000 ")
    for flags in ("--dataset-name random", "--random-input-len 512", "--random-output-len 128", "--num-prompts 320",
                  "--num-warmups 64", "--max-concurrency 64", "--ignore-eos", "--save-result", "--save-detailed",
                  "--tokenizer /models/q", "--model qwen2-tiny", "--goodput ttft:2000 tpot:50", "--seed 17"):
        assert flags in text
    assert "--request-rate" not in text
    opened = Workload("w", 64, 16, rates=(math.inf,), requests=50, burstiness=0.5, max_concurrency=8,
                      ignore_eos=False)
    text = " ".join(bench.vllm_bench_argv(["vllm", "bench", "serve"], TARGET, opened,
                                          LoadPoint(50, 0, rate=math.inf, max_concurrency=8), "/m", Path("/o"), "f",
                                          seed=0))
    assert "--request-rate inf --burstiness 0.5 --max-concurrency 8" in text and "--ignore-eos" not in text


def detailed_result(**overrides):
    """A `vllm bench serve --save-detailed` result for two requests (and one failure) whose aggregates were worked out
    by hand with vLLM's definitions (see tests/unit/test_load_metrics.py for the same timings)."""
    result = {
        "duration": 2.0, "start_times": [100.0, 100.5, 100.2], "ttfts": [0.1, 0.4, 0.0],
        "itls": [[0.2, 0.3], [0.1], []], "errors": ["", "", "Traceback: refused"],
        "input_lens": [4, 4, 4], "output_lens": [3, 2, 0], "completed": 2, "failed": 1,
        "output_throughput": 2.5, "request_throughput": 1.0, "total_token_throughput": 6.5,
        "median_ttft_ms": 250.0, "p99_ttft_ms": 397.0, "mean_tpot_ms": 175.0, "median_itl_ms": 200.0,
        "p90_itl_ms": 280.0, "mean_e2el_ms": 550.0, "max_output_tokens_per_s": 4.0, "max_concurrent_requests": 2,
        "request_goodput": None,
    }
    return result | overrides


def test_vllm_per_request_timings_become_records():
    ok, ok2, failed = bench.records_from_vllm_result(detailed_result())
    assert ok.chunk_s == pytest.approx([100.1, 100.3, 100.6]) and ok.completion_tokens == 3
    assert ok2.chunk_s == pytest.approx([100.9, 101.0]) and ok2.ok
    assert not failed.ok and failed.error == "Traceback: refused"


def test_our_metric_code_reproduces_vllms_aggregates():
    differences = bench.metric_math_differences(detailed_result())
    assert set(differences) >= {"output_tok_s", "median_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "p90_itl_ms",
                                "max_output_tok_s", "max_concurrent_requests"}
    assert max(differences.values()) < 1e-9
    wrong = bench.metric_math_differences(detailed_result(mean_tpot_ms=200.0))
    assert wrong["mean_tpot_ms"] == pytest.approx(0.125)


def test_a_tool_whose_own_runs_disagree_makes_it_inconclusive():
    # both pairs say ours is 25% faster, but vllm's own runs differ by 15%: a load bump can bias both pairs alike
    c = bench.PointComparison("c32", rounds((125.0, 100.0), (143.75, 115.0)))
    assert c.noise("output_tok_s") == pytest.approx(0.0, abs=1e-12) and c.spread("output_tok_s") > 0.05
    assert c.verdict("output_tok_s", 0.05) == "inconclusive"


def test_a_result_without_per_request_timings_is_not_cross_checked():
    result = detailed_result()
    del result["start_times"]
    assert bench.metric_math_differences(result) == {}
