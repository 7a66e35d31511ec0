"""Noise-aware perf verdicts of `llmconform compare`, on constructed request records of two runs."""

import json

import numpy as np
import pytest

from llmconform.config.workloads import LoadPoint
from llmconform.errors import UserError
from llmconform.perf import compare_runs
from llmconform.perf.records import ClientStats, PointRun, RequestRecord, write_records
from llmconform.reports import regression
from llmconform.reports.report_dir import ReportDir

CASE = "vllm-m-tp1"


def point_run(requests: int, tpot_s: float, ttft_s: float, noise: float, seed: int,
              tokens: int = 16) -> PointRun:
    """Requests one after another (concurrency 1), each `tokens` chunks long; `noise` spreads each request's speed."""
    rng = np.random.default_rng(seed)
    records, now = [], 0.0
    for index in range(requests):
        first = ttft_s * rng.lognormal(0, noise)
        gaps = tpot_s * rng.lognormal(0, noise) * rng.lognormal(0, 0.02, tokens - 1)
        chunks = list(now + first + np.concatenate([[0.0], np.cumsum(gaps)]))
        records.append(RequestRecord(index=index, expected_input_tokens=8, expected_output_tokens=tokens,
                                          sent_s=now, chunk_s=chunks, done_s=chunks[-1], prompt_tokens=8,
                                          completion_tokens=tokens, finish_reason="length", status=200))
        now = chunks[-1]
    return PointRun(workload="w", point=LoadPoint(requests=requests, warmup=0, concurrency=1),
                         records=records, duration_s=now, client=ClientStats(0.0, 0, 0.0, 0.0),
                         sent_ignore_eos=True)


def write_perf(directory, runs: list[PointRun], hardware: str = "cpu", keep_records: bool = True):
    directory.mkdir()
    report = ReportDir(directory)
    report.results.write_text(json.dumps({
        "nodeid": "suites/test_throughput.py::test_serving_metrics[x]", "when": "call", "outcome": "passed",
        "properties": {}}) + "\n")
    rows = []
    for i, run in enumerate(runs):
        path = report.perf_records(CASE, "w", f"c1-{i}")
        if keep_records:
            write_records(path, run)
        tokens = sum(r.completion_tokens for r in run.records)
        tpot = np.median([(r.chunk_s[-1] - r.chunk_s[0]) / (len(r.chunk_s) - 1) for r in run.records]) * 1e3
        rows.append({"case": CASE, "workload": "w", "point": "c1", "concurrency": 1, "rate": None,
                     "hardware": hardware, "gpu_name": None, "records": str(path),
                     "metrics": {"output_tok_s": tokens / run.duration_s, "median_tpot_ms": tpot,
                                 "median_ttft_ms": 1.0}})
    report.perf_summary.write_text(json.dumps({"version": 1, "runs": rows, "floors": []}))
    return report


def verdicts(baseline, candidate, tolerances=compare_runs.DEFAULT_TOLERANCES):
    return {v.subject.split()[-1]: v for v in compare_runs.compare(baseline, candidate,
                                                                   compare_runs.parse_tolerances(tolerances))}


def test_a_slowdown_beyond_the_runs_variation_is_a_regression_with_its_interval(tmp_path):
    baseline = write_perf(tmp_path / "a", [point_run(60, 0.010, 0.050, 0.05, seed=1)])
    slower = write_perf(tmp_path / "b", [point_run(60, 0.013, 0.050, 0.05, seed=2)])
    found = verdicts(baseline, slower)
    tpot, throughput = found["median_tpot_ms"], found["output_tok_s"]
    assert tpot.status == "regressed" and 0.2 < tpot.change < 0.4 and 0 < tpot.low < tpot.change < tpot.high
    assert throughput.status == "regressed" and throughput.high < 0
    assert "95% interval [" in tpot.detail and "bootstrap over requests" in tpot.detail
    assert "bootstrap over time windows" in throughput.detail
    assert found["median_ttft_ms"].status == "unchanged"
    faster = verdicts(slower, baseline)
    assert faster["median_tpot_ms"].status == "improved" and faster["output_tok_s"].status == "improved"


