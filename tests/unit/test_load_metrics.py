"""The metric math on constructed timings: every number is worked out by hand from vLLM's definitions
(llmconform/perf/load_metrics.py docstring)."""

import math

import pytest

from llmconform.config.floor_rules import METRICS, higher_is_better
from llmconform.config.workloads import LoadPoint, Slo
from llmconform.perf.load_metrics import VLLM_RESULT_KEYS, client_overhead, compute, delivery, not_measurable, summarize
from llmconform.perf.records import ClientStats, PointRun, RequestRecord


def record(index, sent, chunks, completion=None, prompt=None, expected_in=4, expected_out=None, error=None,
           text_tokens=None):
    return RequestRecord(index=index, expected_input_tokens=expected_in,
                         expected_output_tokens=expected_out if expected_out is not None else len(chunks),
                         sent_s=sent, chunk_s=list(chunks), completion_tokens=completion, prompt_tokens=prompt,
                         error=error, text_tokens=text_tokens, status=200 if error is None else 500)


def two_requests():
    # A: sent 0.0, chunks at 0.1, 0.3, 0.6 -> TTFT 100 ms, E2EL 600 ms, ITLs 200/300 ms, TPOT (0.6-0.1)/2 = 250 ms
    # B: sent 0.5, chunks at 0.9, 1.0     -> TTFT 400 ms, E2EL 500 ms, ITL 100 ms,      TPOT (0.5-0.4)/1 = 100 ms
    return [record(0, 0.0, [0.1, 0.3, 0.6], completion=3, prompt=4),
            record(1, 0.5, [0.9, 1.0], completion=2, prompt=4)]


def test_latencies_follow_vllm_definitions():
    m = compute(two_requests(), duration_s=2.0)
    assert m.ttft.mean == pytest.approx(250.0) and m.ttft.median == pytest.approx(250.0)
    assert m.e2el.mean == pytest.approx(550.0)
    assert m.tpot.mean == pytest.approx(175.0) and m.tpot.std == pytest.approx(75.0)
    # ITL pools every gap of every request: 200, 300, 100 ms
    assert m.itl.mean == pytest.approx(200.0) and m.itl.median == pytest.approx(200.0)
    # numpy linear interpolation: p90 of [100, 200, 300] = 200 + 0.8 * 100
    assert m.itl.p90 == pytest.approx(280.0) and m.itl.p99 == pytest.approx(298.0)


def test_throughputs_divide_by_the_run_duration():
    m = compute(two_requests(), duration_s=2.0)
    assert (m.completed, m.failed) == (2, 0)
    assert (m.total_input_tokens, m.total_output_tokens) == (8, 5)
    assert m.requests_per_s == pytest.approx(1.0)
    assert m.output_tok_s == pytest.approx(2.5)
    assert m.total_tok_s == pytest.approx(6.5)
    assert m.goodput_requests_per_s is None


def test_output_tokens_come_from_usage_not_from_chunk_count():
    # One chunk may carry several tokens: 2 chunks, 9 tokens -> TPOT = 0.4 / 8
    m = compute([record(0, 0.0, [0.1, 0.5], completion=9)], duration_s=1.0)
    assert m.total_output_tokens == 9
    assert m.tpot.mean == pytest.approx(50.0)
    assert m.itl.mean == pytest.approx(400.0)


def test_missing_usage_falls_back_to_retokenised_text_then_to_one():
    with_text = compute([record(0, 0.0, [0.1, 0.2, 0.3], text_tokens=5)], duration_s=1.0)
    assert with_text.total_output_tokens == 5
    bare = compute([record(0, 0.0, [0.1, 0.2, 0.3])], duration_s=1.0)
    assert bare.total_output_tokens == 1
    assert bare.tpot.mean == 0.0  # one output token: no TPOT sample


def test_failed_requests_count_no_tokens_and_no_latency():
    records = [*two_requests(), record(2, 0.2, [], error="HTTP 500: boom"),
               record(3, 0.3, [0.4], completion=1, error="error event: {}")]
    m = compute(records, duration_s=2.0)
    assert (m.completed, m.failed) == (2, 2)
    assert m.total_output_tokens == 5 and m.total_input_tokens == 8
    assert m.ttft.mean == pytest.approx(250.0)


def test_a_stream_without_choice_chunks_is_a_failure():
    assert not record(0, 0.0, []).ok


def test_no_successes_give_zero_not_nan():
    m = compute([record(0, 0.0, [], error="refused")], duration_s=1.0)
    assert m.completed == 0 and m.output_tok_s == 0.0
    assert all(v == 0.0 for v in (m.ttft.mean, m.ttft.p99, m.tpot.median, m.itl.p90, m.e2el.std))
    assert (m.max_output_tok_s, m.max_concurrent_requests) == (0.0, 0)


