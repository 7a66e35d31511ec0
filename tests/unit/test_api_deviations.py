import re

import pytest

from llmconform.engines import deviations
from llmconform.engines.deviations import Deviation, DeviationFileError
from llmconform.pytest.conformance_fixture import Conformance, KnownDeviation, check_id, spec_of

CODE_INT = Deviation(engine="vllm", versions=">=0.32,<0.33", check="test_error_object_fields*",
                     match=r"code: expected string, got integer", reason="integer code")


@pytest.mark.parametrize("engine, version, check, applies", [
    ("vllm", "0.32.0", "test_error_object_fields[400]", True),
    ("vllm", "0.32.1+cpu", "test_error_object_fields", True),
    ("vllm", "0.33.0", "test_error_object_fields[400]", False),
    ("sglang", "0.32.0", "test_error_object_fields[400]", False),
    ("vllm", "0.32.0", "test_response_schema[chat]", False),
    ("vllm", None, "test_error_object_fields[404]", True),  # unknown version: assumed affected
])
def test_applies_to_engine_version_and_check(engine, version, check, applies):
    assert CODE_INT.applies_to(engine, version, check) is applies


def test_model_pattern_limits_a_deviation_to_the_models_it_names():
    deviation = Deviation("vllm", "", "test_x", "x", "r", model="*bytefallback*")
    assert deviation.applies_to("vllm", "1.0", "test_x", "llama-bytefallback-tiny")
    assert not deviation.applies_to("vllm", "1.0", "test_x", "qwen2-tiny")
    assert not deviation.applies_to("vllm", "1.0", "test_x")
    assert Deviation("vllm", "", "test_x", "x", "r").applies_to("vllm", "1.0", "test_x", "qwen2-tiny")


def test_brackets_in_check_patterns_are_literal():
    deviation = Deviation("vllm", "", "test_x[chat]", "x", "r")
    assert deviation.applies_to("vllm", "1.0", "test_x[chat]")
    assert not deviation.applies_to("vllm", "1.0", "test_x[c]")


def test_explains_only_matching_problems():
    assert CODE_INT.explains("body.error.code: expected string, got integer 400")
    assert not CODE_INT.explains("HTTP 500, expected 400")


def test_packaged_file_loads():
    loaded = deviations.load()
    assert loaded and all(d.reason and d.match for d in loaded)


XFAIL = "engine: vllm, effect: xfail-check, check: x, match: y, reason: z"
KNOWN = "engine: vllm, effect: known-failure, match: y, reason: z, source: 'org/repo#1'"


@pytest.mark.parametrize("text, message", [
    ("engine: vllm", "expected a list of deviations"),
    ("- [engine, vllm]", "entry 0: expected a mapping"),
    ("- {engine: vllm, effect: xfail, check: x, match: y, reason: z}",
     "entry 0: effect 'xfail' is not one of xfail-check, known-failure"),
    ("- {engine: vllm, check: x, match: y}",
     "missing key(s) ['reason']; keys of effect xfail-check: engine, check, match, reason (optional: versions, model, "
     "effect, source)"),
    (f"- {{{XFAIL}, version: '1'}}", "unknown key(s) ['version']"),
    (f"- {{{XFAIL}, device: cpu}}", "unknown key(s) ['device']"),  # a check's deviation is not limited by device
    (f"- {{{XFAIL}, versions: 'new'}}", "is not a PEP 440 specifier set"),
    ("- {engine: vllm, effect: xfail-check, check: x, match: '(', reason: z}", "is not a regular expression"),
    (f"- {{{XFAIL}}}\n- {{{KNOWN}, check: x}}", "entry 1: unknown key(s) ['check']"),
    ("- {engine: vllm, effect: known-failure, match: y, reason: z}", "missing key(s) ['source']"),
    (f"- {{{KNOWN}, device: gpu}}", "device 'gpu' is not one of cpu, cuda"),
    (f"- {{{KNOWN}, parallel: [ep, sp]}}", "entry 0: parallel: ['sp'] not allowed: each is one of tp, pp, dp, adp, "
                                            "ep, nodes"),
    (f"- {{{KNOWN}, parallel: ep}}", "parallel: expected a list of names"),
    (f"- {{{KNOWN}, flags: [--enforce-eager]}}", "flags: ['--enforce-eager'] not allowed: each is an engine flag "
                                                  "without its leading --"),
])
def test_bad_files_say_what_to_change(tmp_path, text, message):
    path = tmp_path / "deviations.yaml"
    path.write_text(text)
    with pytest.raises(DeviationFileError, match=re.escape(f"{path}: ") + ".*" + re.escape(message)):
        deviations.load(path)


