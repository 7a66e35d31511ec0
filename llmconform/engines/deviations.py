"""Known deviations of engines from the OpenAI API, per engine and version (deviations.yaml beside this file).

A deviation names the check(s) it affects (check ids such as `test_context_length_boundary[chat]`; `*` matches any
text, brackets are literal), the engine versions (a PEP 440 specifier set), and a regex that must match each problem
it explains: a check whose problems all match becomes a strict xfail with the reason; a problem no deviation explains
still fails the check; a check that passes although a deviation is declared fails as XPASS(strict), so a fixed
deviation shows up. An optional `model` pattern (`*` matches any text) limits a deviation to the served models it
names, for engine behaviour that only some tokenizers bring out (e.g. byte-fallback tokens)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet

from llmconform.config import userfiles
from llmconform.engines.versions import in_range
from llmconform.errors import UserError

DEFAULT_FILE = Path(__file__).with_name("deviations.yaml")
# Extra deviation files (os.pathsep-separated), e.g. for an engine build of your own; read beside the packaged list.
ENV = "LLMCONFORM_DEVIATIONS"
FIELDS = ("engine", "versions", "check", "match", "reason", "model")
OPTIONAL = ("versions", "model")


class DeviationFileError(UserError):
    pass


def files_in_force() -> list[Path]:
    """The packaged deviations and the files LLMCONFORM_DEVIATIONS adds."""
    return [DEFAULT_FILE, *(Path(p) for p in os.environ.get(ENV, "").split(os.pathsep) if p)]


@dataclass(frozen=True)
class Deviation:
    engine: str
    versions: str  # PEP 440 specifier set, e.g. ">=0.32,<0.33"; "" means every version
    check: str  # check id pattern: `*` matches any text, everything else (brackets included) is literal
    match: str  # regex searched in each problem this deviation explains
    reason: str
    model: str = ""  # served model id pattern; "" means every model

    def applies_to(self, engine: str, version: str | None, check: str, model: str | None = None) -> bool:
        if engine != self.engine or not matches_check(self.check, check):
            return False
        if self.model and (model is None or not matches_check(self.model, model)):
            return False
        return in_range(version, self.versions)

    def explains(self, problem: str) -> bool:
        return re.search(self.match, problem) is not None


def matches_check(pattern: str, check: str) -> bool:
    return re.fullmatch(".*".join(re.escape(part) for part in pattern.split("*")), check) is not None


def load(path: Path = DEFAULT_FILE) -> list[Deviation]:
    data = userfiles.read_yaml(Path(path), "a YAML list of deviations with keys " + ", ".join(FIELDS))
    if not isinstance(data, list):
        raise DeviationFileError(f"{path}: expected a list of deviations, got {type(data).__name__}")
    deviations = []
    for i, entry in enumerate(data):
        where = f"{path}: entry {i}"
        if not isinstance(entry, dict):
            raise DeviationFileError(f"{where}: expected a mapping with keys {', '.join(FIELDS)}")
        unknown = sorted(set(entry) - set(FIELDS))
        missing = [k for k in FIELDS if k not in OPTIONAL and not entry.get(k)]
        if unknown or missing:
            wrong = "; ".join(text for text in (unknown and f"unknown key(s) {unknown}",
                                               missing and f"missing key(s) {missing}") if text)
            raise DeviationFileError(f"{where}: {wrong}; keys: {', '.join(FIELDS)} ({' and '.join(OPTIONAL)} "
                                     "optional)")
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
        deviations.append(Deviation(engine=str(entry["engine"]), versions=versions, check=str(entry["check"]),
                                    match=str(entry["match"]), reason=str(entry["reason"]).strip(),
                                    model=str(entry.get("model") or "")))
    return deviations


def for_check(deviations: list[Deviation], engine: str, version: str | None, check: str,
              model: str | None = None) -> list[Deviation]:
    return [d for d in deviations if d.applies_to(engine, version, check, model)]
