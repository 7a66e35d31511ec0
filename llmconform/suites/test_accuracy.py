"""Accuracy on a task with known answers: is this layout right, not only like the reference?

For every case of a matrix with an `accuracy:` section (llmconform/accuracy/gate.py), the server answers the task's
problems (greedy, concurrently through the load client); the gate fails a layout whose accuracy is below the
matrix's floor, or significantly below the reference layout's (one-sided two-proportion test at `alpha`). The number
of problems is computed from the smallest drop the matrix wants detected (`min_detectable_drop`, `alpha`, `power`),
and the verdict says what the run could and could not detect. The top-1 minus top-2 logprob of every answer token is
reported: wide margins mean rounding differences between layouts cannot flip an answer.
"""

from __future__ import annotations

import json

import pytest

from llmconform.accuracy import gate as accuracy
from llmconform.equivalence import policy as equivalence
from llmconform.perf import loadgen
from llmconform.pytest.plugin import configured_session

PROPERTY = "accuracy"
_RESULTS = pytest.StashKey[dict]()


NO_TASK = "the matrix has no accuracy: section (llmconform/accuracy/gate.py)"


@pytest.fixture
def gate_policy(llm) -> accuracy.GatePolicy:
    policy = accuracy.gate_policy(llm.case.accuracy, llm.case.model.id) if llm.case else None
    if policy is None:
        pytest.skip(NO_TASK)
    return policy


# A matrix case without an accuracy task is skipped before its server starts: as the first test of SGLang 0.5.16's
# first GPU run, the skip was charged the 145 s server start, and `-k accuracy` on such a matrix started every
# case's server for nothing. The fixture's skip remains for attached servers, which have no case.
@pytest.mark.skip_case_if(lambda case: accuracy.gate_policy(case.accuracy, case.model.id) is None, reason=NO_TASK)
def test_accuracy_gate(request, record_property, llm, gate_policy):
    task = accuracy.load(gate_policy.task, gate_policy.problems)
    correct, margins, failures = _answer(llm, task, gate_policy.concurrency)
    n = len(task.problems)
    request.config.stash.setdefault(_RESULTS, {})[llm.id] = (correct, n)
    reference = _reference(request, llm)
    gate = accuracy.judge(correct, n, gate_policy, reference)
    summary = {"engine": llm.engine, "model": llm.case.model.id, "source": llm.case.model.source,
               "layout": llm.layout, "task": task.name, "problems": n, "correct": correct,
               "accuracy": gate.accuracy, "floor": gate.floor, "p_value": gate.p_value,
               "detectable_drop": gate.detectable, "margins": _distribution(margins), "verdict": gate.explain(),
               "wrong_examples": failures[:5]}
    record_property(PROPERTY, summary)
    path = llm.report_dir.accuracy_result(llm.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=1))
    assert gate.ok, f"{llm.id}: {gate.explain()}; wrong answers, e.g. {failures[:3]}"


def _answer(llm, task: accuracy.Task, concurrency: int) -> tuple[int, list[float], list[dict]]:
    """(correct answers, top-1 minus top-2 logprob of every generated token, some wrong answers)."""
    requests = []
    for problem in task.problems:
        route, body = task.request(problem, llm.model)
        extra = {"logprobs": 2} if route == "/v1/completions" else {"logprobs": True, "top_logprobs": 2}
        requests.append((route, {**body, **extra}))
    target = loadgen.Target(llm.base_url, llm.model, llm.engine, llm.api_key)
    answers = loadgen.run_requests(target, requests, concurrency)
    errors = [a for a in answers if isinstance(a, str)]
    if errors:
        pytest.fail(f"{len(errors)} of {len(answers)} requests failed, e.g. {errors[0]}", pytrace=False)
    correct, margins, failures = 0, [], []
    for problem, answer in zip(task.problems, [a for a in answers if isinstance(a, dict)], strict=True):
        choice = answer["choices"][0]
        output = choice["text"] if "text" in choice else choice["message"]["content"] or ""
        if task.score(output, problem.answer):
            correct += 1
        else:
            failures.append({"prompt": problem.prompt or problem.messages, "expected": problem.answer,
                             "got": output})
        margins += _margins(choice.get("logprobs") or {})
    return correct, margins, failures


def _margins(logprobs: dict) -> list[float]:
    """Top-1 minus top-2 logprob at each generated position (completions or chat logprobs)."""
    if "top_logprobs" in logprobs:  # completions: a {token: logprob} mapping per position
        tops = [sorted(position.values(), reverse=True) for position in logprobs["top_logprobs"] or [] if position]
    else:  # chat: content[i].top_logprobs = [{token, logprob}]
        tops = [sorted((t["logprob"] for t in item.get("top_logprobs") or []), reverse=True)
                for item in logprobs.get("content") or []]
    return [top[0] - top[1] for top in tops if len(top) >= 2]


def _distribution(values: list[float]) -> dict:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 4)

    return {"tokens": len(ordered), "min": at(0), "p1": at(0.01), "p5": at(0.05), "median": at(0.5)}


def _reference(request, llm) -> tuple[int, int] | None:
    """The reference layout's (correct, n) from this session; None when this is the reference."""
    session = configured_session(request.config)
    choice = equivalence.choose_reference(llm.case, session.cases, equivalence.policy_for(llm.case), session.unfit)
    if choice.case is None:
        pytest.fail(choice.why, pytrace=False)
    if choice.case.id == llm.case.id:
        return None
    result = request.config.stash.get(_RESULTS, {}).get(choice.case.id)
    if result is None:
        pytest.fail(f"no accuracy of the reference {choice.case.id}: it must run before {llm.id} in the same "
                    f"session (keep it first in the matrix, do not deselect it, and run one model's layouts in one "
                    f"pytest-xdist worker)", pytrace=False)
    return result
