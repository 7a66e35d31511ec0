"""`llmconform compare`: regression verdicts between two report dirs, built here with the report files' formats."""

import json

import pytest

from llmconform.cli import main
from llmconform.equivalence.comparators import Generation, Step
from llmconform.equivalence.policy import LayoutOutputs
from llmconform.errors import UserError
from llmconform.reports import regression
from llmconform.reports.report_dir import ReportDir

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


def write_run(directory, records, layout_outputs=None):
    directory.mkdir()
    report = ReportDir(directory)
    report.results.write_text("".join(json.dumps(r) + "\n" for r in records))
    if layout_outputs:
        report.equivalence_outputs(CASE).parent.mkdir()
        report.equivalence_outputs(CASE).write_text(json.dumps(layout_outputs.to_dict()))
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
    assert details[node("broke")] == "conforms, now fails: AssertionError: got 200"
    assert details[node("became_deviation")] == "conforms, now a known engine failure: vLLM accepts n: 129"
    assert details[node("setup_broke")] == "conforms, now fails: server died"
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


def test_cli_exits_1_on_regression_0_without_and_writes_both_reports(tmp_path, capsys):
    baseline = write_run(tmp_path / "a", [record("t", "passed")])
    good = write_run(tmp_path / "b", [record("t", "passed")])
    bad = write_run(tmp_path / "c", [record("t", "failed", error="E   nope")])
    assert main(["compare", str(baseline), str(good)]) == 0
    assert "**0 regression(s)**" in capsys.readouterr().out
    assert main(["compare", str(baseline), str(bad), "--out", str(tmp_path)]) == 1
    regressed = "**regressed** `suites/test_openai_x.py::t[vllm-m-tp2]`: conforms, now fails: nope"
    assert regressed in capsys.readouterr().out
    saved = json.loads((tmp_path / "regression.json").read_text())
    assert saved["regressions"] == 1 and (tmp_path / "regression.md").is_file()


def test_runs_without_anything_in_common_or_bad_tolerances_are_user_errors(tmp_path, capsys):
    baseline = write_run(tmp_path / "a", [record("t", "passed")])
    other = write_run(tmp_path / "b", [])
    with pytest.raises(UserError, match="no test, case output or perf point in common that ran"):
        regression.compare_runs(baseline, other)
    assert main(["compare", str(baseline), str(tmp_path / "missing")]) == 2
    assert "missing: no such folder" in capsys.readouterr().err
    assert main(["compare", str(baseline), str(baseline), "--perf", "output_tok_s >= 5"]) == 2
    assert "a tolerance is METRIC:-X% or METRIC:+X%" in capsys.readouterr().err


# --- judged by behaviour: declared deviations whatever their version range -------------------------------------------
DEVIATION = {"engine": "vllm", "versions": ">=0.26,<0.33", "check": "test_error_object_fields*",
             "match": r"body\.error\.code: expected string, got integer", "reason": "error.code is an integer"}


def conformance_record(test: str, outcome: str, version: str, problems: list[str] | None, deviation=None, **extra):
    """A conformance check's record as the suites write it (problems recorded whatever the outcome)."""
    result = record(test, outcome, version=version, **extra)
    check = {"check": test, "spec": "s", "engine_version": version, "deviation": deviation}
    if problems is not None:
        check["problems"] = problems
    result["properties"]["conformance"] = check
    return result


def write_identity(directory, deviations: list[dict], gpu=None, servers: dict | None = None):
    report = ReportDir(directory)
    report.run_identity.write_text(json.dumps({
        "llmconform": "0.1.0", "argv": ["pytest"], "gpu": gpu, "python": "3.11", "deviation_files": ["x.yaml"],
        "deviations": deviations}))
    for case_id, server in (servers or {}).items():
        report.server(case_id).create()
        report.server(case_id).record.write_text(json.dumps({"case": case_id, **server}))


