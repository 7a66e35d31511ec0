"""Declared deviations of engines from what the suites expect, per engine and version: the one declaration format of
known OpenAI API deviations and known engine failures (deviations.yaml beside this file; docs/engines.md, "Declared
deviations", describes the format).

Every entry names an engine, optionally its versions (a PEP 440 specifier set, judged by versions.in_range), a served
model pattern, a `match` regex, a `reason` (what and why, with its evidence), optionally a `source`, and an `effect`:
- `xfail-check` (the default): the check(s) `check` names (`*` matches any text, brackets are literal) become strict
  xfails when each of their problems matches `match`; a problem no deviation explains still fails the check; a check
  that passes although a deviation is declared fails as XPASS(strict), so a fixed deviation shows up.
- `known-failure`: an engine bug of the cases on `device` whose layout uses the `parallel` dimensions and sets the
  `flags`; a test of such a case that fails with `match` in the server's death report is an xfail whose reason is
  the declaration plus the diagnosis (known_failures.py); any other failure stays a failure.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.specifiers import InvalidSpecifier, SpecifierSet

from llmconform.config import userfiles
from llmconform.engines.versions import in_range
from llmconform.errors import UserError

if TYPE_CHECKING:
    from llmconform.config.case import Case

DEFAULT_FILE = Path(__file__).with_name("deviations.yaml")
# Extra deviation files (os.pathsep-separated), e.g. for an engine build of your own; read beside the packaged list.
ENV = "LLMCONFORM_DEVIATIONS"
XFAIL_CHECK = "xfail-check"
KNOWN_FAILURE = "known-failure"
COMMON = ("engine", "versions", "model", "effect", "match", "reason", "source")
KEYS = {XFAIL_CHECK: (*COMMON, "check"), KNOWN_FAILURE: (*COMMON, "device", "parallel", "flags")}
REQUIRED = {XFAIL_CHECK: ("engine", "check", "match", "reason"),
            KNOWN_FAILURE: ("engine", "effect", "match", "reason", "source")}
DEVICES = ("cpu", "cuda")
PARALLEL = {"tp": "tensor", "pp": "pipeline", "dp": "data", "adp": "attention data", "ep": "expert",
            "nodes": "multi-node"}

_added_files: list[Path] = []  # the `pytest_llmconform_deviations` hook's files


class DeviationFileError(UserError):
    pass


def add_file(path: Path) -> None:
    """A deviation file of a conftest or plugin (the `pytest_llmconform_deviations` hook), in force from now on."""
    if Path(path) not in _added_files:
        _added_files.append(Path(path))


def files_in_force() -> list[Path]:
    """The packaged deviations, the files LLMCONFORM_DEVIATIONS adds and those a conftest added."""
    from_env = [Path(p) for p in os.environ.get(ENV, "").split(os.pathsep) if p]
    return list(dict.fromkeys([DEFAULT_FILE, *from_env, *_added_files]))


def in_force() -> list[Deviation]:
    """Every deviation of the files in force (each file read once per process)."""
    return _load_files(tuple(files_in_force()))


@cache
def _load_files(files: tuple[Path, ...]) -> list[Deviation]:
    return [d for path in files for d in load(path)]


@dataclass(frozen=True)
class Deviation:
    engine: str
    versions: str  # PEP 440 specifier set, e.g. ">=0.32,<0.33"; "" means every version
    check: str  # xfail-check: check id pattern (`*` matches any text, everything else is literal); else ""
    match: str  # regex: searched in each problem of the check, or in a failed test's evidence
    reason: str
    model: str = ""  # served model id pattern; "" means every model
    effect: str = XFAIL_CHECK  # the default reads back the deviations of runs recorded before there were two effects
    source: str = ""  # where the deviation is seen or reported (an upstream issue, a doc section)
    device: str = ""  # known-failure: "cpu" or "cuda"; "" means both
    parallel: tuple[str, ...] = ()  # known-failure: layout dimensions that must exceed 1 (tp, pp, dp, adp, ep, nodes)
    flags: tuple[str, ...] = ()  # known-failure: engine flags the case must set (without the leading --)

    def __post_init__(self):
        # run.json stores the tuples as JSON lists; equal declarations must compare equal after the round trip.
        object.__setattr__(self, "parallel", tuple(self.parallel))
        object.__setattr__(self, "flags", tuple(self.flags))

    def applies_to(self, engine: str, version: str | None, check: str, model: str | None = None) -> bool:
        """An xfail-check deviation of this engine version and model that names this check."""
        if self.effect != XFAIL_CHECK or not matches_check(self.check, check):
            return False
        return self._applies(engine, version, model)

    def applies_to_case(self, case: Case, version: str | None) -> bool:
        """A known failure of this case at this version (the server's, else the planned one)."""
        if self.effect != KNOWN_FAILURE or (self.device and case.engine.device != self.device):
            return False
        if not self._applies(case.engine.name, version or case.engine.version, case.model.served_name):
            return False
        return all(getattr(case.layout, dimension) > 1 for dimension in self.parallel) \
            and all(_flag_set(case, flag) for flag in self.flags)

    def _applies(self, engine: str, version: str | None, model: str | None) -> bool:
        if engine != self.engine:
            return False
        if self.model and (model is None or not matches_check(self.model, model)):
            return False
        return in_range(version, self.versions)

    def explains(self, problem: str) -> bool:
        return re.search(self.match, problem) is not None

    def condition(self) -> str:
        """A known failure's case condition in words, e.g. 'pipeline parallelism and --enforce-eager'."""
        words = [f"{PARALLEL[d]} parallelism" if d != "nodes" else "several nodes" for d in self.parallel]
        return " and ".join(words + [f"--{flag}" for flag in self.flags]) or "any layout"

    def describe(self) -> str:
        versions = self.versions or "(every version)"
        device = f" on {self.device}" if self.device else ""
        source = f" ({self.source})" if self.source else ""
        return (f"known engine failure of {self.engine} {versions}{device} with {self.condition()}: "
                f"{self.reason}{source}")


def _flag_set(case: Case, name: str) -> bool:
    value = case.args.get(name, case.args.get(name.replace("-", "_")))
    return value is True or (isinstance(value, str) and value.lower() in ("1", "true", "yes"))


def matches_check(pattern: str, check: str) -> bool:
    return re.fullmatch(".*".join(re.escape(part) for part in pattern.split("*")), check) is not None


def load(path: Path = DEFAULT_FILE) -> list[Deviation]:
    what = "a YAML list of deviations (docs/engines.md, 'Declared deviations')"
    data = userfiles.read_yaml(Path(path), what)
    if not isinstance(data, list):
        raise DeviationFileError(f"{path}: expected a list of deviations, got {type(data).__name__}")
    return [_entry(entry, f"{path}: entry {i}") for i, entry in enumerate(data)]


def _entry(entry, where: str) -> Deviation:
    if not isinstance(entry, dict):
        raise DeviationFileError(f"{where}: expected a mapping with keys {', '.join(COMMON)} and the effect's keys")
    effect = entry.get("effect", XFAIL_CHECK)  # the files written before known failures joined them have no effect
    if effect not in KEYS:
        raise DeviationFileError(f"{where}: effect {effect!r} is not one of {', '.join(KEYS)} (xfail-check, the "
                                 "default: a strict xfail of the checks named by `check`; known-failure: a failure "
                                 "signature)")
    keys = KEYS[effect]
    unknown = sorted(set(entry) - set(keys))
    missing = [k for k in REQUIRED[effect] if not entry.get(k)]
    if unknown or missing:
        wrong = "; ".join(text for text in (unknown and f"unknown key(s) {unknown}",
                                           missing and f"missing key(s) {missing}") if text)
        optional = [k for k in keys if k not in REQUIRED[effect]]
        raise DeviationFileError(f"{where}: {wrong}; keys of effect {effect}: {', '.join(REQUIRED[effect])} "
                                 f"(optional: {', '.join(optional)})")
    versions = str(entry.get("versions") or "")
    try:
        SpecifierSet(versions)
    except InvalidSpecifier:
        raise DeviationFileError(f"{where}: versions {versions!r} is not a PEP 440 specifier set "
                                 "(e.g. '>=0.32,<0.33')") from None
    try:
        re.compile(entry["match"])
    except re.error as error:
        raise DeviationFileError(f"{where}: match {entry['match']!r} is not a regular expression: {error}") \
            from None
    device = str(entry.get("device") or "")
    if device and device not in DEVICES:
        raise DeviationFileError(f"{where}: device {device!r} is not one of {', '.join(DEVICES)} (omit it: both)")
    parallel = _names(entry.get("parallel"), f"{where}: parallel", tuple(PARALLEL))
    flags = _names(entry.get("flags"), f"{where}: flags", None)
    return Deviation(engine=str(entry["engine"]), versions=versions, check=str(entry.get("check") or ""),
                     match=str(entry["match"]), reason=str(entry["reason"]).strip(),
                     model=str(entry.get("model") or ""), effect=effect, source=str(entry.get("source") or ""),
                     device=device, parallel=parallel, flags=flags)


def _names(value, where: str, allowed: tuple[str, ...] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    expected = f"one of {', '.join(allowed)}" if allowed else "an engine flag without its leading --"
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise DeviationFileError(f"{where}: expected a list of names, each {expected}; got {value!r}")
    wrong = [v for v in value if (allowed and v not in allowed) or (not allowed and v.startswith("-"))]
    if wrong:
        raise DeviationFileError(f"{where}: {wrong} not allowed: each is {expected}")
    return tuple(value)


def for_check(deviations: list[Deviation], engine: str, version: str | None, check: str,
              model: str | None = None) -> list[Deviation]:
    return [d for d in deviations if d.applies_to(engine, version, check, model)]


def for_case(deviations: list[Deviation], case: Case, version: str | None) -> list[Deviation]:
    """The known failures declared for a case at this version."""
    return [d for d in deviations if d.applies_to_case(case, version)]
