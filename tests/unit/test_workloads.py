"""The matrix `workloads:` section: what parses, and what a matrix author is told when it does not."""

import math

import pytest

from llmconform.config.workloads import Slo, Workload, parse_workloads


class Failed(Exception):
    pass


def fail(path, problem, allowed):
    raise Failed(path, problem, allowed)


def test_a_full_workload_parses():
    (closed, opened) = parse_workloads([
        {"name": "chat-512-128", "input_tokens": 512, "output_tokens": 128, "concurrency": [1, 64],
         "requests_per_stream": 4, "warmup": 2, "prompts": "text", "text": "some prose", "ignore_eos": False,
         "temperature": 0, "slo": {"ttft_ms": 2000, "tpot_ms": 100}, "seed": 7},
        {"name": "burst", "input_tokens": 64, "output_tokens": 16, "rate": [2, "inf"], "requests": 100,
         "burstiness": 0.5, "max_concurrency": 32},
    ], fail)
    assert closed.concurrency == (1, 64) and closed.slo == Slo(ttft_ms=2000.0, tpot_ms=100.0)
    assert (closed.prompts, closed.text, closed.ignore_eos, closed.temperature, closed.seed) == (
        "text", "some prose", False, 0.0, 7)
    assert [(p.requests, p.warmup) for p in closed.points()] == [(16, 2), (256, 2)]
    assert opened.rates == (2.0, math.inf) and opened.burstiness == 0.5 and opened.max_concurrency == 32
    assert parse_workloads(None, fail) == ()
    assert parse_workloads([closed], fail) == (closed,)  # already parsed: passes through


@pytest.mark.parametrize("item, path, problem", [
    ({"name": "w", "input_tokens": 8, "output_tokens": 8, "concurrency": 4, "speed": 1}, "workloads[0].speed",
     "unknown key"),
    ({"name": "w", "input_tokens": 8, "concurrency": 4}, "workloads[0].output_tokens", "missing required key"),
    ({"name": "w x", "input_tokens": 8, "output_tokens": 8, "concurrency": 4}, "workloads[0].name",
     "does not match the pattern"),
    ({"name": "w", "input_tokens": 0, "output_tokens": 8, "concurrency": 4}, "workloads[0].input_tokens",
     "expected an integer >= 1"),
    ({"name": "w", "input_tokens": 8, "output_tokens": 8}, "workloads[0]", "give exactly one of `concurrency`"),
    ({"name": "w", "input_tokens": 8, "output_tokens": 8, "concurrency": [4], "rate": [1], "requests": 9},
     "workloads[0]", "give exactly one of `concurrency`"),
    ({"name": "w", "input_tokens": 8, "output_tokens": 8, "concurrency": [4, 0]}, "workloads[0].concurrency[1]",
     "expected an integer >= 1"),
    ({"name": "w", "input_tokens": 8, "output_tokens": 8, "rate": [1]}, "workloads[0].requests",
     "needs `requests`"),
    ({"name": "w", "input_tokens": 8, "output_tokens": 8, "rate": ["fast"], "requests": 4}, "workloads[0].rate[0]",
     "expected a number > 0 or 'inf', got 'fast'"),
    ({"name": "w", "input_tokens": 8, "output_tokens": 8, "concurrency": 2, "max_concurrency": 4},
     "workloads[0].max_concurrency", "only for open-loop"),
    ({"name": "w", "input_tokens": 8, "output_tokens": 8, "concurrency": 2, "prompts": "sharegpt"},
     "workloads[0].prompts", "'sharegpt' is not allowed"),
    ({"name": "w", "input_tokens": 8, "output_tokens": 8, "concurrency": 2, "text": "prose"}, "workloads[0].text",
     "used with `prompts: text`"),
    ({"name": "w", "input_tokens": 8, "output_tokens": 8, "concurrency": 2, "slo": {"p99": 3}},
     "workloads[0].slo.p99", "unknown key"),
    ({"name": "w", "input_tokens": 8, "output_tokens": 8, "concurrency": 2, "slo": {"ttft_ms": -1}},
     "workloads[0].slo.ttft_ms", "expected a number > 0, got -1"),
])
def test_errors_name_the_key_path(item, path, problem):
    with pytest.raises(Failed) as caught:
        parse_workloads([item], fail)
    assert caught.value.args[0] == path
    assert problem in caught.value.args[1]


def test_workload_names_are_unique():
    item = {"name": "w", "input_tokens": 8, "output_tokens": 8, "concurrency": 2}
    with pytest.raises(Failed) as caught:
        parse_workloads([item, item], fail)
    assert caught.value.args[:2] == ("workloads[1].name", "workload name 'w' is used twice")


def test_the_section_is_a_list():
    with pytest.raises(Failed) as caught:
        parse_workloads({"name": "w"}, fail)
    assert caught.value.args[0] == "workloads"
    assert isinstance(parse_workloads([{"name": "w", "input_tokens": 1, "output_tokens": 1, "concurrency": 1}],
                                      fail)[0], Workload)
