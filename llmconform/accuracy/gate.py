"""Accuracy on tasks with known answers: the task file format, the scorers, the request protocol, and the gate
(a two-proportion test against the reference layout, an absolute floor, and the sample size that makes the test
able to see the drop the user cares about).

A task is a JSONL file. The first line is the header, which pins how the model is asked and how answers are scored;
every other line is one problem:

```json
{"task": "addition", "api": "completions", "scorer": "exact", "max_tokens": 8, "stop": ["\\n"],
 "few_shot": [{"prompt": "001+002=", "answer": "3000"}], "shot_separator": "\\n", "system": null}
{"prompt": "123+456=", "answer": "9750"}
{"messages": [{"role": "user", "content": "What is 2+2?"}], "answer": "4"}
{"prompt": "Q: ... (A) x (B) y\\nAnswer:", "answer": "B"}
```
- `api`: `completions` (the few-shot examples are written before the prompt: `prompt + answer + shot_separator`
  each) or `chat` (the server's chat template; the few-shot examples become user/assistant turns after an
  optional `system` message). A problem gives `prompt` (a user turn in chat) or `messages` (chat only).
- `scorer`: `exact` (the answer, whitespace-trimmed), `numeric` (the last number in the output equals the answer
  numerically; commas and `$` ignored: GSM8K-style), `regex` (`pattern`'s first group equals the answer), `choice`
  (the first standalone capital letter among `choices`, default A-D, equals the answer letter).
- Requests are greedy (temperature 0) with `max_tokens` and `stop` from the header.
`builtin:NAME` names a task made here (`builtin:addition`, the oracle models' task).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist

from llmconform.errors import UserError

SCORERS = ("exact", "numeric", "regex", "choice")
APIS = ("completions", "chat")
HEADER_KEYS = ("task", "api", "scorer", "pattern", "choices", "max_tokens", "stop", "few_shot", "shot_separator",
               "system")
BUILTIN_TASKS = ("addition",)
BUILTIN_HELD_OUT_SEED = 777  # the oracles train on other seeds (oracle.TrainingRecipe.seed)


@dataclass(frozen=True)
class Problem:
    answer: str
    prompt: str | None = None
    messages: tuple[dict, ...] | None = None


@dataclass(frozen=True)
class Task:
    name: str
    problems: tuple[Problem, ...]
    api: str = "completions"
    scorer: str = "exact"
    pattern: str | None = None
    choices: str = "ABCD"
    max_tokens: int = 16
    stop: tuple[str, ...] = ()
    few_shot: tuple[Problem, ...] = ()
    shot_separator: str = "\n"
    system: str | None = None

    def request(self, problem: Problem, model: str) -> tuple[str, dict]:
        """The route and the JSON body that ask `problem` by the task's protocol."""
        body = {"model": model, "max_tokens": self.max_tokens, "temperature": 0.0}
        if self.stop:
            body["stop"] = list(self.stop)
        if self.api == "completions":
            assert problem.prompt is not None  # load() allows messages with api: chat only
            shots = "".join(f"{s.prompt}{s.answer}{self.shot_separator}" for s in self.few_shot)
            return "/v1/completions", {**body, "prompt": shots + problem.prompt}
        messages: list[dict] = [{"role": "system", "content": self.system}] if self.system else []
        for shot in self.few_shot:
            messages += [{"role": "user", "content": shot.prompt}, {"role": "assistant", "content": shot.answer}]
        messages += list(problem.messages) if problem.messages else [{"role": "user", "content": problem.prompt}]
        return "/v1/chat/completions", {**body, "messages": messages}

    def score(self, output: str, answer: str) -> bool:
        return extract(self, output) == normalise(self, answer)


def normalise(task: Task, answer: str) -> str | float | None:
    return _number(answer) if task.scorer == "numeric" else answer.strip()


def extract(task: Task, output: str) -> str | float | None:
    """What the scorer reads from the model's output (None: nothing it could read)."""
    if task.scorer == "exact":
        return output.strip()
    if task.scorer == "numeric":
        numbers = re.findall(r"-?\$?\d[\d,]*(?:\.\d+)?", output)
        return _number(numbers[-1]) if numbers else None
    if task.scorer == "regex":
        assert task.pattern is not None  # load() requires one for this scorer
        match = re.search(task.pattern, output)
        return match.group(1).strip() if match else None
    letters = "".join(re.escape(c) for c in task.choices)
    match = re.search(rf"(?<![A-Za-z])([{letters}])(?![A-Za-z])", output)
    return match.group(1) if match else None


def _number(text: str) -> float | None:
    try:
        return float(text.replace(",", "").replace("$", "").strip())
    except ValueError:
        return None


