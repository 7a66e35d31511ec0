"""The OpenAI conformance suites against a deliberately broken server (tests/fakes/openai_server.py): every bug switch
makes its family of checks fail, for the reason the check names; the same server without a switch passes every
check; a declared deviation turns its check into a strict xfail, and fails as XPASS once the bug is gone."""

import json
import os
import re
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest
from paths import ROOT, pytest_command

from llmconform.engines.deviations import ENV as DEVIATIONS_ENV
from tests.fakes.openai_server import BUGS, MODEL, FakeHTTPServer, FakeOpenAI

API_KEY = "fake-key"
ALL_SUITES = ("models", "generation", "streaming", "errors", "features", "properties")

# bug -> (suites it runs, {check id: regex its failure must match})
CATCHES = {
    "schema": (("generation",), {"test_response_schema[completions]": r"\$\.created: missing \(required\)",
                                 "test_response_schema[chat]": r"\$\.created: missing \(required\)"}),
    "models": (("models",), {"test_models_list": r"\$\.data\[0\]\.owned_by: missing",
                             "test_model_retrieve": r"\$\.owned_by: missing"}),
    "usage": (("generation", "streaming"), {
        "test_usage_arithmetic[completions]": r"usage\.total_tokens \d+ != prompt_tokens \d+ \+ completion_tokens",
        "test_usage_arithmetic[chat]": r"usage\.total_tokens \d+ != prompt_tokens",
        "test_stream_include_usage[chat]": r"usage\.total_tokens \d+ != prompt_tokens"}),
    "max-tokens": (("generation", "properties"), {
        "test_max_tokens_honored[completions-max_tokens]": r"max_tokens=1: 2 tokens returned for max_tokens=1",
        "test_max_tokens_honored[chat-max_completion_tokens]": r"2 tokens returned for max_tokens=1",
        "test_valid_sampling_parameters[chat]": r"choice 0: \d+ tokens for max_tokens=\d+"}),
    "stop-leak": (("generation", "properties"), {
        "test_stop_sequence[completions-string]": r"the output contains stop sequence",
        "test_stop_sequence[chat-list]": r"the output contains stop sequence",
        "test_valid_sampling_parameters[completions]": r"stop sequence .* in the output"}),
    "stop-at-limit": (("generation",), {
        "test_stop_sequence_at_max_tokens[completions]": r"the output contains stop sequence",
        "test_stop_sequence_at_max_tokens[chat]": r"finish_reason 'length' after a stop sequence"}),
    "context": (("generation",), {
        "test_context_length_boundary[completions]": r"\+ max_tokens \d+ > context 256: HTTP 200, expected 400",
        "test_context_length_boundary[chat]": r"> context 256: HTTP 200, expected 400"}),
    "n": (("generation",), {"test_n_choices[completions]": r"choice indices \[0\], expected \[0, 1, 2\] for n=3",
                            "test_n_choices[chat]": r"expected \[0, 1, 2\] for n=3"}),
    "seed": (("generation",), {"test_seed_reproducible[completions]": r"same seed, different outputs",
                               "test_seed_reproducible[chat]": r"same seed, different outputs"}),
    "greedy-random": (("generation", "streaming"), {
        "test_temperature_zero_deterministic[completions]": r"temperature 0, different outputs",
        "test_n_with_greedy_sampling[chat]": r"greedy choices differ",
        "test_stream_matches_non_stream[chat]": r"streamed text .* != non-streamed"}),
    "logprobs": (("generation",), {
        "test_logprobs_contents[completions-3]": r"logprobs\.tokens concatenate to .* text is",
        "test_logprobs_contents[chat-3]": r"logprobs\.content\[\d+\]\.logprob = [\d.]+ > 0"}),
    "echo": (("generation",), {"test_echo": r"echo text .*, expected prompt \+ completion"}),
    "history": (("generation",), {"test_chat_history_accepted": r"the history did not reach the model"}),
    "sse-no-done": (("streaming",), {"test_stream_framing[completions]": r"no data: \[DONE\] event",
                                     "test_stream_framing[chat]": r"no data: \[DONE\] event"}),
    "sse-framing": (("streaming",), {
        "test_stream_framing[chat]": r"the stream ends inside an event \(no blank line after it\)"}),
    "stream-id": (("streaming",), {"test_stream_chunk_identity[completions]": r"chunks carry \d+ different id",
                                   "test_stream_chunk_identity[chat]": r"chunks carry \d+ different id"}),
    "stream-role": (("streaming",), {"test_stream_first_delta_role": r"first delta role None, expected 'assistant'"}),
    "stream-finish": (("streaming",), {
        "test_stream_one_finish_reason_per_choice[completions]": r"finish_reason given \d+ times",
        "test_stream_one_finish_reason_per_choice[chat]": r"finish_reason given \d+ times"}),
    "stream-usage": (("streaming",), {
        "test_stream_include_usage[completions]": r"the last chunk's choices is .*expected \[\] \(the usage chunk\)"}),
    "server-error": (("errors",), {
        "test_malformed_json_rejected[chat]": r"server error HTTP 500, expected 400",
        "test_invalid_request_rejected[completions-temperature-3]": r"server error HTTP 500, expected 400",
        "test_invalid_request_rejected[chat-messages-empty]": r"server error HTTP 500, expected 400"}),
    "error-shape": (("errors",), {"test_error_object_fields[404]": r"body\.error: missing \(required\)",
                                  "test_unknown_model_rejected[chat]": r"body\.error: missing \(required\)"}),
    "unknown-model": (("errors",), {"test_unknown_model_rejected[completions]": r"HTTP 200, expected 404"}),
    "sick-after-error": (("errors",), {
        "test_invalid_request_rejected[completions-n-0]": r"after the request, a 1-token completion failed: HTTP 500"}),
    "no-auth": (("features",), {"test_auth_required[none]": r"POST /v1/completions \(none\): HTTP 200, expected 401",
                                "test_auth_required[wrong-key]": r"GET /v1/models \(wrong-key\): HTTP 200, "
                                                                 r"expected 401"}),
    "json-schema": (("features",), {"test_response_format_json_schema": r"content is not even the beginning of JSON"}),
    "tools": (("features",), {"test_tool_choice_required": r"tool_calls\[0\]\.arguments is not JSON",
                              "test_stream_tool_calls[named]": r"tool_calls\[0\]\.arguments is not JSON"}),
    "service-tier": (("generation", "features"), {
        "test_response_schema[chat]": r"openapi CreateChatCompletionResponse: \$\.service_tier: 'standard' is not one",
        "test_chat_history_accepted": r"openapi CreateChatCompletionResponse: \$\.service_tier",
        "test_tool_choice_required": r"openapi CreateChatCompletionResponse: \$\.service_tier"}),
    "wrong-model": (("generation", "streaming"), {
        "test_response_schema[completions]": r"\$\.model is 'fake-model-v2', not a model the server serves",
        "test_stream_framing[chat]": r"chunk\[0\]\.model is 'fake-model-v2', not a model the server serves"}),
    "logprob-bytes": (("generation",), {"test_logprobs_contents[chat-0]": r"logprobs\.content bytes concatenate to"}),
    "usage-every-chunk": (("streaming",), {
        "test_stream_include_usage[completions]": r"chunk 0 carries usage .* before the usage chunk",
        "test_stream_usage_null_on_other_chunks[chat]": r"chunk 0 carries usage .* \(expected usage: null\)"}),
    "stream-tool-type": (("features",), {
        "test_stream_tool_calls[named]": r"the first delta of tool call 0 lacks type",
        "test_stream_tool_calls[required]": r"the first delta of tool call 0 lacks type"}),
    "tool-finish-stop": (("features",), {
        "test_tool_choice_required": r"finish_reason 'stop' after tool calls \(expected 'tool_calls'\)",
        "test_stream_tool_calls[required]": r"finish_reason 'stop' after tool calls"}),
    "seed-completions": (("generation",), {"test_seed_reproducible[completions]": r"same seed, different outputs"}),
    "metrics-count": (("metrics",), {
        "test_metrics_count_a_request": r"vllm:generation_tokens_total moved by 4, expected 5"}),
    "n-finish-duplicate": (("streaming",), {
        "test_stream_one_finish_reason_per_choice[completions]": r"choice \d: finish_reason given 2 times",
        "test_stream_token_accounting[chat]": r"choice \d: finish_reason given 2 times"}),
}
# Checks that must pass although the bug breaks a neighbour (the switch is narrow: a catch, not a blanket failure).
MUST_PASS = {
    "seed-completions": ("test_seed_reproducible[chat]",),
    "tool-finish-stop": ("test_stream_tool_calls[named]",),
    "metrics-count": ("test_metrics_counters_exposed",),
}
# The fake's /metrics speaks vLLM's counter names: the metrics checks run with it attached as engine vllm (its
# /version, 1.0.0, is outside every declared vLLM deviation).
METRICS_ENGINE = "vllm"

