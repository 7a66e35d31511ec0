"""OpenAI API conformance: structured output, tool calls and authentication."""

# The `conformance` fixture is imported by name; pytest passes it to the checks' parameters of that name.
# ruff: noqa: F811

import json

import httpx
import jsonschema
import pytest

from llmconform.api import errors, schema
from llmconform.api.calls import post
from llmconform.api.endpoints import CHAT, COMPLETIONS, ENDPOINTS
from llmconform.api.fixture import conformance  # noqa: F401

ANSWER_SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}, "confidence": {"type": "integer"}},
    "required": ["answer", "confidence"],
    "additionalProperties": False,
}
WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}},
    "required": ["city"],
    "additionalProperties": False,
}
WEATHER_TOOL = {"type": "function",
                "function": {"name": "get_weather", "description": "Current weather in a city",
                             "parameters": WEATHER_PARAMETERS}}


def skip_if_refused(answer, feature: str) -> None:
    """A 400 is the engine saying it cannot do this here (no grammar backend, no tool parser configured)."""
    if answer.status == 400:
        pytest.skip(f"the engine refused {feature}: {answer.text[:300]}")


def test_response_format_json_schema(llm, conformance):
    """Spec: CreateChatCompletionRequest.response_format {type: "json_schema", json_schema: {name, schema, strict}}:
    the message content is JSON that validates against the schema."""
    answer = post(llm, CHAT.path, CHAT.body(llm.model, "Is the sky blue? Answer in JSON.", max_tokens=200,
                                            temperature=0, response_format={
                                                "type": "json_schema",
                                                "json_schema": {"name": "answer", "strict": True,
                                                                "schema": ANSWER_SCHEMA}}))
    skip_if_refused(answer, "response_format json_schema")
    problems = errors.status_problems(answer.status, 200, answer.text)
    body = answer.json if answer.status == 200 else None
    if body is not None:
        problems += schema.validate(schema.CHAT_COMPLETION, body)
        content = CHAT.text(body["choices"][0]) if not problems else ""
        try:
            jsonschema.validate(json.loads(content), ANSWER_SCHEMA)
        except ValueError as error:  # json.JSONDecodeError
            problems.append(f"content is not JSON ({error}): {content!r}")
        except jsonschema.ValidationError as error:
            problems.append(f"content does not validate against the schema: {error.message}: {content!r}")
    conformance.require(problems)


def test_tool_choice_required(llm, conformance):
    """Spec: tool_choice "required": "the model must call one or more tools": message.tool_calls[] of type
    "function" naming a given tool, arguments a JSON object valid for its parameters; finish_reason "tool_calls"."""
    answer = post(llm, CHAT.path, CHAT.body(llm.model, "What is the weather in Paris?", max_tokens=100,
                                            temperature=0, tools=[WEATHER_TOOL], tool_choice="required"))
    skip_if_refused(answer, 'tools with tool_choice="required"')
    problems = errors.status_problems(answer.status, 200, answer.text)
    body = answer.json if answer.status == 200 else None
    if body is not None:
        problems += schema.validate(schema.CHAT_COMPLETION, body)
    if body is not None and not problems:
        choice = body["choices"][0]
        calls = choice["message"].get("tool_calls") or []
        if not calls:
            problems.append(f"no tool_calls although tool_choice is 'required': {choice['message']}")
        for i, call in enumerate(calls):
            if call["function"]["name"] != "get_weather":
                problems.append(f"tool_calls[{i}] names {call['function']['name']!r}, not a given tool")
            try:
                jsonschema.validate(json.loads(call["function"]["arguments"]), WEATHER_PARAMETERS)
            except ValueError as error:
                problems.append(f"tool_calls[{i}].arguments is not JSON ({error}): "
                                f"{call['function']['arguments']!r}")
            except jsonschema.ValidationError as error:
                problems.append(f"tool_calls[{i}].arguments do not fit the parameters: {error.message}")
        if choice["finish_reason"] != "tool_calls":
            problems.append(f"finish_reason {choice['finish_reason']!r} after tool calls (expected 'tool_calls')")
    conformance.require(problems)


def unauthenticated(llm, endpoint, headers: dict) -> httpx.Response:
    """A request that bypasses the handle's client, which always sends the key."""
    return httpx.post(f"{llm.base_url}{endpoint.path}", json=endpoint.body(llm.model, "Hi", max_tokens=1),
                      headers=headers, timeout=60)


def require_api_key(llm) -> None:
    if not llm.api_key:
        pytest.skip("the server was started without an API key: give the case args {api-key: KEY} "
                    "(or --llm-api-key for an attached server) to check authentication")


@pytest.mark.parametrize("credentials", ["none", "wrong-key"])
def test_auth_required(llm, conformance, credentials):
    """Spec: security ApiKeyAuth (HTTP bearer): a server started with an API key answers 401 to a request without
    it or with another key, and 200 with it."""
    require_api_key(llm)
    headers = {} if credentials == "none" else {"Authorization": f"Bearer not-{llm.api_key}"}
    problems = []
    for endpoint in ENDPOINTS:
        response = unauthenticated(llm, endpoint, headers)
        problems += [f"POST {endpoint.path} ({credentials}): {p}"
                     for p in errors.status_problems(response.status_code, 401, response.text)]
    models = httpx.get(f"{llm.base_url}/v1/models", headers=headers, timeout=60)
    problems += [f"GET /v1/models ({credentials}): {p}"
                 for p in errors.status_problems(models.status_code, 401, models.text)]
    allowed = post(llm, COMPLETIONS.path, COMPLETIONS.body(llm.model, "Hi", max_tokens=1))
    problems += [f"with the key: {p}" for p in errors.status_problems(allowed.status, 200, allowed.text)]
    conformance.require(problems)


def test_auth_error_object(llm, conformance):
    """Spec: ErrorResponse for the 401: {error: {message, type, param, code}} (OpenAI: invalid_api_key)."""
    require_api_key(llm)
    response = unauthenticated(llm, COMPLETIONS, {})
    problems = errors.status_problems(response.status_code, 401, response.text)
    conformance.require(problems or errors.error_object_problems(response.text))
