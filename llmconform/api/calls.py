"""Requests as the checks make them: raw HTTP through the handle's httpx client (with its API key), so the checks
see exactly what the engine answered, not what a client library made of it."""

from __future__ import annotations

from dataclasses import dataclass

from llmconform.api import error_answers, openapi, schema, sse
from llmconform.api.endpoints import COMPLETIONS, Endpoint


@dataclass
class Answer:
    status: int
    text: str

    @property
    def json(self):
        return error_answers.body_json(self.text)


def post(llm, path: str, body, headers: dict | None = None) -> Answer:
    """POST a JSON body (or, given bytes, those bytes as they are: malformed JSON is a check of its own)."""
    if isinstance(body, bytes):
        response = llm.http.post(path, content=body, headers={"Content-Type": "application/json", **(headers or {})})
    else:
        response = llm.http.post(path, json=body, headers=headers or {})
    return Answer(response.status_code, response.text)


def get(llm, path: str, headers: dict | None = None) -> Answer:
    response = llm.http.get(path, headers=headers or {})
    return Answer(response.status_code, response.text)


def generate(llm, endpoint: Endpoint, prompt: str, **params) -> tuple[dict | None, list[str]]:
    """(response body, problems): a problem when the answer is not 200 with a JSON object, or when it breaks what
    every answer must meet (answer_problems; the logprobs' shape is the logprobs schema checks' job)."""
    answer = post(llm, endpoint.path, endpoint.body(llm.model, prompt, **params))
    body = answer.json
    if answer.status != 200 or not isinstance(body, dict):
        return None, [f"HTTP {answer.status} for a valid {endpoint.name} request {params}: {answer.text[:300]!r}"]
    return body, answer_problems(llm, endpoint, without_logprobs(body))


def stream(llm, endpoint: Endpoint, prompt: str, logprobs_shape: bool = True, **params):
    """(the raw sse.Stream, its problems): status, framing, each chunk against the hand-written chunk schema and
    OpenAI's document, and the model it names (the logprobs' shape too, unless another check owns that)."""
    result = sse.read_stream(llm.http, endpoint.path, endpoint.body(llm.model, prompt, stream=True, **params))
    if result.status != 200:
        return result, [f"HTTP {result.status} for a valid streaming request {params}: {result.body[:300]!r}"]
    problems = sse.framing_problems(result)
    for i, chunk in enumerate(result.chunks()):
        chunk = chunk if logprobs_shape else without_logprobs(chunk)
        problems += schema.validate(endpoint.chunk_schema, chunk, f"chunk[{i}]")
        problems += answer_problems(llm, endpoint, chunk, f"chunk[{i}]", chunk=True)
    return result, problems


def answer_problems(llm, endpoint: Endpoint, body: dict, path: str = "$", chunk: bool = False) -> list[str]:
    """What every response and stream chunk the suites see must meet, whatever the check: OpenAI's OpenAPI document
    (the response or chunk schema) and `model` naming a model the server serves."""
    name = endpoint.openapi_chunk if chunk else endpoint.openapi_response
    return openapi.validate(name, body, path) + model_problems(llm, body, path)


def model_problems(llm, body: dict, path: str = "$") -> list[str]:
    """`model`: "The model used for ..." must be an id /v1/models lists (a server answering with another name, an
    internal path or an empty string breaks clients that route or bill by it)."""
    served = served_models(llm)
    model = body.get("model") if isinstance(body, dict) else None
    if model in served:
        return []
    return [f"{path}.model is {model!r}, not a model the server serves (GET /v1/models lists {served})"]


def served_models(llm) -> list:
    """The ids GET /v1/models lists (asked once per server)."""
    if "served_models" not in llm.extra:
        listing = get(llm, "/v1/models").json
        data = listing.get("data") if isinstance(listing, dict) else None
        llm.extra["served_models"] = [m.get("id") for m in data or [] if isinstance(m, dict)]
    return llm.extra["served_models"]


def without_logprobs(body: dict) -> dict:
    """The body with each choice's logprobs null, for checks that ask for logprobs only to count tokens."""
    choices = [{**c, "logprobs": None} if isinstance(c, dict) else c for c in body.get("choices") or []]
    return {**body, "choices": choices}


def health_problems(llm) -> list[str]:
    """After an invalid request the server must still list its models and generate."""
    problems = []
    models = get(llm, "/v1/models")
    if models.status != 200:
        problems.append(f"after the request, GET /v1/models answered HTTP {models.status}")
    _, generation = generate(llm, COMPLETIONS, "Hello", max_tokens=1)
    return problems + [f"after the request, a 1-token completion failed: {p}" for p in generation]


def context_length(llm) -> int | None:
    """The served context length: /v1/models `max_model_len` (vLLM, SGLang) where present, else the case's
    engine flag."""
    listing = get(llm, "/v1/models").json
    for model in (listing or {}).get("data") or []:
        if isinstance(model, dict) and model.get("id") == llm.model and isinstance(model.get("max_model_len"), int):
            return model["max_model_len"]
    if llm.case is not None:
        for key in ("max-model-len", "max_model_len", "context-length", "context_length", "max_seq_len",
                    "max-seq-len"):
            if llm.case.args.get(key):
                return int(llm.case.args[key])
    return None
