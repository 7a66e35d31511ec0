"""Requests as the checks make them: raw HTTP through the handle's httpx client (with its API key), so the checks
see exactly what the engine answered, not what a client library made of it."""

from __future__ import annotations

from dataclasses import dataclass

from . import errors
from .endpoints import COMPLETIONS, Endpoint


@dataclass
class Answer:
    status: int
    text: str

    @property
    def json(self):
        return errors.body_json(self.text)


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
    """(response body, problems): a problem when the answer is not 200 with a JSON object."""
    answer = post(llm, endpoint.path, endpoint.body(llm.model, prompt, **params))
    body = answer.json
    if answer.status != 200 or not isinstance(body, dict):
        return None, [f"HTTP {answer.status} for a valid {endpoint.name} request {params}: {answer.text[:300]!r}"]
    return body, []


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
