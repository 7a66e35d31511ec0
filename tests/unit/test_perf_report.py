"""The perf report section: summary JSON (also the baseline format), markdown tables, plots."""

import json
import sys

from llmconform.perf import floors
from llmconform.reports import perf_section
from llmconform.reports.report_dir import ReportDir

SERVER = {"id": "vllm-qwen2-tiny-tp1", "engine": "vllm", "engine_version": "0.32.0", "layout": "tp1",
          "model": "qwen2-tiny"}


def metrics(output):
    stats = {f"{s}_{n}_ms": 10.0 for n in ("ttft", "tpot", "itl", "e2el") for s in ("mean", "median", "std", "p90",
                                                                                  "p99")}
    return {"completed": 16, "output_tok_s": output, "requests_per_s": 2.0, "goodput_requests_per_s": None, **stats}


def point(label, concurrency, rate, output, roofline=None):
    row = {"workload": "w", "point": label, "concurrency": concurrency, "rate": rate, "requests": 16,
           "input_tokens": 128, "output_tokens": 64, "metrics": metrics(output), "client": {"share_of_itl": 0.1}}
    if roofline:
        row["roofline"] = {"fraction": roofline}
    return row


def results():
    perf_property = {"hardware": "H100-SXM", "gpu_name": "NVIDIA H100 80GB HBM3", "problems": [], "warnings": [],
                     "points": [point("c1", 1, None, 150.0, roofline=0.67), point("c64", 64, None, 4900.0),
                                point("r4", None, 4.0, 500.0), point("rinf", None, "inf", 5000.0)]}
    rate_point = perf_property["points"][2]
    rate_point["traffic"] = {"offered_requests_per_s": 4.0, "sent_requests_per_s": 3.5}
    rate_point["invalid"] = "the busiest client worker was busy 97% of the run (1 worker process(es))"
    rate_point["delivery"] = {"not_measurable": {"itl": "bunched delivery: 80% of the gaps between chunks are 0"}}
    verdicts = [{"floor": "output_tok_s >= 4000 at concurrency 64", "status": "pass", "detail": "ok",
                 "workload": "w", "point": "c64"},
                {"floor": "p99_ttft_ms <= 1", "status": "fail", "detail": "p99_ttft_ms = 10 (floor <= 1)",
                 "workload": "w", "point": "c1"}]
    return [{"nodeid": "a", "properties": {"llm": SERVER, "perf": perf_property}},
            {"nodeid": "b", "properties": {"llm": SERVER, "floors": verdicts}},
            {"nodeid": "c", "properties": {"llm": SERVER}}]