def test_a_rerun_of_the_same_engine_is_unchanged_and_a_noisy_small_run_inconclusive(tmp_path):
    baseline = write_perf(tmp_path / "a", [point_run(80, 0.010, 0.050, 0.03, seed=1)])
    rerun = write_perf(tmp_path / "b", [point_run(80, 0.010, 0.050, 0.03, seed=2)])
    assert {v.status for v in verdicts(baseline, rerun).values()} == {"unchanged"}
    noisy_before = write_perf(tmp_path / "c", [point_run(6, 0.010, 0.050, 0.3, seed=3)])
    noisy_after = write_perf(tmp_path / "d", [point_run(6, 0.011, 0.050, 0.3, seed=4)])
    tpot = verdicts(noisy_before, noisy_after)["median_tpot_ms"]
    assert tpot.status == "inconclusive" and tpot.low < 0 < tpot.high


def test_repeated_points_are_pooled_and_narrow_the_interval(tmp_path):
    one = verdicts(write_perf(tmp_path / "a", [point_run(10, 0.010, 0.05, 0.2, seed=1)]),
                   write_perf(tmp_path / "b", [point_run(10, 0.010, 0.05, 0.2, seed=2)]))["median_tpot_ms"]
    repeated = verdicts(
        write_perf(tmp_path / "c", [point_run(10, 0.010, 0.05, 0.2, seed=s) for s in (1, 3, 5, 7)]),
        write_perf(tmp_path / "d", [point_run(10, 0.010, 0.05, 0.2, seed=s) for s in (2, 4, 6, 8)]))["median_tpot_ms"]
    assert repeated.high - repeated.low < one.high - one.low
    assert "40 and 40 requests" in repeated.detail


def test_other_hardware_is_not_compared_and_missing_records_fall_back_to_the_tolerance(tmp_path):
    baseline = write_perf(tmp_path / "a", [point_run(20, 0.010, 0.05, 0.05, seed=1)])
    elsewhere = write_perf(tmp_path / "b", [point_run(20, 0.010, 0.05, 0.05, seed=2)], hardware="H100-SXM")
    assert [(v.status, v.detail) for v in verdicts(baseline, elsewhere).values()] == [
        ("not compared", "baseline measured on cpu, the candidate on H100-SXM")]
    bare = write_perf(tmp_path / "c", [point_run(20, 0.015, 0.05, 0.05, seed=2)], keep_records=False)
    tpot = verdicts(baseline, bare)["median_tpot_ms"]
    assert tpot.status == "regressed" and "no per-request records: no interval" in tpot.detail


def test_the_gate_reports_perf_verdicts_and_rejects_metrics_it_cannot_judge(tmp_path):
    baseline = write_perf(tmp_path / "a", [point_run(60, 0.010, 0.05, 0.05, seed=1)])
    slower = write_perf(tmp_path / "b", [point_run(60, 0.013, 0.05, 0.05, seed=2)])
    comparison = regression.compare_runs(baseline.path, slower.path)
    assert {f.subject.split()[-1] for f in comparison.regressions} == {"output_tok_s", "median_tpot_ms"}
    assert comparison.regressions[0].evidence["low"] is not None
    with pytest.raises(UserError, match="goodput_requests_per_s cannot be judged from per-request records"):
        compare_runs.parse_tolerances(("goodput_requests_per_s:-5%",))
    with pytest.raises(UserError, match="median_tpot_ms is lower is better"):
        compare_runs.parse_tolerances(("median_tpot_ms:-5%",))


def test_a_metric_that_measured_zero_is_not_compared(tmp_path):
    """Answers that arrive in one chunk have no time between tokens: TPOT 0 is no improvement."""
    baseline = write_perf(tmp_path / "a", [point_run(20, 0.010, 0.05, 0.05, seed=1)])
    bunched = point_run(20, 0.010, 0.05, 0.05, seed=2)
    for record in bunched.records:
        record.chunk_s = [record.chunk_s[0]] * len(record.chunk_s)
    candidate = write_perf(tmp_path / "b", [bunched])
    tpot = verdicts(baseline, candidate)["median_tpot_ms"]
    assert tpot.status == "not compared" and tpot.detail.startswith("median_tpot_ms is 0 in the candidate")
    assert verdicts(candidate, baseline)["median_tpot_ms"].detail.startswith("median_tpot_ms is 0 in the baseline")
