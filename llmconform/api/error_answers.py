"""Error answers: the status an invalid request must get, and the OpenAI error object (`ErrorResponse`)."""

from __future__ import annotations

import json

from llmconform.api import openapi, schema


def body_json(text: str):
    """The parsed body, or None when it is not JSON."""
    try:
        return json.loads(text)
    except ValueError:
        return None


def status_problems(status: int, expected: int, body_text: str) -> list[str]:
    """The status must be `expected`; a 5xx is called out as such (an invalid request is the client's error)."""
    if status == expected:
        return []
    prefix = "server error " if status >= 500 else ""
    return [f"{prefix}HTTP {status}, expected {expected}: {body_text[:200]!r}"]


def envelope_problems(body_text: str) -> list[str]:
    """An error answer carries `{"error": {"message": ...}}` (ErrorResponse.error.message), the part every client
    shows; the full field types are error_object_problems' job."""
    body = body_json(body_text)
    if body is None:
        return [f"error body is not JSON: {body_text[:200]!r}"]
    return schema.validate(schema.ERROR_ENVELOPE, body, "body")


def error_object_problems(body_text: str) -> list[str]:
    """ErrorResponse: `{"error": {"message": string, "type": string, "param": string|null, "code": string|null}}`,
    all four keys present."""
    body = body_json(body_text)
    if body is None:
        return [f"error body is not JSON: {body_text[:200]!r}"]
    return schema.validate(schema.ERROR_RESPONSE, body, "body") + openapi.validate("ErrorResponse", body, "body")
