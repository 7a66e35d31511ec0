"""`llmconform compare`: regression verdicts between two report dirs, built here with the report files' formats."""

import json

import pytest

from llmconform import regression
from llmconform.cli import main
from llmconform.compare import Generation, Step
from llmconform.equivalence import OUTPUTS_DIR, LayoutOutputs
from llmconform.errors import UserError

CASE = "vllm-m-tp2"


def node(test: str) -> str:
    return f"suites/test_openai_x.py::{test}[{CASE}]"


def record(test: str, outcome: str, when: str = "call", version: str = "0.32.0", **extra) -> dict:
    llm = {"id": CASE, "engine": "vllm", "engine_version": version, "layout": "tp2", "model": "m"}
    return {"nodeid": node(test), "when": when, "outcome": outcome, "duration_s": 0.1, "properties": {"llm": llm},
            **extra}


def generation(prompt: str, tokens: list[str]) -> Generation:
    steps = tuple(Step(t, -0.1, ((t, -0.1), ("other", -3.0))) for t in tokens)
    return Generation(prompt=prompt, text="".join(tokens), tokens=tuple(tokens), steps=steps, finish_reason="length",
                      usage={"prompt_tokens": 3, "completion_tokens": len(tokens), "total_tokens": 3 + len(tokens)},
                      identity="token ids", prompt_token_ids=(1, 2, 3))


def outputs(tokens: list[str], dtype: str = "float32", failure: str | None = None,
            first: dict[str, int] | None = None) -> LayoutOutputs:
    answers = [generation("greeting", tokens), generation("story", ["a", "b"])]
    return LayoutOutputs(case_id=CASE, engine="vllm", engine_version="0.32.0", model="m", layout="tp2", dtype=dtype,
                         run="r", generations={} if failure else {"completions-text": answers, "chat": answers},
                         first_tokens={"greeting": first or {"x": 300, "y": 200}}, failure=failure)


def point(tok_s: float, hardware: str = "cpu", gpu_name: str | None = None) -> dict:
    return {"case": CASE, "workload": "w", "point": "c1", "concurrency": 1, "rate": None, "hardware": hardware,
            "gpu_name": gpu_name, "metrics": {"output_tok_s": tok_s, "median_tpot_ms": 10.0, "median_ttft_ms": 50.0}}


