"""OpenAI's OpenAPI document as the suites read it: the pinned copy, how its 3.0 leftovers are read, and what a
violation report says."""

import copy
import json

import pytest
from test_api_schema import CHAT, CHUNK, COMPLETION

from llmconform.api import openapi


def test_pinned_copy_records_where_it_came_from():
    pinned = openapi.pinned()
    assert pinned["source"] == (f"https://github.com/openai/openai-openapi/blob/{pinned['commit']}/openapi.json")
    assert len(pinned["commit"]) == 40 and pinned["openapi"].startswith("3.1")
    assert set(openapi.ROOTS) <= set(pinned["schemas"])
    # Everything a kept schema references is kept too.
    text = json.dumps(pinned["schemas"])
    referenced = {part.split('"')[0] for part in text.split("#/components/schemas/")[1:]}
    assert referenced <= set(pinned["schemas"])


def test_extract_keeps_the_roots_and_what_they_reference():
    document = {"openapi": "3.1.0", "info": {"version": "9"}, "components": {"schemas": {
        "A": {"type": "object", "properties": {"b": {"$ref": "#/components/schemas/B"}}},
        "B": {"anyOf": [{"$ref": "#/components/schemas/C"}, {"type": "null"}]},
        "C": {"type": "string"}, "Unrelated": {"type": "integer"}}}}
    pinned = openapi.extract(document, "f" * 40, roots=("A",))
    assert sorted(pinned["schemas"]) == ["A", "B", "C"]
    assert pinned["info_version"] == "9" and pinned["commit"] == "f" * 40
    with pytest.raises(ValueError, match=r"no component schema\(s\) \['Missing'\]"):
        openapi.extract(document, "f" * 40, roots=("Missing",))


def test_nullable_and_optional_fields_may_be_null():
    read = openapi.read_nullable({"type": "object", "required": ["x", "y"], "properties": {
        "x": {"type": "string", "nullable": True}, "y": {"type": "string"}, "z": {"type": "integer"}}})
    assert read["properties"] == {"x": {"anyOf": [{"type": "string"}, {"type": "null"}]}, "y": {"type": "string"},
                                  "z": {"anyOf": [{"type": "integer"}, {"type": "null"}]}}


def test_null_optional_fields_pass_null_required_ones_do_not():
    body = {**CHAT, "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2,
                              "prompt_tokens_details": None}, "system_fingerprint": None}
    assert openapi.validate("CreateChatCompletionResponse", body) == []
    assert openapi.validate("CreateChatCompletionResponse", {**CHAT, "created": None}) == [
        "openapi CreateChatCompletionResponse: $.created: None is not of type 'integer'"]


def test_conforming_bodies_pass():
    assert openapi.validate("CreateCompletionResponse", COMPLETION) == []
    assert openapi.validate("CreateChatCompletionResponse", CHAT) == []
    # A chunk's nullable finish_reason and logprobs are 3.0 `nullable` in a 3.1 document: null is allowed.
    assert openapi.validate("CreateChatCompletionStreamResponse", {**CHUNK, "usage": None}) == []


def test_completion_chunks_may_carry_null_finish_reason():
    chunk = copy.deepcopy(COMPLETION)
    chunk["choices"][0]["finish_reason"] = None
    chunk["usage"] = None
    assert openapi.validate(openapi.COMPLETION_CHUNK, chunk) == []
    assert openapi.validate("CreateCompletionResponse", chunk) == [
        "openapi CreateCompletionResponse: $.choices[0].finish_reason: None is not of type 'string'",
        "openapi CreateCompletionResponse: $.choices[0].finish_reason: None is not one of ['stop', 'length', "
        "'content_filter']"]


def test_violations_name_the_schema_and_the_path():
    body = copy.deepcopy(CHAT)
    body["choices"][0]["logprobs"] = {"content": []}
    body["service_tier"] = "standard"
    del body["created"]
    assert openapi.validate("CreateChatCompletionResponse", body) == [
        "openapi CreateChatCompletionResponse: $.created: missing (required)",
        "openapi CreateChatCompletionResponse: $.choices[0].logprobs.refusal: missing (required)",
        "openapi CreateChatCompletionResponse: $.service_tier: 'standard' is not one of ['auto', 'default', 'flex', "
        "'scale', 'priority', 'fast']"]
    assert openapi.validate("ErrorResponse", {"error": {"message": "m", "type": "t", "param": None, "code": 400}},
                            "body") == [
        "openapi ErrorResponse: body.error.code: 400 is not valid under any of the given schemas"]


def test_unknown_schema_is_an_error():
    with pytest.raises(KeyError, match="no component schema 'Nope'"):
        openapi.validate("Nope", {})
