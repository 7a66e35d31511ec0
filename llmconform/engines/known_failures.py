"""Known engine bugs are results, not test bugs.

A known failure is a deviations.yaml entry with `effect: known-failure`: the engine, the versions and device it
affects, the cases it applies to (layout dimensions, flags), the symptom, the log evidence that identifies it, and
the upstream issue (deviations.py reads it). A test of such a case that fails *with that evidence* in the server's
death report is reported as an expected failure (xfail) whose reason is the declaration plus the diagnosis; any
other failure stays a failure.
A suite that triggers the bug on purpose (the equivalence suite's collection test) fails when a declared case works
after all, so a declaration that no longer holds (the engine got fixed) is noticed instead of hiding a passing layout.

Register this module as a pytest plugin (`-p llmconform.engines.known_failures`, or from llmconform.pytest.plugin)
for the report hook below.
"""

from __future__ import annotations

import re

import pytest

from llmconform.config.case import Case
from llmconform.engines import deviations
from llmconform.engines.deviations import Deviation


def declared(case: Case, version: str | None) -> list[Deviation]:
    """The known failures in force that this case at this version may show."""
    return deviations.for_case(deviations.in_force(), case, version)


def recognise(case: Case, version: str | None, evidence: str) -> Deviation | None:
    """The declaration that explains `evidence` (a death report, a start error) for this case, if any."""
    return next((f for f in declared(case, version) if f.explains(evidence)), None)


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
