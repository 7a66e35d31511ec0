"""`llmconform bench run` and `bench capacity` against a server the framework did not start (the scripted SSE server
of tests/fakes, a separate process): report dirs that `llmconform compare` reads, a slowed server caught as a
regression, floors, bad input as clean errors, prompts for a tokenizer that never settles, the capacity search."""

import json

import numpy as np
import pytest

from llmconform import models
from llmconform.cli import main
from llmconform.config.workloads import LoadPoint, Slo, Workload
from llmconform.perf import capacity, loadgen
from llmconform.perf.loadgen import Target
from llmconform.perf.prompts import PromptTokenizer
from tests.fakes.sse_server import SseServer


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return str(models.ensure("qwen2-tiny", root=tmp_path_factory.mktemp("models")))


def bench(kind, url, tokenizer_dir, out, *extra):
    return main(["bench", kind, "--llm-url", url, "--model", "fake", "--tokenizer", tokenizer_dir,
                 "--device", "cpu", "--out", str(out), *extra])


# ITLs of tens of ms: a shared, loaded machine may delay the client's event loop by ~10 ms, which would make a point
# with a shorter ITL invalid (its timestamps coarser than what they time).
WORKLOAD = ("--input-tokens", "16", "--output-tokens", "12", "--concurrency", "4", "--requests", "8",
            "--warmup", "0", "--case-id", "fake-server", "--workers", "2")


def test_a_server_that_got_slower_is_a_regression(tmp_path, tokenizer_dir, capsys):
    with SseServer(itl_ms=30) as server:
        assert bench("run", server.url, tokenizer_dir, tmp_path / "before", *WORKLOAD) == 0
    with SseServer(itl_ms=90) as server:  # every chunk delayed
        assert bench("run", server.url, tokenizer_dir, tmp_path / "after", *WORKLOAD) == 0
    summary = json.loads((tmp_path / "before" / "perf-summary.json").read_text())
    (point,) = summary["runs"]
    assert (point["case"], point["point"], point["client"]["workers"]) == ("fake-server", "c4", 2)
    assert point["metrics"]["completed"] == 8 and point["invalid"] is None
    assert "| c4 | 8/8 |" in (tmp_path / "before" / "perf.md").read_text()
    assert main(["compare", str(tmp_path / "before"), str(tmp_path / "after")]) == 1
    verdict = json.loads((tmp_path / "after" / "regression.json").read_text())
    regressed = {f["subject"] for f in verdict["findings"] if f["status"] == "regressed"}
    assert "fake-server cli c4 median_tpot_ms" in regressed
    assert main(["compare", str(tmp_path / "before"), str(tmp_path / "before"), "--out", str(tmp_path)]) == 0
    capsys.readouterr()


def test_floors_from_the_command_line_gate_the_run(tmp_path, tokenizer_dir):
    with SseServer(itl_ms=30) as server:
        code = bench("run", server.url, tokenizer_dir, tmp_path / "run", *WORKLOAD, "--floor", "median_tpot_ms <= 0.5",
                     "--floor", "output_tok_s >= 1")
    assert code == 1
    results = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    floors = next(r for r in results if r["nodeid"] == "bench::floors[fake-server]")
    assert floors["outcome"] == "failed" and "median_tpot_ms" in floors["error"]
    assert next(v["status"] for v in floors["properties"]["floors"]) == "fail"


def test_the_workloads_of_a_matrix(tmp_path, tokenizer_dir):
    matrix = tmp_path / "m.yaml"
    matrix.write_text(f"engines: {{vllm: {{}}}}\nmodels: {{m: {{source: 'path:{tokenizer_dir}'}}}}\nlayouts: [tp1]\n"
                      "workloads:\n  - {name: short, input_tokens: 8, output_tokens: 4, concurrency: [2], "
                      "requests: 4, warmup: 0}\n  - {name: long, input_tokens: 8, output_tokens: 64, "
                      "concurrency: [2]}\nfloors: ['output_tok_s >= 1 in short', 'output_tok_s >= 1 in long']\n")
    with SseServer(itl_ms=30) as server:
        assert bench("run", server.url, tokenizer_dir, tmp_path / "run", "--matrix", str(matrix), "--workload",
                     "short", "--case-id", "m") == 0
    summary = json.loads((tmp_path / "run" / "perf-summary.json").read_text())
    assert [r["workload"] for r in summary["runs"]] == ["short"]
    assert [v["floor"] for v in summary["floors"]] == ["output_tok_s >= 1 in short"]