USAGE_DEVIATION = """
- engine: fake
  check: test_usage_arithmetic[*]
  match: 'usage\\.total_tokens \\d+ != prompt_tokens'
  reason: the fake adds one to total_tokens
"""
OTHER_DEVIATION = """
- engine: fake
  check: test_usage_arithmetic[*]
  match: 'usage\\.prompt_tokens'
  reason: a deviation that explains some other problem
"""


@dataclass
class Run:
    returncode: int
    output: str
    checks: dict[str, tuple[str, str]] = field(default_factory=dict)  # check -> (outcome, failure or xfail reason)

    def failed(self) -> dict[str, str]:
        return {c: text for c, (outcome, text) in self.checks.items() if outcome == "failed"}


@dataclass(frozen=True)
class Plan:
    name: str
    bug: str | None
    suites: tuple[str, ...]
    deviations: str | None = None
    select: str | None = None
    quirk: str | None = None
    engine: str = "fake"


PLANS = [Plan(bug, bug, suites, engine=METRICS_ENGINE if "metrics" in suites else "fake")
         for bug, (suites, _) in CATCHES.items()] + [
    Plan("conforming", None, ALL_SUITES),
    Plan("conforming-metrics", None, ("metrics",), engine=METRICS_ENGINE),
    Plan("declared-deviation", "usage", ("generation",), USAGE_DEVIATION, "usage_arithmetic"),
    Plan("fixed-deviation", None, ("generation",), USAGE_DEVIATION, "usage_arithmetic"),
    Plan("unexplained-problem", "usage", ("generation",), OTHER_DEVIATION, "usage_arithmetic"),
    Plan("json-max-tokens", None, ("features",), select="json_schema", quirk="json-max-tokens"),
]


