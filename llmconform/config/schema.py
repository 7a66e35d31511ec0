"""The matrix's JSON Schema (matrix.schema.json, draft 2020-12: every key a matrix may have, with its type, range and
description; `llmconform schema` prints it for editors) and the one validator that checks a matrix or one of its
sections against it. Each schema error becomes the matrix's error style: the key path (`cases[2].floors`), what was
given and what is allowed. What a schema cannot say (layout grammar, names that refer to each other, files that
must exist) is checked by the parsers after it."""

from __future__ import annotations

import difflib
import functools
import json
from collections.abc import Callable, Iterable
from importlib import resources
from typing import Any, NoReturn

import jsonschema

Fail = Callable[[str, str, str | None], NoReturn]  # fail(path, problem, allowed) raises (matrix.py's _Reader.fail)

_TYPE_NAMES = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
               "number": "a number", "boolean": "a boolean (true or false)", "null": "nothing (null)"}


def text() -> str:
    return resources.files("llmconform.config").joinpath("matrix.schema.json").read_text()


@functools.cache
def schema() -> dict:
    return json.loads(text())


@functools.cache
def _validator(definition: str | None) -> jsonschema.Draft202012Validator:
    whole = schema()
    target = whole if definition is None else {"$defs": whole["$defs"], "$ref": f"#/$defs/{definition}"}
    return jsonschema.Draft202012Validator(target)


def check(value, fail: Fail, definition: str | None = None, path: str = "") -> None:
    """Validate `value` against the whole matrix schema, or against one of its `$defs` (`workload`, `compare`, ...)
    found at key path `path`; the first error found goes to `fail`."""
    errors = sorted(_validator(definition).iter_errors(value), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        fail(*_explain(errors[0], path))


def choices(definition: str, key: str) -> tuple[str, ...]:
    """The values a key of one of the schema's `$defs` may take (its enum): for code that offers them too."""
    return tuple(schema()["$defs"][definition]["properties"][key]["enum"])


def unknown_key(key, allowed: Iterable[str]) -> tuple[str, str]:
    """The problem and allowed text of a key that is not one of `allowed`, naming the nearest allowed key."""
    allowed = list(allowed)
    near = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
    return ("unknown key" + (f"; did you mean {near[0]!r}?" if near else ""), ", ".join(allowed))


def join(path: str, part) -> str:
    if isinstance(part, int):
        return f"{path}[{part}]"
    return f"{path}.{part}" if path else str(part)


def show(value) -> str:
    """What was given, as the user wrote it (YAML's names for the types)."""
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    if isinstance(value, dict):
        return f"a mapping {text}"
    if isinstance(value, list):
        return f"a list {text}"
    return text


def _explain(error: jsonschema.ValidationError, base: str) -> tuple[str, str, str | None]:
    path = base
    for part in error.absolute_path:
        path = join(path, part)
    # The error's fields are typed for any schema (a bool schema, or unset); the matrix schema's are set, mappings.
    kind = error.validator
    sub: Any = error.schema
    value: Any = error.instance
    expected: Any = error.validator_value
    if "propertyNames" in error.schema_path:  # a key of a mapping whose keys are restricted: the key is the value
        names = sub.get("enum")
        if names:
            return (join(path, value), *unknown_key(value, names))
        return path, f"keys must be non-empty strings, got {value!r}", None
    if kind in ("anyOf", "oneOf"):
        inner = _branch_errors(error)
        if inner:
            return _explain(inner[0], base)
        return path, f"expected {' or '.join(describe(b) for b in expected)}, got {show(value)}", None
    if kind == "additionalProperties":
        allowed = list(sub.get("properties", {}))
        extra = next(key for key in value if key not in allowed)
        return (join(path, extra), *unknown_key(extra, allowed))
    if kind == "required":
        missing = next(key for key in expected if key not in value)
        return join(path, missing), "missing required key", None
    if kind in ("enum", "const"):
        choices = expected if kind == "enum" else [expected]
        return path, f"{value!r} is not allowed", ", ".join(map(str, choices))
    if kind == "minProperties":
        return path, f"expected at least {expected} entry, got an empty mapping", None
    if kind in ("type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minItems", "minLength"):
        return path, f"expected {describe(sub)}, got {show(value)}", None
    if kind == "pattern":
        return path, f"{value!r} does not match the pattern {expected!r}", sub.get("description")
    return path, error.message, None


def _branch_errors(error: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
    """For a list or mapping that failed every branch of an anyOf: the errors of the one branch made for its type
    (a list of concurrencies whose third item is 0 says so, not that it is not a number either)."""
    if not isinstance(error.instance, (list, dict)):
        return []
    wanted = "array" if isinstance(error.instance, list) else "object"
    alternatives: Any = error.validator_value  # the anyOf's list of schemas
    branches = [i for i, b in enumerate(alternatives) if wanted in _types(b)]
    if len(branches) != 1:
        return []
    return sorted((e for e in error.context if e.schema_path[0] == branches[0]),
                  key=lambda e: list(map(str, e.absolute_path)))


def _types(sub: dict) -> list[str]:
    kind = sub.get("type", [])
    return [kind] if isinstance(kind, str) else list(kind)


def describe(sub: dict) -> str:
    """A schema as a phrase: 'an integer from 1 to 20', 'a number > 0', 'a list of a string', "'inf'"."""
    if "const" in sub:
        return repr(sub["const"])
    if "enum" in sub:
        return "one of " + ", ".join(map(str, sub["enum"]))
    if "anyOf" in sub:
        return " or ".join(describe(b) for b in sub["anyOf"])
    if "$ref" in sub:  # one of the schema's named definitions: named, not spelled out
        return f"a {sub['$ref'].rsplit('/', 1)[-1]}"
    names = [_TYPE_NAMES[t] for t in _types(sub)]
    noun = (", ".join(names[:-1]) + " or " + names[-1]) if len(names) > 1 else names[0] if names else "a value"
    if _types(sub) == ["array"] and "items" in sub:
        items = sub["items"]
        item = f"{items['$ref'].rsplit('/', 1)[-1]}s" if "$ref" in items else describe(items)
        noun = f"a {'non-empty ' if sub.get('minItems') else ''}list of {item}"
    if sub.get("minLength"):
        noun = noun.replace("a string", "a non-empty string")
    low = ("minimum", ">=") if "minimum" in sub else ("exclusiveMinimum", ">") if "exclusiveMinimum" in sub else None
    high = ("maximum", "<=") if "maximum" in sub else ("exclusiveMaximum", "<") if "exclusiveMaximum" in sub else None
    if low and high and low[1] == ">=" and high[1] == "<=":
        return f"{noun} from {sub[low[0]]} to {sub[high[0]]}"
    bounds = [f"{bound[1]} {sub[bound[0]]}" for bound in (low, high) if bound]
    return f"{noun} {' and '.join(bounds)}" if bounds else noun