# --- task files --------------------------------------------------------------------------------------------------
def load(source: str, count: int | None = None) -> Task:
    """A task from `builtin:NAME` or a JSONL file; `count` problems (the first ones), all when None."""
    if source.startswith("builtin:"):
        name = source.split(":", 1)[1]
        if name not in BUILTIN_TASKS:
            known = ", ".join("builtin:" + n for n in BUILTIN_TASKS)
            raise UserError(f"unknown built-in task {source!r} (known: {known})")
        return builtin_addition(count or 1000)
    path = Path(source).expanduser()
    if not path.is_file():
        raise UserError(f"task file {source} does not exist (a JSONL file, or builtin:NAME)")
    lines = [(i, line) for i, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
    if len(lines) < 2:
        raise UserError(f"{path}: a header line and at least one problem are needed")
    records = []
    for number, line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserError(f"{path}:{number}: not JSON: {error}") from None
        if not isinstance(record, dict):
            raise UserError(f"{path}:{number}: expected a JSON object, got {line[:60]!r}")
        records.append((number, record))
    task = parse_task(records, str(path))
    return task if count is None else _first(task, count)


def parse_task(records: list[tuple[int, dict]], file: str) -> Task:
    (header_line, header), *rows = records

    def fail(line: int, key: str, problem: str, allowed: str | None = None):
        raise UserError(f"{file}:{line}: {key}: {problem}" + (f" (allowed: {allowed})" if allowed else ""))

    for key in header:
        if key not in HEADER_KEYS:
            fail(header_line, key, "unknown header key", ", ".join(HEADER_KEYS))
    api, scorer = header.get("api", "completions"), header.get("scorer", "exact")
    if api not in APIS:
        fail(header_line, "api", f"{api!r} is not allowed", ", ".join(APIS))
    if scorer not in SCORERS:
        fail(header_line, "scorer", f"{scorer!r} is not allowed", ", ".join(SCORERS))
    pattern = header.get("pattern")
    if scorer == "regex":
        try:
            if pattern is None or re.compile(pattern).groups < 1:
                fail(header_line, "pattern", "the regex scorer needs a pattern with one group",
                     "e.g. \"#### (\\\\S+)\"")
        except re.error as error:
            fail(header_line, "pattern", f"not a regular expression: {error}")
    max_tokens = header.get("max_tokens", 16)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        fail(header_line, "max_tokens", f"expected a positive integer, got {max_tokens!r}")
    stop = header.get("stop", [])
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        fail(header_line, "stop", f"expected a string or a list of strings, got {stop!r}")

    def problem(line: int, record: dict, where: str) -> Problem:
        unknown = set(record) - {"prompt", "messages", "answer"}
        if unknown:
            fail(line, where, f"unknown keys {sorted(unknown)}", "prompt, messages, answer")
        if not isinstance(record.get("answer"), (str, int, float)) or isinstance(record.get("answer"), bool):
            fail(line, f"{where}.answer", "expected a string or a number")
        prompt, messages = record.get("prompt"), record.get("messages")
        if (prompt is None) == (messages is None):
            fail(line, where, "give exactly one of prompt and messages")
        if prompt is not None and not isinstance(prompt, str):
            fail(line, f"{where}.prompt", "expected a string")
        if messages is not None:
            if api != "chat":
                fail(line, f"{where}.messages", "messages need api: chat in the header")
            if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m and "content" in m
                                                         for m in messages):
                fail(line, f"{where}.messages", "expected a list of {role, content} objects")
        return Problem(str(record["answer"]), prompt, tuple(messages) if messages else None)

    shots = header.get("few_shot", [])
    if not isinstance(shots, list):
        fail(header_line, "few_shot", "expected a list of {prompt, answer} objects")
    few_shot = tuple(problem(header_line, s if isinstance(s, dict) else {}, f"few_shot[{i}]")
                     for i, s in enumerate(shots))
    if any(s.prompt is None for s in few_shot):
        fail(header_line, "few_shot", "few-shot examples need a prompt")
    return Task(name=str(header.get("task", Path(file).stem)), api=api, scorer=scorer, pattern=pattern,
                choices=str(header.get("choices", "ABCD")), max_tokens=max_tokens, stop=tuple(stop),
                few_shot=few_shot, shot_separator=str(header.get("shot_separator", "\n")),
                system=header.get("system"),
                problems=tuple(problem(line, record, "problem") for line, record in rows))


def _first(task: Task, count: int) -> Task:
    if count > len(task.problems):
        raise UserError(f"task {task.name}: {count} problems are needed for the gate's sample size, the file has "
                        f"{len(task.problems)} (add problems, or accept a larger detectable drop)")
    return Task(**{**task.__dict__, "problems": task.problems[:count]})


def builtin_addition(count: int) -> Task:
    """The oracle models' task on held-out problems (a seed training never uses)."""
    from llmconform.accuracy.oracle import problems

    held_out = problems(count, BUILTIN_HELD_OUT_SEED)
    return Task(name="addition", problems=tuple(Problem(p.answer, p.prompt) for p in held_out),
                scorer="exact", max_tokens=8)


def write(task: Task, path: Path) -> None:
    """The task as a JSONL file (the format `load` reads)."""
    header = {"task": task.name, "api": task.api, "scorer": task.scorer, "max_tokens": task.max_tokens,
              "stop": list(task.stop), "shot_separator": task.shot_separator,
              "few_shot": [{"prompt": s.prompt, "answer": s.answer} for s in task.few_shot]}
    if task.pattern:
        header["pattern"] = task.pattern
    if task.system:
        header["system"] = task.system
    rows = [{"prompt": p.prompt, "answer": p.answer} if p.messages is None
            else {"messages": list(p.messages), "answer": p.answer} for p in task.problems]
    path.write_text("\n".join(json.dumps(r) for r in [header, *rows]) + "\n")