def test_goodput_counts_requests_meeting_every_slo():
    records = two_requests()
    assert compute(records, 2.0, Slo(ttft_ms=300)).goodput_requests_per_s == pytest.approx(0.5)  # only A
    assert compute(records, 2.0, Slo(ttft_ms=400)).goodput_requests_per_s == pytest.approx(1.0)  # <= is good
    assert compute(records, 2.0, Slo(ttft_ms=400, tpot_ms=200)).goodput_requests_per_s == pytest.approx(0.5)  # B
    assert compute(records, 2.0, Slo(e2el_ms=100)).goodput_requests_per_s == 0.0


def test_one_token_requests_have_tpot_zero_for_goodput():
    m = compute([record(0, 0.0, [0.05], completion=1)], 1.0, Slo(tpot_ms=1))
    assert m.goodput_requests_per_s == pytest.approx(1.0)


def test_peaks_use_one_second_buckets_from_the_first_send():
    # Bucket 0 gets chunks 0.1, 0.3, 0.6, 0.9 (4), bucket 1 gets 1.0; A is active in bucket 0, B in 0 and 1.
    m = compute(two_requests(), duration_s=2.0)
    assert m.max_output_tok_s == 4.0
    assert m.max_concurrent_requests == 2


def test_length_mismatches_are_counted_against_the_prompt_and_max_tokens():
    records = [record(0, 0.0, [0.1, 0.2], completion=2, prompt=5, expected_in=4, expected_out=2),
               record(1, 0.0, [0.1, 0.2], completion=2, prompt=4, expected_in=4, expected_out=3)]
    m = compute(records, 1.0)
    assert (m.prompt_length_mismatches, m.output_length_mismatches) == (1, 1)
    assert m.total_input_tokens == 9  # the server's count wins


def test_every_metric_is_readable_by_name_and_mapped_to_vllm():
    m = compute(two_requests(), 2.0, Slo(ttft_ms=1000))
    flat = m.flat()
    for name in METRICS:
        assert flat[name] == m.value(name)
        assert name in VLLM_RESULT_KEYS
    assert flat["p99_ttft_ms"] == pytest.approx(397.0)
    assert higher_is_better("output_tok_s") and not higher_is_better("p99_ttft_ms")


def test_client_overhead_share_of_itl():
    records = two_requests()
    m = compute(records, 2.0)
    # 0.01 s CPU over 10 chunks = 1 ms per chunk; streams decoding (first to last chunk) = (0.5 + 0.1) / 2 = 0.3,
    # not the (0.6 + 0.5) / 2 in flight: a stream waiting for its first token delivers nothing; median ITL 200 ms
    overhead = client_overhead(ClientStats(cpu_s=0.01, chunks=10, loop_lag_p99_ms=0.1, loop_lag_max_ms=0.2), m,
                               records)
    assert overhead.cpu_us_per_chunk == pytest.approx(1000.0)
    assert overhead.share_of_itl == pytest.approx(0.001 * 0.3 / 0.2)
    assert overhead.busy_fraction == pytest.approx(0.005)
    assert overhead.warning is None and overhead.bound is None
    visible = client_overhead(ClientStats(cpu_s=0.5, chunks=10, loop_lag_p99_ms=39.0, loop_lag_max_ms=39.0), m,
                              records)
    assert visible.share_of_itl == pytest.approx(0.05 * 0.3 / 0.2) and visible.bound is None
    assert "8% of each ITL window" in visible.warning


def test_a_client_bound_point_is_invalid():
    records = two_requests()
    m = compute(records, 2.0)
    # 0.5 s per chunk: 75% of each ITL window, though the client was busy only half of the run
    heavy = client_overhead(ClientStats(cpu_s=1.0, chunks=2, loop_lag_p99_ms=0.1, loop_lag_max_ms=0.2), m, records)
    assert heavy.share_of_itl == pytest.approx(0.5 * 0.3 / 0.2) and heavy.busy_fraction == pytest.approx(0.5)
    assert "75% of each ITL window" in heavy.bound and heavy.warning.startswith("client-bound")
    assert "busy" not in heavy.bound
    laggy = client_overhead(ClientStats(cpu_s=0.01, chunks=10, loop_lag_p99_ms=250.0, loop_lag_max_ms=300.0,
                                        loop_lag_p50_ms=210.0), m, records)
    assert "event loop ran 210.00 ms late (p50)" in laggy.bound
    spike = client_overhead(ClientStats(cpu_s=0.01, chunks=10, loop_lag_p99_ms=250.0, loop_lag_max_ms=300.0,
                                        loop_lag_p50_ms=1.0), m, records)
    assert spike.bound is None and "event loop ran 250.00 ms late (p99)" in spike.warning
    coarse = client_overhead(ClientStats(cpu_s=0.01, chunks=10, loop_lag_p99_ms=50.0, loop_lag_max_ms=80.0), m,
                             records)
    assert coarse.bound is None and "event loop ran 50.00 ms late" in coarse.warning


