"""Validation against OpenAI's own OpenAPI document (github.com/openai/openai-openapi, "the source of truth"), in
addition to the hand-written schemas of `schema`: every problem names the component schema and the JSON path.

The pinned copy (`openai-openapi.json` beside this file) holds the component schemas reachable from ROOTS, taken
from one commit of that repository (recorded in the file); `scripts/refresh-openai-spec.py` re-takes it.

What engines cannot be expected to follow, and how it is read here (docs/openai-openapi.md says why):
- The document is OpenAPI 3.1 (JSON Schema 2020-12) but still marks some fields with the 3.0 keyword
  `nullable: true` (e.g. a stream chunk's `finish_reason`, `logprobs`, `usage`), which 3.1 ignores: read literally,
  every chunk OpenAI itself sends would be invalid. Here `nullable: true` means what its authors meant: null allowed.
- Streamed /v1/completions chunks reuse CreateCompletionResponse ("both the streamed and non-streamed response
  objects share the same shape"), whose `finish_reason` is not nullable; OpenAI's own chunks carry null until the
  choice ends. Chunks are validated with a nullable `finish_reason`.
- An optional field (one its object does not list as required) may be null: the engines' serializers write null
  for an unset optional field (vLLM: usage.prompt_tokens_details, message.annotations, message.function_call), and
  OpenAI's SDKs read null as absent. The hand-written schemas (`schema`) read optional fields the same way.
- Fields the document does not name are allowed (it sets no additionalProperties: false on responses), so engines'
  extensions (vLLM's `stop_reason`, `prompt_logprobs`, ...) pass.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path

PINNED_FILE = Path(__file__).with_name("openai-openapi.json")
SOURCE_REPOSITORY = "openai/openai-openapi"
SOURCE_PATH = "openapi.json"
# The responses the suites see, by component name; the pinned file keeps these and what they reference.
ROOTS = ("CreateCompletionResponse", "CreateChatCompletionResponse", "CreateChatCompletionStreamResponse",
         "ListModelsResponse", "Model", "ErrorResponse")
COMPLETION_CHUNK = "CreateCompletionResponse (stream chunk)"  # the chunk reading of CreateCompletionResponse


def extract(document: dict, commit: str, roots=ROOTS) -> dict:
    """The pinned form of a full OpenAPI document: provenance and the component schemas reachable from `roots`."""
    schemas = document["components"]["schemas"]
    missing = [r for r in roots if r not in schemas]
    if missing:
        raise ValueError(f"the OpenAPI document has no component schema(s) {missing}")
    kept: dict[str, dict] = {}
    pending = list(roots)
    while pending:
        name = pending.pop()
        if name not in kept:
            kept[name] = schemas[name]
            pending += _references(schemas[name])
    return {"source": f"https://github.com/{SOURCE_REPOSITORY}/blob/{commit}/{SOURCE_PATH}", "commit": commit,
            "openapi": document.get("openapi"), "info_version": (document.get("info") or {}).get("version"),
            "schemas": dict(sorted(kept.items()))}


def _references(node) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"].rsplit("/", 1)[-1]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in _references(value)]
    if isinstance(node, list):
        return [r for value in node for r in _references(value)]
    return []


def read_nullable(node):
    """Null allowed where OpenAPI 3.0's `nullable: true` says so (the document mixes it into 3.1 schemas) and for
    every optional property, recursively."""
    if isinstance(node, list):
        return [read_nullable(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: read_nullable(v) for k, v in node.items()}
    if isinstance(node.get("properties"), dict):
        required = set(node.get("required") or ())
        node["properties"] = {k: v if k in required else _or_null(v) for k, v in node["properties"].items()}
    if node.pop("nullable", False) is True:
        return _or_null(node)
    return node


def _or_null(node: dict) -> dict:
    return {"anyOf": [node, {"type": "null"}]}


@cache
def pinned(path: Path = PINNED_FILE) -> dict:
    return json.loads(Path(path).read_text())


@cache
def _validators(path: Path = PINNED_FILE) -> dict:
    from jsonschema import Draft202012Validator
    from referencing import Registry
    from referencing.jsonschema import DRAFT202012

    schemas = read_nullable(pinned(path)["schemas"])
    chunk = copy.deepcopy(schemas["CreateCompletionResponse"])
    finish = chunk["properties"]["choices"]["items"]["properties"]["finish_reason"]
    chunk["properties"]["choices"]["items"]["properties"]["finish_reason"] = _or_null(finish)
    document = {"components": {"schemas": {**schemas, COMPLETION_CHUNK: chunk}}}
    registry = Registry().with_resource("openapi", DRAFT202012.create_resource(document))
    return {name: Draft202012Validator({"$ref": f"openapi#/components/schemas/{name}"}, registry=registry)
            for name in document["components"]["schemas"]}


def validate(name: str, value, path: str = "$", document: Path = PINNED_FILE) -> list[str]:
    """Every way `value` breaks component schema `name`, each as 'openapi NAME: PATH: what is wrong' (a missing
    required field reads 'PATH.field: missing (required)', as the hand-written schemas say it)."""
    validators = _validators(document)
    if name not in validators:
        raise KeyError(f"no component schema {name!r} in {document} (known: {', '.join(sorted(validators))})")
    problems = []
    for error in sorted(validators[name].iter_errors(value), key=lambda e: list(map(str, e.absolute_path))):
        for leaf in _leaves(error):
            where = path + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in leaf.absolute_path)
            if leaf.validator == "required":
                missing = leaf.message.split("'")[1] if leaf.message.count("'") >= 2 else leaf.message
                problems.append(f"openapi {name}: {where}.{missing}: missing (required)")
            else:
                problems.append(f"openapi {name}: {where}: {_shorten(leaf.message)}")
    return list(dict.fromkeys(problems))


def _leaves(error):
    """The most specific errors: for an anyOf/oneOf, those of the alternative that got furthest (the one whose
    type matched), not 'is not valid under any of the given schemas'."""
    typed = [e for e in error.context or [] if e.validator != "type"]
    if error.validator in ("anyOf", "oneOf") and typed:
        deepest = max(len(e.absolute_path) for e in typed)
        return [leaf for e in typed if len(e.absolute_path) == deepest for leaf in _leaves(e)]
    return [error]


def _shorten(message: str) -> str:
    return message if len(message) <= 160 else message[:157] + "..."
