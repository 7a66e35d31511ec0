"""OpenAI API conformance: the models endpoints."""

# The `conformance` fixture is imported by name; pytest passes it to the checks' parameters of that name.

from llmconform.api import openapi, schema
from llmconform.api.calls import get


def test_models_list(llm, conformance):
    """Spec: GET /models -> ListModelsResponse {object: "list", data: Model[]}; Model requires id, object "model",
    created, owned_by. The served model is listed."""
    answer = get(llm, "/v1/models")
    if answer.status != 200:
        conformance.require([f"GET /v1/models answered HTTP {answer.status}: {answer.text[:200]!r}"])
    body = answer.json
    problems = schema.validate(schema.MODEL_LIST, body) + openapi.validate("ListModelsResponse", body)
    ids = [m.get("id") for m in (body or {}).get("data") or [] if isinstance(m, dict)]
    if llm.model not in ids:
        problems.append(f"the served model {llm.model!r} is not listed: {ids}")
    conformance.require(problems)


def test_model_retrieve(llm, conformance):
    """Spec: GET /models/{model} -> Model (id, object "model", created, owned_by) for the served model."""
    answer = get(llm, f"/v1/models/{llm.model}")
    if answer.status != 200:
        conformance.require([f"GET /v1/models/{llm.model} answered HTTP {answer.status}: {answer.text[:200]!r}"])
    body = answer.json
    problems = schema.validate(schema.MODEL, body) + openapi.validate("Model", body)
    if isinstance(body, dict) and body.get("id") != llm.model:
        problems.append(f"id is {body.get('id')!r}, expected {llm.model!r}")
    conformance.require(problems)