def upgrade_pair(tmp_path):
    """0.25.1 (outside the deviation's declared range: the check fails with exactly the declared behaviour, and a real
    bug crashes a request) and 0.26.0 (inside it: strict xfail; the bug fixed)."""
    problem = "body.error.code: expected string, got integer 400"
    old = write_run(tmp_path / "old", [
        conformance_record("test_error_object_fields", "failed", "0.25.1", [problem],
                           error=f"test_error_object_fields (spec):\n  {problem}"),
        conformance_record("test_n_zero", "failed", "0.25.1", ["connection reset"], error="x\n  connection reset"),
        record("test_skipped_here", "skipped", version="0.25.1", skip_reason="needs two nodes")])
    new = write_run(tmp_path / "new", [
        conformance_record("test_error_object_fields", "skipped", "0.26.0", [problem],
                           deviation=DEVIATION["reason"], xfail_reason=DEVIATION["reason"]),
        conformance_record("test_n_zero", "passed", "0.26.0", []),
        record("test_skipped_here", "skipped", version="0.26.0", skip_reason="needs two nodes")])
    for directory in (old, new):
        write_identity(directory, [DEVIATION])
    return old, new


def test_a_declared_deviation_outside_its_range_is_the_same_behaviour_in_both_directions(tmp_path, capsys):
    old, new = upgrade_pair(tmp_path)
    for baseline, candidate, seen in ((old, new, "baseline (vllm 0.25.1)"), (new, old, "candidate (vllm 0.25.1)")):
        comparison = regression.compare_runs(baseline, candidate)
        tests = statuses(comparison, "tests")
        assert tests[node("test_error_object_fields")] == regression.OUTSIDE_RANGE
        detail = next(f.detail for f in comparison.findings if f.subject == node("test_error_object_fields"))
        assert detail == (f"same behaviour in both runs: error.code is an integer (seen in the {seen}, declared for "
                          f">=0.26,<0.33)")
        assert tests[node("test_skipped_here")] == "skipped in both"
        markdown = comparison.to_markdown()
        assert "needs two nodes" not in markdown and "1 skipped in both" in markdown
    assert statuses(regression.compare_runs(old, new), "tests")[node("test_n_zero")] == "improved"
    assert main(["compare", str(new), str(old), "--out", str(tmp_path / "back")]) == 1  # only the real bug is back
    verdict = json.loads((tmp_path / "back" / "regression.json").read_text())
    assert [f["subject"] for f in verdict["findings"] if f["status"] == "regressed"] == [node("test_n_zero")]


def test_the_deviations_each_run_declared_are_the_ones_that_explain(tmp_path):
    """A deviation file that only one run declared (LLMCONFORM_DEVIATIONS) still explains the other run's failure;
    one that nobody declared does not."""
    problem = "body.error.code: expected string, got integer 400"
    own = {**DEVIATION, "check": "test_own_check", "versions": ">=0.32"}
    baseline = write_run(tmp_path / "a", [conformance_record("test_own_check", "skipped", "0.32.0", [problem],
                                                             deviation=own["reason"], xfail_reason=own["reason"])])
    candidate = write_run(tmp_path / "b", [conformance_record("test_own_check", "failed", "0.32.0", [problem],
                                                              error="x")])
    write_identity(baseline, [own])
    write_identity(candidate, [{**own, "versions": "<0.32"}])
    found = regression.compare_runs(baseline, candidate).findings
    assert [(f.status, f.detail) for f in found] == [(regression.OUTSIDE_RANGE, (
        "same behaviour in both runs: error.code is an integer (seen in the candidate (vllm 0.32.0), declared for "
        "<0.32)"))]
    write_identity_none = tmp_path / "c"
    write_run(write_identity_none, [conformance_record("test_own_check", "failed", "0.32.0", [problem], error="x")])
    write_identity(write_identity_none, [])
    write_identity(baseline, [])  # neither declares it: a declared deviation's xfail label alone is no behaviour
    assert statuses(regression.compare_runs(baseline, write_identity_none), "tests") == {
        node("test_own_check"): "regressed"}


def test_runs_from_before_problems_were_recorded_are_judged_by_their_failure_text(tmp_path):
    problem = "body.error.code: expected string, got integer 404"
    old = write_run(tmp_path / "a", [conformance_record("test_error_object_fields", "failed", "0.25.1", None,
                                                        error=f"test_error_object_fields (spec):\n  {problem}")])
    new = write_run(tmp_path / "b", [conformance_record("test_error_object_fields", "skipped", "0.26.0", None,
                                                        xfail_reason=DEVIATION["reason"])])
    for directory in (old, new):
        write_identity(directory, [DEVIATION])
    assert statuses(regression.compare_runs(old, new), "tests") == {
        node("test_error_object_fields"): regression.OUTSIDE_RANGE}


