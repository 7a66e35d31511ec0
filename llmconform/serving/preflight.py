"""Before the tests run against an attached server (--llm-url): one check that something answers there, that it
speaks the OpenAI API (GET /v1/models gives a model list) and that it serves the model. A failure is one message
and a session that exits 2, instead of the same connection error or HTML page in every test."""

from __future__ import annotations

import httpx

from llmconform.errors import UserError


class PreflightError(UserError):
    """The attached server cannot be tested; the message says what was found at the URL and what to change."""


def check_attached(base_url: str, model: str, api_key: str | None, timeout_s: float = 15.0) -> None:
    url = f"{base_url}/v1/models"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(url, headers=headers, timeout=timeout_s)
    except httpx.TimeoutException:
        raise PreflightError(f"--llm-url {base_url}: no answer to GET /v1/models within {timeout_s:.0f} s "
                             f"(is the server hung or still starting?)") from None
    except httpx.HTTPError as error:
        raise PreflightError(f"--llm-url {base_url}: cannot reach it ({type(error).__name__}: {error}); is the "
                             f"server running and the URL right (scheme, host, port)?") from None
    if response.status_code in (401, 403):
        raise PreflightError(f"--llm-url {base_url}: GET /v1/models answered {response.status_code}: the server "
                             f"wants an API key{' other than the one given' if api_key else ''} (--llm-api-key or "
                             f"LLMCONFORM_API_KEY)")
    kind = response.headers.get("content-type", "no content type").split(";")[0]
    try:
        listed = response.json()
        ids = [entry["id"] for entry in listed["data"]]
    except (ValueError, KeyError, TypeError):
        raise PreflightError(f"--llm-url {base_url}: not an OpenAI-compatible server: GET /v1/models answered "
                             f"{response.status_code} with {kind}, not a model list ({{'data': [{{'id': ...}}]}})"
                             ) from None
    if response.status_code != 200:
        raise PreflightError(f"--llm-url {base_url}: GET /v1/models answered {response.status_code}")
    if model not in ids:
        raise PreflightError(f"--llm-url {base_url}: the server does not serve model {model!r} (--llm-model); it "
                             f"serves: {', '.join(map(str, ids)) or 'nothing'}")