# --- statistics --------------------------------------------------------------------------------------------------
_NORMAL = NormalDist()


def sample_size(expected: float, drop: float, alpha: float, power: float) -> int:
    """Problems per layout for a one-sided two-proportion test to detect a fall of `drop` from accuracy `expected`
    with false-alarm rate `alpha` and probability `power` (normal approximation, Fleiss)."""
    worse = max(expected - drop, 0.0)
    mean = (expected + worse) / 2
    z_alpha, z_power = _NORMAL.inv_cdf(1 - alpha), _NORMAL.inv_cdf(power)
    spread = z_alpha * math.sqrt(2 * mean * (1 - mean)) + z_power * math.sqrt(
        expected * (1 - expected) + worse * (1 - worse))
    return max(1, math.ceil((spread / drop) ** 2))


def detectable_drop(expected: float, n: int, alpha: float, power: float) -> float:
    """The smallest drop from `expected` that `n` problems per layout detect with `power` (bisection on
    sample_size)."""
    low, high = 1e-4, expected
    if sample_size(expected, high, alpha, power) > n:
        return math.inf
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if sample_size(expected, middle, alpha, power) > n else (low, middle)
    return high


def two_proportion_p_value(reference_correct: int, reference_n: int, candidate_correct: int,
                           candidate_n: int) -> float:
    """One-sided p-value that the candidate is less accurate than the reference (pooled z test); 1.0 when both
    are all right or all wrong (no variance: no evidence of a drop)."""
    pooled = (reference_correct + candidate_correct) / (reference_n + candidate_n)
    variance = pooled * (1 - pooled) * (1 / reference_n + 1 / candidate_n)
    if variance == 0:
        return 1.0
    z = (reference_correct / reference_n - candidate_correct / candidate_n) / math.sqrt(variance)
    return 1 - _NORMAL.cdf(z)


@dataclass(frozen=True)
class GatePolicy:
    """The matrix's `accuracy:` settings for one model."""

    task: str = "builtin:addition"
    floor: float = 0.0
    min_detectable_drop: float = 0.05
    alpha: float = 0.05
    power: float = 0.8
    expected_accuracy: float = 0.99
    concurrency: int = 16

    @property
    def problems(self) -> int:
        return sample_size(self.expected_accuracy, self.min_detectable_drop, self.alpha, self.power)


@dataclass
class Gate:
    """The verdict on one layout's accuracy."""

    correct: int
    n: int
    floor: float
    alpha: float
    power: float
    reference_correct: int | None = None
    reference_n: int | None = None
    p_value: float | None = None
    problems: list[str] = field(default_factory=list)
    detectable: float | None = None

    @property
    def accuracy(self) -> float:
        return self.correct / self.n

    @property
    def ok(self) -> bool:
        return not self.problems

    def explain(self) -> str:
        parts = [f"accuracy {self.accuracy:.2%} ({self.correct}/{self.n}), floor {self.floor:.2%}"]
        if self.reference_correct is not None and self.reference_n is not None:
            parts.append(f"reference {self.reference_correct / self.reference_n:.2%} "
                         f"({self.reference_correct}/{self.reference_n}), one-sided two-proportion p = "
                         f"{self.p_value:.3g} (alpha {self.alpha})")
        if self.detectable is not None:
            parts.append(f"with {self.n} problems a drop of {self.detectable:.1%} or more is detected with power "
                         f"{self.power:.0%}; smaller drops can go unnoticed" if math.isfinite(self.detectable)
                         else f"{self.n} problems cannot detect any drop with power {self.power:.0%}")
        return "; ".join(parts + self.problems)


def judge(correct: int, n: int, policy: GatePolicy, reference: tuple[int, int] | None) -> Gate:
    """The floor always; the two-proportion test against the reference layout when there is one."""
    gate = Gate(correct=correct, n=n, floor=policy.floor, alpha=policy.alpha, power=policy.power)
    if gate.accuracy < policy.floor:
        gate.problems.append(f"FAILED: accuracy {gate.accuracy:.2%} is below the floor {policy.floor:.2%}")
    if reference is not None:
        gate.reference_correct, gate.reference_n = reference
        gate.p_value = two_proportion_p_value(*reference, correct, n)
        gate.detectable = detectable_drop(max(reference[0] / reference[1], 1e-3), min(n, reference[1]),
                                          policy.alpha, policy.power)
        if gate.p_value < policy.alpha:
            gate.problems.append(f"FAILED: accuracy dropped against the reference (p = {gate.p_value:.3g} < alpha "
                                 f"{policy.alpha})")
    return gate


def gate_policy(section: dict, model_id: str) -> GatePolicy | None:
    """The gate of one model (None: the matrix has no `accuracy:` section)."""
    if not section:
        return None
    return GatePolicy(**{**{k: v for k, v in section.items() if k != "models"},
                         **section.get("models", {}).get(model_id, {})})
