"""The two generation endpoints side by side, so one check covers both: how to ask, and where the answer is."""

from __future__ import annotations

from dataclasses import dataclass

from llmconform.api import openapi, schema


@dataclass(frozen=True)
class Endpoint:
    name: str
    path: str
    response_schema: schema.Spec
    chunk_schema: schema.Spec
    finish_reasons: tuple[str, ...]
    openapi_response: str  # the component schemas of OpenAI's document (api/openapi.py)
    openapi_chunk: str

    @property
    def chat(self) -> bool:
        return self.name == "chat"

    def body(self, model: str, prompt: str, **params) -> dict:
        if self.chat:
            return {"model": model, "messages": [{"role": "user", "content": prompt}], **params}
        return {"model": model, "prompt": prompt, **params}

    def logprobs_params(self, top: int) -> dict:
        """Completions: `logprobs` is the number of alternatives; chat: `logprobs` switches them on and
        `top_logprobs` is the number."""
        return {"logprobs": True, "top_logprobs": top} if self.chat else {"logprobs": top}

    def text(self, choice: dict) -> str:
        return (choice.get("message") or {}).get("content") or "" if self.chat else choice.get("text") or ""

    def logprob_tokens(self, choice: dict) -> list[str]:
        """The generated tokens as the logprobs list them (the only per-token view the API gives)."""
        logprobs = choice.get("logprobs") or {}
        if self.chat:
            return [e.get("token") for e in logprobs.get("content") or []]
        return list(logprobs.get("tokens") or [])


COMPLETIONS = Endpoint("completions", "/v1/completions", schema.COMPLETION, schema.COMPLETION_CHUNK,
                       schema.COMPLETION_FINISH_REASONS, "CreateCompletionResponse", openapi.COMPLETION_CHUNK)
CHAT = Endpoint("chat", "/v1/chat/completions", schema.CHAT_COMPLETION, schema.CHAT_COMPLETION_CHUNK,
                schema.CHAT_FINISH_REASONS, "CreateChatCompletionResponse", "CreateChatCompletionStreamResponse")
ENDPOINTS = (COMPLETIONS, CHAT)
