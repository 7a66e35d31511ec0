"""OpenAI API conformance: structured output, tool calls and authentication."""

# The `conformance` fixture is imported by name; pytest passes it to the checks' parameters of that name.

import httpx
import pytest

from llmconform.api import checks, error_answers, schema
from llmconform.api.calls import answer_problems, post, stream
from llmconform.api.endpoints import CHAT, COMPLETIONS, ENDPOINTS

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
    problems = error_answers.status_problems(answer.status, 200, answer.text)
    body = answer.json if answer.status == 200 else None
    inconclusive = None
    if body is not None:
        problems += schema.validate(schema.CHAT_COMPLETION, body) + answer_problems(llm, CHAT, body)
    if body is not None and not problems:
        choice = body["choices"][0]
        judged, inconclusive = checks.generated_json_problems(CHAT.text(choice), ANSWER_SCHEMA,
                                                              choice["finish_reason"], "content")
        problems += judged
    conformance.require(problems)
    if inconclusive:
        pytest.skip(inconclusive)


def test_tool_choice_required(llm, conformance):
    """Spec: tool_choice "required": "the model must call one or more tools": message.tool_calls[] of type
    "function" naming a given tool, arguments a JSON object valid for its parameters; finish_reason "tool_calls"."""
    answer = post(llm, CHAT.path, CHAT.body(llm.model, "What is the weather in Paris?", max_tokens=100,
                                            temperature=0, tools=[WEATHER_TOOL], tool_choice="required"))
    skip_if_refused(answer, 'tools with tool_choice="required"')
    problems = error_answers.status_problems(answer.status, 200, answer.text)
    body = answer.json if answer.status == 200 else None
    if body is not None:
        problems += schema.validate(schema.CHAT_COMPLETION, body) + answer_problems(llm, CHAT, body)
    if body is not None and not problems:
        choice = body["choices"][0]
        calls = choice["message"].get("tool_calls") or []
        problems += tool_calls_problems(calls, choice["finish_reason"], TOOL_FINISH["required"])
    conformance.require(problems)


# finish_reason after forced tool calls, as OpenAI answers (vLLM PR#25054 recorded it: "tool_calls" for
# tool_choice "required", "stop" for a named function, streamed or not); the spec's text ("tool_calls if the model
# called a tool") allows "tool_calls" for a named function too.
TOOL_FINISH = {"required": ("tool_calls",), "named": ("stop", "tool_calls")}
TOOL_CHOICES = {"required": "required", "named": {"type": "function", "function": {"name": "get_weather"}}}


def tool_calls_problems(calls: list[dict], finish_reason, expected_finish: tuple[str, ...]) -> list[str]:
    """Each call names a given tool with arguments valid for its parameters; the choice ends with an expected
    finish_reason, or "length" when max_tokens cut the arguments (then a valid JSON prefix is inconclusive, and the
    check skips saying so)."""
    problems, inconclusive = [], None
    if not calls:
        problems.append("no tool_calls although the tool_choice forces one")
    for i, call in enumerate(calls):
        if call["function"]["name"] != "get_weather":
            problems.append(f"tool_calls[{i}] names {call['function']['name']!r}, not a given tool")
        judged, cut = checks.generated_json_problems(call["function"]["arguments"], WEATHER_PARAMETERS,
                                                     finish_reason, f"tool_calls[{i}].arguments")
        problems += judged
        inconclusive = inconclusive or cut
    if finish_reason not in (*expected_finish, "length"):
        problems.append(f"finish_reason {finish_reason!r} after tool calls (expected "
                        f"{' or '.join(map(repr, expected_finish))})")
    if inconclusive and not problems:
        pytest.skip(inconclusive)
    return problems


