import json

import pytest

from llmconform.accuracy import gate
from llmconform.config import matrix
from llmconform.equivalence.comparators import Exact, Generation, Step, compare
from llmconform.errors import MatrixError, UserError


def write_task(path, header, *rows):
    path.write_text("\n".join(json.dumps(r) for r in (header, *rows)) + "\n")
    return str(path)


def test_scorers_read_what_each_promises(tmp_path):
    exact = gate.load(write_task(tmp_path / "e.jsonl", {"scorer": "exact"}, {"prompt": "1+1=", "answer": "2"}))
    assert exact.score(" 2\n", "2") and not exact.score("2.0", "2")
    numeric = gate.load(write_task(tmp_path / "n.jsonl", {"scorer": "numeric"}, {"prompt": "q", "answer": 1234}))
    assert numeric.score("so 1,000 + 234 = $1,234.", "1234") and not numeric.score("1234 then 5", "1234")
    regex = gate.load(write_task(tmp_path / "r.jsonl", {"scorer": "regex", "pattern": "#### (\\S+)"},
                                     {"prompt": "q", "answer": "42"}))
    assert regex.score("work\n#### 42", "42") and not regex.score("42", "42")
    choice = gate.load(write_task(tmp_path / "c.jsonl", {"scorer": "choice", "choices": "ABCD"},
                                      {"prompt": "q", "answer": "B"}))
    assert choice.score("The answer is (B).", "B") and not choice.score("A, not B", "B")


def test_protocol_is_pinned_by_the_header(tmp_path):
    header = {"api": "completions", "few_shot": [{"prompt": "1+1=", "answer": "2"}], "shot_separator": "\n",
              "max_tokens": 4, "stop": "\n"}
    task = gate.load(write_task(tmp_path / "t.jsonl", header, {"prompt": "2+2=", "answer": "4"}))
    route, body = task.request(task.problems[0], "m")
    assert route == "/v1/completions" and body["prompt"] == "1+1=2\n2+2=" and body["stop"] == ["\n"]
    assert body["temperature"] == 0.0 and body["max_tokens"] == 4
    chat = gate.load(write_task(tmp_path / "c.jsonl", {**header, "api": "chat", "system": "be brief"},
                                    {"messages": [{"role": "user", "content": "2+2?"}], "answer": "4"}))
    route, body = chat.request(chat.problems[0], "m")
    assert route == "/v1/chat/completions"
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]


@pytest.mark.parametrize("header, row, message", [
    ({"scorer": "fuzzy"}, {"prompt": "q", "answer": "a"}, "scorer: 'fuzzy' is not allowed"),
    ({"scorer": "regex", "pattern": "no group"}, {"prompt": "q", "answer": "a"}, "pattern with one group"),
    ({}, {"messages": [{"role": "user", "content": "q"}], "answer": "a"}, "messages need api: chat"),
    ({}, {"prompt": "q"}, "answer: expected a string or a number"),
    ({"colour": 1}, {"prompt": "q", "answer": "a"}, "unknown header key"),
])
def test_bad_task_files_name_line_and_field(tmp_path, header, row, message):
    with pytest.raises(UserError, match=message) as error:
        gate.load(write_task(tmp_path / "bad.jsonl", header, row))
    assert "bad.jsonl:" in str(error.value)


def test_a_task_too_small_for_the_sample_size_is_refused(tmp_path):
    path = write_task(tmp_path / "t.jsonl", {}, {"prompt": "q", "answer": "a"})
    with pytest.raises(UserError, match="2 problems are needed"):
        gate.load(path, 2)


def test_builtin_addition_is_held_out_and_right():
    task = gate.load("builtin:addition", 50)
    assert len(task.problems) == 50 == len({p.prompt for p in task.problems})
    for problem in task.problems:
        a, b = problem.prompt.rstrip("=").split("+")
        assert int(problem.answer[::-1]) == int(a[::-1]) + int(b[::-1])  # little-endian digits


