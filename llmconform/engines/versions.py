"""Engine versions against declared ranges: the one matcher of the declared deviations (deviations.yaml: API
deviations and known engine failures) and the engines' version-dependent flags."""

from __future__ import annotations

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version


def in_range(version: str | None, specifier: str) -> bool:
    """Whether an engine version meets a PEP 440 specifier set ('>=0.32,<0.33'; '' means every version), judged on
    its release numbers: a pre-release or local build ('0.32.0rc1', '0.32.0+cpu', 'v0.32.0') counts as that
    release, whose bugs it has. An unknown or unreadable version is taken as in range: the declaration applies,
    and its reason says what it is about."""
    if not specifier or not version:
        return True
    try:
        release = Version(version.strip().lstrip("v")).base_version
    except InvalidVersion:
        return True
    return SpecifierSet(specifier).contains(release)