def test_one_file_declares_both_effects_and_each_applies_only_as_its_effect(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(f"- {{{XFAIL}}}\n- {{{KNOWN}, device: cpu, parallel: [pp], flags: [enforce-eager]}}\n"
                    "- {engine: vllm, check: x, match: y, reason: z}\n")
    check, failure, without_effect = deviations.load(path)
    assert without_effect == check  # xfail-check is the default effect (the files written before known failures)
    assert check.applies_to("vllm", "1.0", "x") and not failure.applies_to("vllm", "1.0", "x")
    assert (failure.effect, failure.device, failure.parallel, failure.flags) == \
        ("known-failure", "cpu", ("pp",), ("enforce-eager",))
    assert failure.describe() == "known engine failure of vllm (every version) on cpu with pipeline parallelism " \
                                 "and --enforce-eager: z (org/repo#1)"


def test_the_packaged_file_declares_both_effects():
    effects = {d.effect for d in deviations.load()}
    assert effects == {"xfail-check", "known-failure"}


def test_files_in_force_are_the_packaged_one_the_environment_s_and_a_conftest_s(tmp_path, monkeypatch):
    from_env, added = tmp_path / "env.yaml", tmp_path / "conftest.yaml"
    monkeypatch.setenv(deviations.ENV, str(from_env))
    monkeypatch.setattr(deviations, "_added_files", [])
    deviations.add_file(added)
    deviations.add_file(added)  # a conftest loaded twice adds its file once
    assert deviations.files_in_force() == [deviations.DEFAULT_FILE, from_env, added]


@pytest.mark.parametrize("callspec_id, expected", [
    (None, "test_x"),
    ("vllm-qwen2-tiny-tp1", "test_x"),
    ("vllm-qwen2-tiny-tp1-chat", "test_x[chat]"),
    ("chat-model-missing-vllm-qwen2-tiny-tp1", "test_x[chat-model-missing]"),
])
def test_check_id_drops_the_server_parameter(callspec_id, expected):
    assert check_id("test_x", callspec_id, "vllm-qwen2-tiny-tp1") == expected


def test_spec_of_reads_the_spec_paragraph():
    def check():
        """Spec: CompletionUsage: total = prompt +
        completion.

        More words."""

    assert spec_of(check) == "CompletionUsage: total = prompt + completion."


def test_require_judges_problems_against_the_declared_deviations():
    checker = Conformance(check="test_error_object_fields[400]", spec="ErrorResponse", deviations=[CODE_INT])
    checker.require([])
    with pytest.raises(KnownDeviation, match="got integer 400"):
        checker.require(["body.error.code: expected string, got integer 400"])
    with pytest.raises(pytest.fail.Exception, match="HTTP 500, expected 400"):
        checker.require(["body.error.code: expected string, got integer 400", "HTTP 500, expected 400"])


def test_stop_judges_like_require_and_records_the_problems():
    checker = Conformance(check="test_error_object_fields[400]", spec="ErrorResponse", deviations=[CODE_INT])
    with pytest.raises(KnownDeviation, match="got integer 400"):
        checker.stop(["body.error.code: expected string, got integer 400"])
    with pytest.raises(pytest.fail.Exception, match="HTTP 500, expected 400"):
        checker.stop(["HTTP 500, expected 400"])
    assert checker.recorded["problems"] == ["HTTP 500, expected 400"]