def write_run(directory, records, layout_outputs=None, perf=None):
    directory.mkdir()
    (directory / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if layout_outputs:
        (directory / OUTPUTS_DIR).mkdir()
        (directory / OUTPUTS_DIR / f"{CASE}.json").write_text(json.dumps(layout_outputs.to_dict()))
    if perf:
        (directory / "perf-summary.json").write_text(json.dumps({"version": 1, "runs": perf, "floors": []}))
    return directory


def statuses(comparison, area):
    return {f.subject: f.status for f in comparison.findings if f.area == area}


def test_test_outcomes_that_got_worse_are_regressions_and_better_ones_improvements(tmp_path):
    baseline = write_run(tmp_path / "a", [
        record("kept", "passed"), record("broke", "passed"), record("became_deviation", "passed"),
        record("fixed", "failed", error="E   AssertionError: 500"), record("still", "failed", error="x"),
        record("gone", "passed"), record("setup_broke", "passed")])
    candidate = write_run(tmp_path / "b", [
        record("kept", "passed", version="0.33.0"),
        record("broke", "failed", version="0.33.0", error="    assert r.status == 400\nE   AssertionError: got 200"),
        record("became_deviation", "skipped", xfail_reason="vLLM accepts n: 129"),
        record("fixed", "passed"), record("still", "failed", error="x"), record("new", "failed", error="E   boom"),
        record("setup_broke", "failed", when="setup", error="E   server died"),
        record("setup_broke", "passed", when="teardown")])
    comparison = regression.compare_runs(baseline, candidate)
    tests = statuses(comparison, "tests")
    assert tests == {node("kept"): "unchanged", node("broke"): "regressed", node("became_deviation"): "regressed",
                     node("fixed"): "improved", node("still"): "still failing", node("gone"): "not compared",
                     node("new"): "regressed", node("setup_broke"): "regressed"}
    details = {f.subject: f.detail for f in comparison.findings}
    assert details[node("broke")] == "passed, now fails: AssertionError: got 200"
    assert details[node("became_deviation")].endswith("known engine failure: vLLM accepts n: 129")
    assert details[node("setup_broke")] == "passed, now fails: server died"
    assert comparison.versions == {"baseline": ["vllm 0.32.0"], "candidate": ["vllm 0.32.0", "vllm 0.33.0"]}


def test_changed_greedy_outputs_regress_under_the_dtype_comparator(tmp_path):
    same = [record("kept", "passed")]
    baseline = write_run(tmp_path / "a", same, outputs(["x", "y", "z"]))
    unchanged = write_run(tmp_path / "b", same, outputs(["x", "y", "z"]))
    changed = write_run(tmp_path / "c", same, outputs(["x", "q", "z"]))
    assert set(statuses(regression.compare_runs(baseline, unchanged), "outputs").values()) == {"unchanged"}
    comparison = regression.compare_runs(baseline, changed)
    found = statuses(comparison, "outputs")
    assert found[f"{CASE} completions-text"] == "regressed" and found[f"{CASE} chat"] == "regressed"
    assert found[f"{CASE} first-token-distribution"] == "unchanged"
    detail = next(f.detail for f in comparison.regressions if f.subject == f"{CASE} chat")
    assert "exact" in detail and "generated token 1" in detail  # says where it diverged


def test_a_shifted_first_token_distribution_and_a_lost_probe_set_regress(tmp_path):
    same = [record("kept", "passed")]
    baseline = write_run(tmp_path / "a", same, outputs(["x"]))
    shifted = write_run(tmp_path / "b", same, outputs(["x"], first={"x": 100, "y": 400}))
    broken = write_run(tmp_path / "c", same, outputs(["x"], failure="HTTP 500 on completions-text"))
    assert statuses(regression.compare_runs(baseline, shifted), "outputs")[
        f"{CASE} first-token-distribution"] == "regressed"
    lost = regression.compare_runs(baseline, broken)
    assert statuses(lost, "outputs") == {CASE: "regressed"}
    assert "HTTP 500" in lost.regressions[0].detail


def test_perf_moves_past_the_tolerance_on_the_same_hardware_only(tmp_path):
    same = [record("kept", "passed")]
    baseline = write_run(tmp_path / "a", same, perf=[point(100.0)])
    slower = write_run(tmp_path / "b", same, perf=[point(85.0)])
    noise = write_run(tmp_path / "c", same, perf=[point(95.0)])
    elsewhere = write_run(tmp_path / "d", same, perf=[point(50.0, "H100-SXM", "NVIDIA H100 80GB HBM3")])
    verdict = regression.compare_runs(baseline, slower)
    assert [f.detail for f in verdict.regressions] == [
        "output_tok_s = 85 vs baseline 100 (-15.0%; allowed -10%)"]
    assert not regression.compare_runs(baseline, noise).regressions
    assert not regression.compare_runs(baseline, noise, ("output_tok_s:-10%",)).regressions
    assert regression.compare_runs(baseline, noise, ("output_tok_s:-2%",)).regressions
    moved = regression.compare_runs(baseline, elsewhere)
    assert not moved.regressions
    assert {f.detail for f in moved.findings if f.area == "perf"} == {
        "baseline measured on cpu, this run on H100-SXM"}


def test_cli_exits_1_on_regression_0_without_and_writes_both_reports(tmp_path, capsys):
    baseline = write_run(tmp_path / "a", [record("t", "passed")])
    good = write_run(tmp_path / "b", [record("t", "passed")])
    bad = write_run(tmp_path / "c", [record("t", "failed", error="E   nope")])
    assert main(["compare", str(baseline), str(good)]) == 0
    assert "**0 regression(s)**" in capsys.readouterr().out
    assert main(["compare", str(baseline), str(bad), "--out", str(tmp_path)]) == 1
    assert "**regressed** `suites/test_openai_x.py::t[vllm-m-tp2]`: passed, now fails: nope" in capsys.readouterr().out
    saved = json.loads((tmp_path / "regression.json").read_text())
    assert saved["regressions"] == 1 and (tmp_path / "regression.md").is_file()


def test_runs_without_anything_in_common_or_bad_tolerances_are_user_errors(tmp_path, capsys):
    baseline = write_run(tmp_path / "a", [record("t", "passed")])
    other = write_run(tmp_path / "b", [])
    with pytest.raises(UserError, match="no test, case output or perf point in common"):
        regression.compare_runs(baseline, other)
    assert main(["compare", str(baseline), str(tmp_path / "missing")]) == 2
    assert "missing: no such folder" in capsys.readouterr().err
    assert main(["compare", str(baseline), str(baseline), "--perf", "output_tok_s >= 5"]) == 2
    assert "a tolerance is METRIC:-X% or METRIC:+X%" in capsys.readouterr().err
