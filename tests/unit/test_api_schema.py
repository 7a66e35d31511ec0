import copy

import pytest

from llmconform.api import schema

COMPLETION = {
    "id": "cmpl-1", "object": "text_completion", "created": 1700000000, "model": "m",
    "choices": [{"index": 0, "text": "hi", "logprobs": None, "finish_reason": "length"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}
CHAT = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi", "refusal": None}, "logprobs": None,
                 "finish_reason": "stop"}],
}
CHUNK = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
         "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}


def changed(body: dict, path: tuple, value=...) -> dict:
    """A copy of body with the field at path set to value (or removed when value is omitted)."""
    copied = copy.deepcopy(body)
    target = copied
    for key in path[:-1]:
        target = target[key]
    if value is ...:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return copied


def test_valid_bodies_conform():
    assert schema.validate(schema.COMPLETION, COMPLETION) == []
    assert schema.validate(schema.CHAT_COMPLETION, CHAT) == []
    assert schema.validate(schema.CHAT_COMPLETION_CHUNK, CHUNK) == []


def test_unknown_fields_and_null_optional_fields_are_allowed():
    body = {**COMPLETION, "kv_transfer_params": None, "service_tier": None, "system_fingerprint": None,
            "usage": {**COMPLETION["usage"], "prompt_tokens_details": None}}
    body["choices"] = [{**COMPLETION["choices"][0], "stop_reason": None, "token_ids": [1]}]
    assert schema.validate(schema.COMPLETION, body) == []


@pytest.mark.parametrize("path, value, message", [
    (("created",), ..., "$.created: missing (required)"),
    (("created",), "1700000000", "$.created: expected integer, got string '1700000000'"),
    (("created",), 1.5, "$.created: expected integer, got number 1.5"),
    (("object",), "completion", "$.object: expected 'text_completion', got string 'completion'"),
    (("choices", 0, "finish_reason"), "abort",
     "$.choices[0].finish_reason: expected one of 'stop', 'length', 'content_filter', got string 'abort'"),
    (("choices", 0, "logprobs"), ..., "$.choices[0].logprobs: missing (required)"),
    (("choices", 0, "index"), True, "$.choices[0].index: expected integer, got boolean True"),
    (("usage", "total_tokens"), ..., "$.usage.total_tokens: missing (required)"),
    (("choices",), {}, "$.choices: expected array, got object {}"),
])
def test_completion_violations_name_the_field(path, value, message):
    assert schema.validate(schema.COMPLETION, changed(COMPLETION, path, value)) == [message]


@pytest.mark.parametrize("path, value, message", [
    (("choices", 0, "message", "refusal"), ..., "$.choices[0].message.refusal: missing (required)"),
    (("choices", 0, "message", "role"), "user", "$.choices[0].message.role: expected 'assistant', got string 'user'"),
    (("choices", 0, "message", "content"), 5, "$.choices[0].message.content: expected string, got integer 5"),
    (("choices", 0, "finish_reason"), None, ("$.choices[0].finish_reason: expected one of 'stop', 'length', "
                                             "'tool_calls', 'content_filter', 'function_call', got null None")),
])
def test_chat_violations_name_the_field(path, value, message):
    assert schema.validate(schema.CHAT_COMPLETION, changed(CHAT, path, value)) == [message]


def test_chat_logprobs_need_both_keys():
    logprobs = {"content": [{"token": "hi", "logprob": -0.1, "bytes": [104, 105], "top_logprobs": []}]}
    body = changed(CHAT, ("choices", 0, "logprobs"), logprobs)
    assert schema.validate(schema.CHAT_COMPLETION, body) == ["$.choices[0].logprobs.refusal: missing (required)"]
    body["choices"][0]["logprobs"]["refusal"] = None
    assert schema.validate(schema.CHAT_COMPLETION, body) == []


def test_tool_calls_are_checked_when_present():
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": {"city": "Paris"}}}
    body = changed(CHAT, ("choices", 0, "message", "tool_calls"), [call])
    assert schema.validate(schema.CHAT_COMPLETION, body) == [
        "$.choices[0].message.tool_calls[0].function.arguments: expected string, got object {'city': 'Paris'}"]


def test_completion_logprobs_allow_the_null_first_echo_entry():
    logprobs = {"tokens": ["a", "b"], "token_logprobs": [None, -1.0], "top_logprobs": [None, {"b": -1.0}],
                "text_offset": [0, 1]}
    assert schema.validate(schema.COMPLETION, changed(COMPLETION, ("choices", 0, "logprobs"), logprobs)) == []
    logprobs["top_logprobs"][1] = {"b": "-1"}
    assert schema.validate(schema.COMPLETION, changed(COMPLETION, ("choices", 0, "logprobs"), logprobs)) == [
        "$.choices[0].logprobs.top_logprobs[1]['b']: expected number, got string '-1'"]


def test_chunk_finish_reason_may_be_null_but_not_outside_the_enum():
    assert schema.validate(schema.CHAT_COMPLETION_CHUNK, changed(CHUNK, ("choices", 0, "finish_reason"), "stop")) == []
    assert schema.validate(schema.CHAT_COMPLETION_CHUNK, changed(CHUNK, ("choices", 0, "finish_reason"), "abort"))


def test_error_response_types():
    good = {"error": {"message": "bad", "type": "invalid_request_error", "param": None, "code": None}}
    assert schema.validate(schema.ERROR_RESPONSE, good) == []
    assert schema.validate(schema.ERROR_RESPONSE, changed(good, ("error", "code"), 400)) == [
        "$.error.code: expected string, got integer 400"]
    assert schema.validate(schema.ERROR_RESPONSE, changed(good, ("error", "param"), ...)) == [
        "$.error.param: missing (required)"]
    flat = {"object": "error", "message": "bad", "type": "BadRequestError", "param": None, "code": 400}
    assert schema.validate(schema.ERROR_RESPONSE, flat) == ["$.error: missing (required)"]


def test_models_list():
    listing = {"object": "list", "data": [{"id": "m", "object": "model", "created": 1, "owned_by": "me"}]}
    assert schema.validate(schema.MODEL_LIST, listing) == []
    assert schema.validate(schema.MODEL_LIST, changed(listing, ("data", 0, "owned_by"), ...)) == [
        "$.data[0].owned_by: missing (required)"]