def streamed_tool_calls(chunks: list[dict]) -> tuple[dict[int, dict], list[str]]:
    """(choice 0's tool calls by tool index, assembled from the deltas, problems): the first delta of each call
    carries its id, type "function" and function name; later deltas add argument pieces."""
    calls: dict[int, dict] = {}
    problems = []
    for i, chunk in enumerate(chunks):
        for choice in chunk.get("choices") or []:
            if choice.get("index") != 0:
                continue
            for delta in (choice.get("delta") or {}).get("tool_calls") or []:
                index, function = delta.get("index"), delta.get("function") or {}
                if index not in calls:
                    missing = [k for k, v in (("id", delta.get("id")), ("type", delta.get("type")),
                                              ("function.name", function.get("name"))) if not v]
                    if missing:
                        problems.append(f"chunk[{i}]: the first delta of tool call {index} lacks "
                                        f"{', '.join(missing)}: {delta}")
                    calls[index] = {"id": delta.get("id"), "type": delta.get("type"),
                                    "function": {"name": function.get("name"), "arguments": ""}}
                calls[index]["function"]["arguments"] += function.get("arguments") or ""
    return calls, problems


@pytest.mark.parametrize("choice", list(TOOL_CHOICES))
def test_stream_tool_calls(llm, conformance, choice):
    """Spec: ChatCompletionMessageToolCallChunk: the first streamed chunk of a tool call carries index, id, type
    "function" and function.name, and the arguments' pieces concatenate to JSON valid for the tool's parameters; at
    temperature 0 the streamed calls and finish_reason equal the non-streamed answer's (vLLM#16340: no type with a
    named tool_choice; vLLM PR#25054: finish_reason differed between streamed and not)."""
    request = CHAT.body(llm.model, "What is the weather in Paris?", max_tokens=100, temperature=0,
                        tools=[WEATHER_TOOL], tool_choice=TOOL_CHOICES[choice])
    answer = post(llm, CHAT.path, request)
    skip_if_refused(answer, f"tools with tool_choice {TOOL_CHOICES[choice]!r}")
    problems = error_answers.status_problems(answer.status, 200, answer.text)
    body = answer.json if answer.status == 200 else None
    if body is not None:
        problems += schema.validate(schema.CHAT_COMPLETION, body) + answer_problems(llm, CHAT, body)
    if body is not None and not problems:
        expected = body["choices"][0]
        problems += tool_calls_problems(expected["message"].get("tool_calls") or [], expected["finish_reason"],
                                        TOOL_FINISH[choice])
    result, streamed_problems = calls_stream(llm, request)
    problems += streamed_problems
    chunks = result.chunks()
    calls, call_problems = streamed_tool_calls(chunks)
    problems += call_problems
    finish = (checks.assemble(chunks, chat=True).get(0) or checks.StreamedChoice()).finish_reasons
    problems += ["streamed " + p for p in tool_calls_problems(list(calls.values()), finish[-1] if finish else None,
                                                              TOOL_FINISH[choice])]
    if body is not None and not problems:
        summary = [(c["function"]["name"], c["function"]["arguments"]) for c in expected["message"]["tool_calls"]]
        streamed = [(c["function"]["name"], c["function"]["arguments"]) for c in calls.values()]
        if streamed != summary:
            problems.append(f"streamed tool calls {streamed} != non-streamed {summary}")
        if finish != [expected["finish_reason"]]:
            problems.append(f"streamed finish_reason {finish} != non-streamed {expected['finish_reason']!r}")
    conformance.require(problems)


def calls_stream(llm, request: dict):
    """The streamed form of a chat request (its prompt is the request's only user message)."""
    params = {k: v for k, v in request.items() if k not in ("model", "messages")}
    return stream(llm, CHAT, request["messages"][0]["content"], **params)


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
                     for p in error_answers.status_problems(response.status_code, 401, response.text)]
    models = httpx.get(f"{llm.base_url}/v1/models", headers=headers, timeout=60)
    problems += [f"GET /v1/models ({credentials}): {p}"
                 for p in error_answers.status_problems(models.status_code, 401, models.text)]
    allowed = post(llm, COMPLETIONS.path, COMPLETIONS.body(llm.model, "Hi", max_tokens=1))
    problems += [f"with the key: {p}" for p in error_answers.status_problems(allowed.status, 200, allowed.text)]
    conformance.require(problems)


def test_auth_error_object(llm, conformance):
    """Spec: ErrorResponse for the 401: {error: {message, type, param, code}} (OpenAI: invalid_api_key)."""
    require_api_key(llm)
    response = unauthenticated(llm, COMPLETIONS, {})
    problems = error_answers.status_problems(response.status_code, 401, response.text)
    conformance.require(problems or error_answers.error_object_problems(response.text))