@pytest.mark.parametrize("extra, message", [
    (("--input-tokens", "8"), "--output-tokens and --concurrency or --rate"),
    (("--workload", "x", "--input-tokens", "8", "--output-tokens", "8", "--concurrency", "1"),
     "--workload names a workload of --matrix"),
    (("--input-tokens", "8", "--output-tokens", "8", "--concurrency", "1", "--floor", "speed >= 1"),
     "--floor: floors[0]: unknown metric 'speed'"),
    (("--input-tokens", "8", "--output-tokens", "8", "--rate", "2"), "needs `requests` per point"),
])
def test_bad_input_is_a_clean_error(tmp_path, tokenizer_dir, capsys, extra, message):
    assert bench("run", "http://127.0.0.1:9", tokenizer_dir, tmp_path, *extra) == 2
    assert message in capsys.readouterr().err


def test_a_missing_tokenizer_is_a_clean_error(tmp_path, capsys):
    assert bench("run", "http://127.0.0.1:9", str(tmp_path / "none"), tmp_path, "--input-tokens", "8",
                 "--output-tokens", "8", "--concurrency", "1") == 2
    assert f"--tokenizer {tmp_path / 'none'}: no tokenizer.json at" in capsys.readouterr().err


class NeverSettles(PromptTokenizer):
    """A tokenizer whose server counts an odd number of tokens as one more: no text has an odd length."""

    def __init__(self, real: PromptTokenizer, accepts_token_ids: bool):
        def encode(text: str) -> list[int]:
            ids = real.encode(text)
            return ids + ids[-1:] * (len(ids) % 2)

        super().__init__(real.tokenizer, encode, 0, "evens only", accepts_token_ids=accepts_token_ids)


def test_token_id_prompts_where_no_text_has_the_length(tokenizer_dir):
    tokenizer = NeverSettles(PromptTokenizer.from_dir(tokenizer_dir), accepts_token_ids=True)
    prompts = tokenizer.random_prompts(4, 33, np.random.default_rng(0))
    assert all(p.tokens == 33 and len(p.token_ids) == 33 for p in prompts)
    assert tokenizer.made == "exact-length text, except 4 sent as token ids (no text of the exact length found)"
    workload = Workload("w", 33, 3, concurrency=(2,))
    with SseServer(itl_ms=1) as server:  # it counts a token-id prompt as the ids it got
        run = loadgen.run_point(Target(server.url, "fake", "vllm"), workload, LoadPoint(4, 0, concurrency=2), prompts,
                             [], workers=1)
    assert [r.prompt_tokens for r in run.records] == [33] * 4


def test_nearest_length_where_the_engine_takes_no_token_ids(tokenizer_dir):
    tokenizer = NeverSettles(PromptTokenizer.from_dir(tokenizer_dir), accepts_token_ids=False)
    prompts = tokenizer.random_prompts(3, 33, np.random.default_rng(0))
    assert all(p.token_ids is None and abs(p.tokens - 33) == 1 for p in prompts)
    assert "3 of the nearest length found (off by up to 1 token(s)" in tokenizer.made


def test_capacity_search_brackets_what_the_server_can_take(tmp_path, tokenizer_dir):
    # 4 streams at once, 10 tokens 20 ms apart: 200 ms a request, about 20 requests/s; beyond it requests queue
    with SseServer(itl_ms=20, max_streams=4) as server:
        code = bench("capacity", server.url, tokenizer_dir, tmp_path, "--input-tokens", "8", "--output-tokens", "10",
                     "--rate", "1", "--requests", "20", "--warmup", "0", "--slo", "ttft:400", "--rate-low", "4",
                     "--rate-high", "256", "--max-points", "6", "--percentile", "p90", "--workers", "1")
    result = json.loads((tmp_path / "capacity.json").read_text())
    assert code == 0 and result["stopped"] is None
    assert len(result["probes"]) <= 6
    found, missed = result["capacity_requests_per_s"], result["lowest_missing_rate"]
    assert 4 <= found < missed <= 256
    assert all(p["meets"] == (p["rate"] <= found) for p in result["probes"])


def test_capacity_search_rejects_what_it_cannot_search():
    with pytest.raises(ValueError, match="needs an SLO"):
        capacity.search(lambda rate: None, Slo(), 1, 2)
    with pytest.raises(ValueError, match="0 < low < high"):
        capacity.search(lambda rate: None, Slo(ttft_ms=1), 4, 2)