def test_sample_size_matches_the_textbook_formula():
    # by hand: p1 0.5, p2 0.4, one-sided alpha 0.05, power 0.8: (1.645*0.7036 + 0.8416*0.7)^2 / 0.01 = 305
    assert gate.sample_size(0.5, 0.1, 0.05, 0.8) == 305
    assert gate.sample_size(0.99, 0.05, 0.05, 0.8) < gate.sample_size(0.99, 0.03, 0.05, 0.8)
    drop = gate.detectable_drop(0.99, gate.sample_size(0.99, 0.05, 0.05, 0.8), 0.05, 0.8)
    assert 0.045 < drop <= 0.05


def test_gate_fails_a_significant_drop_with_its_p_value_and_not_noise():
    policy = gate.GatePolicy(floor=0.9)
    worse = gate.judge(60, 100, policy, (99, 100))
    assert not worse.ok and worse.p_value < 1e-6 and "p = " in worse.explain() and "below the floor" in worse.explain()
    same = gate.judge(99, 100, policy, (100, 100))
    assert same.ok and same.p_value > 0.05 and "smaller drops can go unnoticed" in same.explain()
    assert gate.two_proportion_p_value(100, 100, 100, 100) == 1.0


def test_matrix_accuracy_section_and_case_source(tmp_path):
    data = {"engines": {"vllm": {"command": "vllm serve"}},
            "models": {"qwen2-oracle": {"source": "factory:qwen2-oracle"}}, "layouts": ["tp1"],
            "cases": [{"engine": "vllm", "model": "qwen2-oracle", "layout": "tp2",
                       "source": "factory:qwen2-oracle-damaged"}],
            "accuracy": {"task": "tasks/gsm8k.jsonl", "floor": 0.99,
                         "models": {"qwen2-oracle": {"min_detectable_drop": 0.1}}}}
    parsed = matrix.parse(data, str(tmp_path / "m.yaml"))
    reference, damaged = parsed.cases
    assert damaged.model.id == reference.model.id and damaged.model.source == "factory:qwen2-oracle-damaged"
    policy = gate.gate_policy(damaged.accuracy, "qwen2-oracle")
    assert policy.floor == 0.99 and policy.min_detectable_drop == 0.1
    assert policy.task == str(tmp_path / "tasks/gsm8k.jsonl")
    with pytest.raises(MatrixError, match=r"accuracy\.alpha"):
        matrix.parse({**data, "accuracy": {"alpha": 2}}, "m.yaml")


def generation(logprobs):
    steps = tuple(Step(key=t, logprob=lp, top=((t, lp),)) for t, lp in zip("abc", logprobs))
    return Generation(prompt="p", text="abc", tokens=tuple("abc"), steps=steps, finish_reason="length",
                      usage=None, identity="token")


def test_exact_comparator_judges_logprob_drift():
    reference = generation([-1.0, -2.0, -0.5])
    noise = generation([-1.0 + 1e-5, -2.0, -0.5])
    drift = generation([-1.001, -2.001, -0.501])
    assert compare(Exact(max_drift=1e-4), [reference], [noise]).ok
    verdict = compare(Exact(max_drift=1e-4), [reference], [drift])
    assert not verdict.ok and "logprobs drifted" in verdict.explain()
    assert compare(Exact(), [reference], [drift]).ok  # without a bound, tokens decide


NO_ACCURACY_MATRIX = """
name: no-accuracy
launcher: local
engines:
  vllm:
    command: [python3, -c, "import sys; print('not a server'); sys.exit(3)"]
    version: "0.32.0"
    device: cpu
    startup_timeout: 30
models:
  qwen2-tiny:
    source: factory:qwen2-tiny
cases:
  - {engine: vllm, model: qwen2-tiny, layout: tp1}
"""


def test_gate_skips_a_case_without_a_task_before_starting_its_server(tmp_path):
    """The engine command here exits at once: had the case's server been started for the skip, the test would
    error with an EngineStartError instead."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    (tmp_path / "m.yaml").write_text(NO_ACCURACY_MATRIX)
    suite = root / "llmconform" / "suites" / "test_accuracy.py"
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", str(suite),
                          "--matrix", str(tmp_path / "m.yaml"), "--report-dir", str(tmp_path / "r")],
                         cwd=root, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "1 skipped" in run.stdout and "the matrix has no accuracy: section" in run.stdout
    assert not (tmp_path / "r" / "servers").exists()