def test_report_files_and_lines(tmp_path):
    lines = perf_section.write_report(ReportDir(tmp_path), results())
    assert lines[0] == "perf: 1 case(s), 4 measured point(s)"
    flags = lines[1:lines.index("floors: 1 pass, 1 fail, 0 skip")]
    assert flags == ["  FLAG vllm-qwen2-tiny-tp1 w r4: INVALID: the busiest client worker was busy 97% of the run "
                     "(1 worker process(es))",
                     "  FLAG vllm-qwen2-tiny-tp1 w r4: ITL not measurable: " + flags[1].split("not measurable: ")[1],
                     "  FLAG vllm-qwen2-tiny-tp1 w r4: achieved 2.00 req/s of 4 offered (50%): the server did "
                     "not keep up"]
    assert lines[len(flags) + 2].startswith("  FAIL vllm-qwen2-tiny-tp1: p99_ttft_ms <= 1 [w c1]")
    markdown = (tmp_path / "perf.md").read_text()
    assert "## vllm-qwen2-tiny-tp1 / w" in markdown and "on H100-SXM (NVIDIA H100 80GB HBM3)" in markdown
    assert "| c1 | 16/16 | 2.00 | 150.0 |" in markdown and "| 10% (1w) | - | - | 67% | - |" in markdown
    assert "| 10% (1w) | 4.00 | 3.50 | - | INVALID bunched (ITL not measurable) |" in markdown
    assert "- r4: INVALID: the busiest client worker was busy 97% of the run" in markdown
    assert "- r4: ITL not measurable: bunched delivery: 80% of the gaps between chunks are 0" in markdown
    assert "| vllm-qwen2-tiny-tp1 | `p99_ttft_ms <= 1` | w c1 | fail |" in markdown
    assert "- r4: achieved 2.00 req/s of 4 offered" in markdown
    for name in ("perf-curves.png", "perf-latency.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_summary_is_a_baseline(tmp_path):
    perf_section.write_report(ReportDir(tmp_path), results())
    summary = json.loads(ReportDir(tmp_path).perf_summary.read_text())
    assert {r["point"] for r in summary["runs"]} == {"c1", "c64", "r4", "rinf"}
    baseline = floors.load_baseline(ReportDir(tmp_path).perf_summary)
    assert baseline.find("vllm-qwen2-tiny-tp1", "w", "c64")["metrics"]["output_tok_s"] == 4900.0
    assert baseline.find("vllm-qwen2-tiny-tp1", "w", "c64")["hardware"] == "H100-SXM"


def test_no_perf_results_no_section(tmp_path):
    assert perf_section.write_report(ReportDir(tmp_path), [{"nodeid": "x", "properties": {"llm": SERVER}}]) == []
    assert not (tmp_path / "perf.md").exists()


def test_plots_are_optional(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    lines = perf_section.write_report(ReportDir(tmp_path), results())
    assert lines[-1] == "perf plots skipped: matplotlib is not installed (pip install llmconform[plots])"
    assert (tmp_path / "perf.md").exists() and not (tmp_path / "perf-latency.png").exists()


def with_metrics(row, **changes):
    return {**row, "metrics": {**row["metrics"], **changes}}


def test_flags_say_what_the_numbers_do_not():
    c1, c8, c32 = point("c1", 1, None, 100.0), point("c8", 8, None, 2802.0), point("c32", 32, None, 567.0)
    assert perf_section.point_flags(c1) == [] and perf_section.point_flags(c8, [c1]) == []
    saturated = perf_section.point_flags(with_metrics(c32, p99_ttft_ms=10000.0), [c1, c8])
    assert saturated == ["saturated: 567 out tok/s, below 2802 at c8 (TTFT p99 10000 ms)"]
    bunched = perf_section.point_flags({**with_metrics(c1, median_tpot_ms=0.0),
                                "delivery": {"not_measurable": {"tpot": "bunched delivery"}}})
    assert bunched == ["TPOT not measurable: bunched delivery"]  # the load generator's verdict, shown as it is
    assert perf_section.point_flags(with_metrics(point("r4", None, 4.0, 1.0), requests_per_s=3.5)) == []
    assert "achieved 1.41 req/s of 4 offered (35%)" in perf_section.point_flags(
        with_metrics(point("r4", None, 4.0, 1.0), requests_per_s=1.41))[0]
    noisy = perf_section.point_flags(with_metrics(c1, median_tpot_ms=2.0, p99_tpot_ms=9.0))
    assert noisy == ["noisy: single-stream TPOT p99 9.00 ms is 4.5x its median (other load on the machine?)"]
    assert perf_section.point_flags(with_metrics(c1, completed=0)) == ["no request completed"]


def test_point_line_has_the_key_numbers_and_flags():
    line = perf_section.point_line(point("c8", 8, None, 2802.0), ["saturated: x"])
    assert line == ("16/16 ok, 2,802 out tok/s, 2.00 req/s, TTFT p50/p99 10/10 ms, TPOT p50 10.00 ms; "
                    "FLAG saturated: x")


def test_no_latency_sweep_plot_for_single_points(tmp_path):
    single = [{"nodeid": "a", "properties": {"llm": SERVER, "perf": {
        "hardware": "cpu", "problems": [], "warnings": [], "points": [point("r4", None, 4.0, 500.0)]}}}]
    lines = perf_section.write_report(ReportDir(tmp_path), single)
    assert lines[-1] == f"perf plots: {tmp_path / 'perf-curves.png'}"
    assert not (tmp_path / "perf-latency.png").exists()