def run_plan(plan: Plan, workdir) -> Run:
    server = FakeHTTPServer(FakeOpenAI(api_key=API_KEY, bug=plan.bug, quirk=plan.quirk))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    report_dir = workdir / plan.name
    env = {k: v for k, v in os.environ.items() if k != DEVIATIONS_ENV}
    if plan.deviations:
        deviations = workdir / f"{plan.name}-deviations.yaml"
        deviations.write_text(plan.deviations)
        env[DEVIATIONS_ENV] = str(deviations)
    command = pytest_command(*(f"llmconform/suites/test_openai_{s}.py" for s in plan.suites), "--llm-url", server.url,
                             "--llm-model", MODEL, "--llm-engine", plan.engine, "--llm-api-key", API_KEY,
                             "--report-dir", str(report_dir), "-q")
    if plan.select:
        command += ["-k", plan.select]
    try:
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    finally:
        server.shutdown()
        server.server_close()
    run = Run(result.returncode, result.stdout + result.stderr)
    severity = {"passed": 0, "skipped": 1, "failed": 2}
    for line in (report_dir / "results.jsonl").read_text().splitlines():
        record = json.loads(line)
        check = record["properties"].get("conformance", {}).get("check", record["nodeid"])
        outcome = record["outcome"]
        text = record.get("error") or record.get("xfail_reason") or record.get("skip_reason") or ""
        if "xfail_reason" in record:
            outcome = "xfailed"
        if check not in run.checks or severity.get(outcome, 1) > severity.get(run.checks[check][0], 1):
            run.checks[check] = (outcome, text)
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Run]:
    """Every plan once, a few at a time (each is a pytest process of its own against its own fake server)."""
    workdir = tmp_path_factory.mktemp("catches")
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip((p.name for p in PLANS), pool.map(lambda p: run_plan(p, workdir), PLANS)))


def test_every_bug_switch_has_expectations():
    assert set(CATCHES) == set(BUGS)


@pytest.mark.parametrize("bug", list(CATCHES))
def test_bug_is_caught_for_the_right_reason(runs, bug):
    run = runs[bug]
    failed = run.failed()
    assert run.returncode == 1, run.output[-3000:]
    for check, reason in CATCHES[bug][1].items():
        assert check in failed, f"{bug} ({BUGS[bug]}): {check} did not fail; failed: {sorted(failed)}"
        assert re.search(reason, failed[check]), f"{bug}: {check} failed for another reason:\n{failed[check]}"
    for check in MUST_PASS.get(bug, ()):
        assert run.checks[check][0] == "passed", f"{bug}: {check} should pass: {run.checks[check]}"


def test_conforming_server_passes_every_check(runs):
    run = runs["conforming"]
    assert run.returncode == 0, run.output[-3000:]
    not_passed = {c: v for c, v in run.checks.items() if v[0] != "passed"}
    assert not_passed == {}
    assert len(run.checks) > 80  # the whole suite ran, auth and tools included
    metrics = runs["conforming-metrics"]
    assert metrics.returncode == 0, metrics.output[-3000:]
    assert set(metrics.checks) == {"test_metrics_counters_exposed", "test_metrics_count_a_request"}
    assert {outcome for outcome, _ in metrics.checks.values()} == {"passed"}


def test_json_cut_by_max_tokens_is_inconclusive_not_failed(runs):
    """A valid JSON prefix with finish_reason "length" is what a weak model under guided decoding gives: the check
    skips as inconclusive instead of failing the engine."""
    run = runs["json-max-tokens"]
    assert run.returncode == 0, run.output[-3000:]
    outcome, text = run.checks["test_response_format_json_schema"]
    assert outcome == "skipped" and text.startswith("inconclusive: generation stopped at max_tokens"), text


def test_declared_deviation_is_a_strict_xfail(runs):
    run = runs["declared-deviation"]
    assert run.returncode == 0, run.output[-3000:]
    assert run.checks["test_usage_arithmetic[chat]"] == ("xfailed", "the fake adds one to total_tokens")


def test_fixed_deviation_fails_as_xpass(runs):
    run = runs["fixed-deviation"]
    assert run.returncode == 1
    outcome, text = run.checks["test_usage_arithmetic[completions]"]
    assert outcome == "failed" and "[XPASS(strict)] the fake adds one to total_tokens" in text


def test_problem_the_deviation_does_not_explain_still_fails(runs):
    outcome, text = runs["unexplained-problem"].checks["test_usage_arithmetic[chat]"]
    assert outcome == "failed" and re.search(r"usage\.total_tokens \d+ != prompt_tokens", text)