def test_behaviour_changes_between_deviations_failures_and_conformance(tmp_path):
    problem = "body.error.code: expected string, got integer 400"
    other = "body.error.message: missing"
    strict_xpass = "[XPASS(strict)] error.code is an integer"
    baseline = write_run(tmp_path / "a", [
        conformance_record("test_error_object_fields[a]", "skipped", "0.26.0", [problem], xfail_reason="r"),
        conformance_record("test_error_object_fields[b]", "skipped", "0.26.0", [problem], xfail_reason="r"),
        conformance_record("test_error_object_fields[c]", "skipped", "0.26.0", [problem], xfail_reason="r"),
        conformance_record("test_error_object_fields[d]", "failed", "0.26.0", [other], error="x"),
    ])
    candidate = write_run(tmp_path / "b", [
        conformance_record("test_error_object_fields[a]", "failed", "0.27.0", [], error=strict_xpass),
        conformance_record("test_error_object_fields[b]", "failed", "0.27.0", [problem, other], error="x"),
        conformance_record("test_error_object_fields[c]", "skipped", "0.27.0", [problem], xfail_reason="r"),
        conformance_record("test_error_object_fields[d]", "failed", "0.27.0", [other, "more"], error="x"),
    ])
    for directory in (baseline, candidate):
        write_identity(directory, [DEVIATION])
    assert statuses(regression.compare_runs(baseline, candidate), "tests") == {
        node("test_error_object_fields[a]"): "improved",  # the deviation no longer happens (strict XPASS)
        node("test_error_object_fields[b]"): "regressed",  # the deviation and a problem nothing explains
        node("test_error_object_fields[c]"): "unchanged",
        node("test_error_object_fields[d]"): "still failing"}


# --- exit codes: 0 no regression, 1 regression, 2 bad input ----------------------------------------------------------
def test_bad_input_exits_2_with_a_message_and_no_traceback(tmp_path, capsys):
    baseline = write_run(tmp_path / "a", [record("t", "passed")])
    truncated = write_run(tmp_path / "b", [record("t", "passed")])
    with open(truncated / "results.jsonl", "a") as results:
        results.write('{"nodeid": "suites/x.py::u", "when": "ca')
    assert main(["compare", str(baseline), str(truncated)]) == 2
    assert "results.jsonl: line 2 is not valid JSON" in capsys.readouterr().err
    broken_outputs = write_run(tmp_path / "c", [record("t", "passed")], outputs(["x"]))
    ReportDir(broken_outputs).equivalence_outputs(CASE).write_text('{"case_id": ')
    assert main(["compare", str(baseline), str(broken_outputs)]) == 2
    assert "not valid JSON at line 1, column 13" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["compare", str(baseline), str(baseline), "--out", str(blocker / "sub")]) == 2
    assert "cannot write the reports there" in capsys.readouterr().err
    assert main(["compare", str(baseline), str(baseline), "--out", str(tmp_path / "new" / "dir")]) == 0
    assert (tmp_path / "new" / "dir" / "regression.md").is_file()


# --- outputs: evidence per probe --------------------------------------------------------------------------------------
def shifted(tokens: list[str], delta: float, flip_at: int | None = None) -> LayoutOutputs:
    """outputs() with every chosen logprob moved by `delta` and, optionally, a near-tie token flip."""
    answers = []
    for prompt in ("greeting", "story"):
        chosen = list(tokens) if prompt == "greeting" else ["a", "b"]
        if flip_at is not None and prompt == "greeting":
            chosen[flip_at] = "other"
        steps = tuple(Step(t, -0.1 - delta, ((t, -0.1 - delta), ("other" if t != "other" else tokens[flip_at],
                                                                   -0.15))) for t in chosen)
        answers.append(Generation(prompt=prompt, text="".join(chosen), tokens=tuple(chosen), steps=steps,
                                  finish_reason="length", usage={"prompt_tokens": 3, "completion_tokens": len(chosen),
                                                                 "total_tokens": 3 + len(chosen)},
                                  identity="token ids", prompt_token_ids=(1, 2, 3)))
    base = outputs(tokens)
    base.generations = {"completions-text": answers, "chat": answers}
    return base


