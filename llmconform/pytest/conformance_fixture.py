"""The `conformance` fixture: names the running check, records it for the conformance table, applies the engine's
known deviations as strict xfails, and judges the check's problems.

The plugin registers this module (suites ask for the fixture by name, without importing it); each check ends with
`conformance.require(problems)`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NoReturn

import httpx
import pytest

from llmconform.api import PROPERTY
from llmconform.engines import deviations as known


class KnownDeviation(Exception):
    """The check failed only in ways the engine's declared deviations explain (an expected, strict xfail)."""


@dataclass
class Conformance:
    check: str
    spec: str
    deviations: list[known.Deviation] = field(default_factory=list)
    recorded: dict = field(default_factory=dict)  # the check's `conformance` property, written into the results


    def require(self, problems: list[str]) -> None:
        """Pass when there are no problems; fail on any problem no declared deviation explains; otherwise raise
        KnownDeviation, which the strict xfail the fixture applied expects."""
        # Recorded whatever the outcome: `llmconform compare` judges a check by what it did, not by its label.
        self.recorded["problems"] = list(problems)
        if problems:
            self.stop(problems)

    def stop(self, problems: list[str]) -> NoReturn:
        """require() where the problems leave the check nothing more to check (e.g. the request it measures failed):
        fail, or raise KnownDeviation when declared deviations explain every problem."""
        assert problems, f"{self.check} stopped without naming a problem"
        self.recorded["problems"] = list(problems)
        undeclared = [p for p in problems if not any(d.explains(p) for d in self.deviations)]
        if undeclared:
            pytest.fail(f"{self.check} ({self.spec}):\n  " + "\n  ".join(undeclared), pytrace=False)
        raise KnownDeviation("; ".join(problems))


def check_id(name: str, callspec_id: str | None, llm_id: str) -> str:
    """`test_x[chat]` from the test's name and its parameters other than the server's (`chat-vllm-m-tp1`)."""
    if not callspec_id:
        return name
    rest = "-".join(part for part in callspec_id.replace(llm_id, "").split("-") if part)
    return f"{name}[{rest}]" if rest else name


def spec_of(function) -> str:
    """The `Spec:` paragraph of a check's docstring: the OpenAI spec field or text the check enforces."""
    lines, inside = [], False
    for line in (function.__doc__ or "").splitlines():
        line = line.strip()
        if line.startswith("Spec:"):
            inside, line = True, line[len("Spec:"):].strip()
        elif inside and not line:
            break
        if inside:
            lines.append(line)
    return " ".join(lines)


def engine_version(llm) -> str | None:
    """The handle's version, or what an attached server's /version says (asked once per server)."""
    if llm.engine_version:
        return llm.engine_version
    if "probed_version" not in llm.extra:
        try:
            response = httpx.get(f"{llm.base_url}/version", headers=llm.headers, timeout=10)
            llm.extra["probed_version"] = response.json().get("version") if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError, AttributeError):
            llm.extra["probed_version"] = None
    return llm.extra["probed_version"]


@pytest.fixture
def conformance(request, llm, record_property) -> Conformance:
    callspec = getattr(request.node, "callspec", None)
    name = check_id(request.node.originalname, callspec.id if callspec else None, llm.id)
    version = engine_version(llm)
    matching = known.for_check(known.in_force(), llm.engine, version, name, llm.model)
    spec = spec_of(request.function)
    recorded = {"check": name, "spec": spec, "engine_version": version}
    checker = Conformance(check=name, spec=spec, deviations=matching, recorded=recorded)
    reason = None
    if matching:
        reason = " | ".join(d.reason for d in matching)
        if version is None:
            reason += " (engine version unknown: assumed affected)"
        request.applymarker(pytest.mark.xfail(strict=True, raises=KnownDeviation, reason=reason))
    recorded["deviation"] = reason
    record_property(PROPERTY, recorded)
    return checker