def test_a_late_loop_against_bunched_chunks_is_client_bound():
    # all chunks of a stream in one read (median ITL 0): the loop's lag is held against the mean TPOT instead
    records = [record(0, 0.0, [0.1, 0.1, 0.1, 0.4, 0.4], completion=5)]  # TPOT (0.4 - 0.1) / 4 = 75 ms
    m = compute(records, 1.0)
    assert m.itl.median == 0.0
    late = client_overhead(ClientStats(cpu_s=0.01, chunks=6, loop_lag_p99_ms=90.0, loop_lag_max_ms=90.0,
                                       loop_lag_p50_ms=80.0), m, records)
    assert "80.00 ms late (p50), more than the mean TPOT of 75.00 ms" in late.bound
    prompt = client_overhead(ClientStats(cpu_s=0.01, chunks=6, loop_lag_p99_ms=1.0, loop_lag_max_ms=1.0,
                                         loop_lag_p50_ms=0.1), m, records)
    assert prompt.bound is None


def test_the_busiest_worker_decides():
    # worker 0 sent request A, worker 1 request B; worker 1 burnt 1.9 of the 2 s: saturated, though the mean is not
    records = two_requests()
    records[1].worker = 1
    m = compute(records, 2.0)
    stats = ClientStats(cpu_s=1.92, chunks=10, loop_lag_p99_ms=0.1, loop_lag_max_ms=0.2, workers=2,
                        worker_cpu_s=[0.02, 1.9], worker_chunks=[5, 5])
    overhead = client_overhead(stats, m, records)
    assert overhead.busy_fraction == pytest.approx(0.95) and overhead.workers == 2
    assert "busy 95% of the run" in overhead.bound
    # worker 1: 380 ms per chunk x 0.05 streams decoding (B: 0.9 to 1.0 of 2 s) / 200 ms median ITL
    assert overhead.share_of_itl == pytest.approx(0.38 * 0.05 / 0.2)
    assert "9% of each ITL window (380000 us per chunk x " in overhead.warning
    assert "streams decoding on worker 1 of 2" in overhead.warning


def test_bunched_delivery_makes_itl_and_tpot_not_measurable():
    smooth = delivery(two_requests())
    assert smooth.not_measurable == {} and smooth.zero_itl_share == 0.0
    # every stream in one read: chunks share their timestamps
    bunched = delivery([record(0, 0.0, [0.5, 0.5, 0.5], completion=3), record(1, 0.1, [0.7, 0.7], completion=2)])
    assert bunched.zero_itl_share == 1.0 and bunched.one_read_share == 1.0
    assert set(bunched.not_measurable) == {"itl", "tpot"}
    # one chunk carrying all 64 tokens: no gap at all
    whole = delivery([record(0, 0.0, [0.5], completion=64)])
    assert "one chunk" in whole.not_measurable["itl"] and "tpot" in whole.not_measurable
    # pairs of chunks per read: ITL is not measurable, TPOT (first to last chunk) still is
    pairs = delivery([record(0, 0.0, [0.1, 0.1, 0.3, 0.3], completion=4)])
    assert set(pairs.not_measurable) == {"itl"}
    point = {"delivery": bunched.as_dict()}
    assert not_measurable("p99_itl_ms", point) and not_measurable("median_tpot_ms", point)
    assert not_measurable("median_ttft_ms", point) is None


def test_summary_names_the_point():
    run = PointRun(workload="w", point=LoadPoint(requests=2, warmup=0, rate=math.inf, max_concurrency=8),
                   records=two_requests(), duration_s=2.0,
                   client=ClientStats(cpu_s=0.0, chunks=5, loop_lag_p99_ms=0.0, loop_lag_max_ms=0.0),
                   sent_ignore_eos=True)
    summary = summarize(run, input_tokens=4, output_tokens=3).as_dict()
    assert summary["point"] == "rinf-c8" and summary["rate"] == "inf"
    assert summary["metrics"]["output_tok_s"] == pytest.approx(2.5)