def test_each_probe_says_bit_identical_or_how_far_logprobs_moved(tmp_path):
    same = [record("kept", "passed")]
    baseline = write_run(tmp_path / "a", same, outputs(["x", "y", "z"]))
    identical = write_run(tmp_path / "b", same, outputs(["x", "y", "z"]))
    moved = write_run(tmp_path / "c", same, shifted(["x", "y", "z"], 0.02))
    too_far = write_run(tmp_path / "d", same, shifted(["x", "y", "z"], 0.5))
    details = {f.subject: f.detail for f in regression.compare_runs(baseline, identical).findings}
    assert details[f"{CASE} chat"].startswith("bit-identical on 2/2 prompts (tokens, text and every logprob)")
    assert "exact tokens, |delta logprob| <= 0.1 (compare.max_logprob_delta)" in details[f"{CASE} chat"]
    comparison = regression.compare_runs(baseline, moved)
    finding = next(f for f in comparison.findings if f.subject == f"{CASE} chat")
    assert finding.status == "unchanged"
    assert finding.detail.startswith("identical tokens on 2/2 prompts, max |delta logprob| 0.02 (prompt 'greeting'")
    assert finding.evidence["evidence"] == "identical tokens, logprob delta"
    assert "identical tokens on 2/2 prompts" in comparison.to_markdown()  # listed, not just counted
    over = next(f for f in regression.compare_runs(baseline, too_far).findings if f.subject == f"{CASE} chat")
    assert over.status == "regressed" and "|delta logprob| up to 0.5" in over.detail and "> 0.1" in over.detail


def test_a_near_tie_flip_fails_the_default_and_passes_only_where_the_matrix_allows_it(tmp_path):
    same = [record("kept", "passed")]
    baseline = write_run(tmp_path / "a", same, shifted(["x", "y", "z"], 0.0))
    flipped = write_run(tmp_path / "b", same, shifted(["x", "y", "z"], 0.0, flip_at=1))
    default = next(f for f in regression.compare_runs(baseline, flipped).findings if f.subject == f"{CASE} chat")
    assert default.status == "regressed" and "generated token 1" in default.detail
    lenient = shifted(["x", "y", "z"], 0.0, flip_at=1)
    lenient.compare = {"comparator": "logprob-close"}
    allowed = write_run(tmp_path / "c", same, lenient)
    finding = next(f for f in regression.compare_runs(baseline, allowed).findings if f.subject == f"{CASE} chat")
    assert finding.status == "unchanged" and finding.detail.startswith("only close: ")
    assert "compare.comparator" in finding.detail and finding.evidence["evidence"] == "close"
    lenient.compare = {"comparator": "fuzzy"}
    bad = write_run(tmp_path / "d", same, lenient)
    with pytest.raises(UserError, match=r"compare\.comparator: 'fuzzy' is not allowed"):
        regression.compare_runs(baseline, bad)


# --- run identity -----------------------------------------------------------------------------------------------------
def test_the_runs_identity_and_what_differs_besides_the_engine(tmp_path):
    h200 = {"name": "NVIDIA H200", "driver": "570.1", "memory": "141 GiB", "count": 1}
    h100 = {**h200, "name": "NVIDIA H100 80GB HBM3"}
    server = {"engine": "vllm", "planned_version": "0.26.0", "version": "0.25.1", "case_args": {"dtype": "bf16"},
              "case_env": {}, "runtime": {"torch": "2.8.0", "cuda": "12.8"}, "gpu": h200}
    baseline = write_run(tmp_path / "a", [record("t", "passed")])
    candidate = write_run(tmp_path / "b", [record("t", "passed")])
    write_identity(baseline, [], h200, {CASE: server})
    write_identity(candidate, [], h100, {CASE: {**server, "planned_version": "0.26", "version": "0.26.0",
                                                "case_args": {"dtype": "bf16", "max-logprobs": 1}, "gpu": h100}})
    identity = regression.compare_runs(baseline, candidate).identity
    assert identity["baseline"] == "vllm 0.25.1, torch 2.8.0 (CUDA 12.8); 1x NVIDIA H200, driver 570.1"
    assert identity["differences"] == [
        "GPUs: 1x NVIDIA H200 (driver 570.1) vs 1x NVIDIA H100 80GB HBM3 (driver 570.1)",
        f"{CASE}: GPUs 1x NVIDIA H200 (driver 570.1) vs 1x NVIDIA H100 80GB HBM3 (driver 570.1)",
        f"{CASE}: engine arguments the matrix sets differ: max-logprobs: (unset) -> 1"]
    assert identity["warnings"] == [f"baseline {CASE}: the server reports vllm 0.25.1, the matrix says 0.26.0 "
                                    f"(versions below are the server's)"]
    markdown = regression.compare_runs(baseline, candidate).to_markdown()
    assert "**the runs differ in more than the engine**: GPUs" in markdown and "**warning**: baseline" in markdown
