"""OpenAI API conformance: invalid requests get 4xx answers with the OpenAI error object, never a 500, and the
server keeps serving."""

# The `conformance` fixture is imported by name; pytest passes it to the checks' parameters of that name.

import pytest

from llmconform.api import error_answers
from llmconform.api.calls import health_problems, post
from llmconform.api.endpoints import CHAT, COMPLETIONS, ENDPOINTS

by_endpoint = pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[e.name for e in ENDPOINTS])


def rejected(llm, path: str, body, status: int) -> list[str]:
    """The request gets `status` with an error envelope, and the server is healthy afterwards."""
    answer = post(llm, path, body)
    problems = error_answers.status_problems(answer.status, status, answer.text)
    if answer.status == status:
        problems += error_answers.envelope_problems(answer.text)
    return problems + health_problems(llm)


@by_endpoint
def test_unknown_model_rejected(llm, conformance, endpoint):
    """Spec: model: "ID of the model to use"; a model the server does not serve is 404 (OpenAI: model_not_found)."""
    conformance.require(rejected(llm, endpoint.path, endpoint.body("no-such-model-llmconform", "Hi", max_tokens=1),
                                 404))


@by_endpoint
def test_malformed_json_rejected(llm, conformance, endpoint):
    """Spec: requestBody application/json: a body that is not JSON is a 400, not a 500."""
    conformance.require(rejected(llm, endpoint.path, b'{"model": "m", "prompt": ', 400))


# (endpoint, what is wrong, request fields that replace the valid ones; None removes a field)
INVALID_REQUESTS = [
    (COMPLETIONS, "max_tokens-string", {"max_tokens": "ten"}),
    (COMPLETIONS, "temperature-string", {"temperature": "hot"}),
    (COMPLETIONS, "n-string", {"n": "two"}),
    (COMPLETIONS, "stop-integer", {"stop": 5}),
    (COMPLETIONS, "prompt-object", {"prompt": {"text": "Hi"}}),
    (COMPLETIONS, "prompt-missing", {"prompt": None}),
    (COMPLETIONS, "model-missing", {"model": None}),
    (COMPLETIONS, "temperature-3", {"temperature": 3}),
    (COMPLETIONS, "temperature-negative", {"temperature": -1}),
    (COMPLETIONS, "top_p-1.5", {"top_p": 1.5}),
    (COMPLETIONS, "n-0", {"n": 0}),
    (COMPLETIONS, "n-129", {"n": 129}),
    (COMPLETIONS, "max_tokens-negative", {"max_tokens": -1}),
    (COMPLETIONS, "presence_penalty-3", {"presence_penalty": 3}),
    (COMPLETIONS, "frequency_penalty-minus-3", {"frequency_penalty": -3}),
    (COMPLETIONS, "stop-5-items", {"stop": ["a", "b", "c", "d", "e"]}),
    (COMPLETIONS, "logprobs-negative", {"logprobs": -1}),
    (CHAT, "messages-string", {"messages": "Hi"}),
    (CHAT, "messages-empty", {"messages": []}),
    (CHAT, "messages-missing", {"messages": None}),
    (CHAT, "message-role-unknown", {"messages": [{"role": "narrator", "content": "Hi"}]}),
    (CHAT, "max_tokens-string", {"max_tokens": "ten"}),
    (CHAT, "model-missing", {"model": None}),
    (CHAT, "temperature-3", {"temperature": 3}),
    (CHAT, "top_logprobs-negative", {"logprobs": True, "top_logprobs": -1}),
    (CHAT, "stop-5-items", {"stop": ["a", "b", "c", "d", "e"]}),
]


@pytest.mark.parametrize("endpoint, wrong, fields", INVALID_REQUESTS,
                         ids=[f"{e.name}-{wrong}" for e, wrong, _ in INVALID_REQUESTS])
def test_invalid_request_rejected(llm, conformance, endpoint, wrong, fields):
    """Spec: CreateCompletionRequest / CreateChatCompletionRequest constraints: field types, required fields
    (model, prompt, messages) and ranges (temperature 0..2, top_p 0..1, n 1..128, max_tokens >= 0, penalties -2..2,
    stop <= 4 items, logprobs 0..5, top_logprobs 0..20, messages minItems 1, role enum): a request outside them is
    400, never 500."""
    body = endpoint.body(llm.model, "Hi", max_tokens=2)
    for key, value in fields.items():
        if value is None:
            body.pop(key)
        else:
            body[key] = value
    conformance.require(rejected(llm, endpoint.path, body, 400))


ERROR_CASES: dict[str, tuple[dict, int]] = {
    "400": ({"prompt": "Hi", "max_tokens": "ten"}, 400),
    "404": ({"model": "no-such-model-llmconform", "prompt": "Hi", "max_tokens": 1}, 404),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_error_object_fields(llm, conformance, case):
    """Spec: ErrorResponse {error: Error}; Error requires message (string), type (string), param (string|null),
    code (string|null)."""
    body, status = ERROR_CASES[case]
    answer = post(llm, COMPLETIONS.path, {"model": llm.model, **body})
    problems = error_answers.status_problems(answer.status, status, answer.text)
    conformance.require(problems or error_answers.error_object_problems(answer.text))
