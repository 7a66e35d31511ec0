"""The OpenAI response schemas engines must meet, as small typed specs, and a validator that lists every violation
with its JSON path.

Rules (docs/openai-conformance.md#response-schema-rules): a required field must be present, with the right type (null
only where the spec makes it nullable); an optional field is checked when present and not null (serializers commonly
write null for an unset optional field, and the SDKs read it as absent); fields the spec does not name are allowed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Primitive:
    name: str  # "string", "integer", "number", "boolean"


@dataclass(frozen=True)
class Const:
    value: Any


@dataclass(frozen=True)
class Enum:
    values: tuple


@dataclass(frozen=True)
class Array:
    items: Spec
    min_items: int = 0


@dataclass(frozen=True)
class Map:
    """An object with arbitrary keys, e.g. the legacy `{token: logprob}` top-logprobs entries."""

    values: Spec


@dataclass(frozen=True)
class Object:
    required: dict = field(default_factory=dict)
    optional: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Nullable:
    inner: Spec


Spec = Primitive | Const | Enum | Array | Map | Object | Nullable

STRING, INTEGER, NUMBER, BOOLEAN = (Primitive(n) for n in ("string", "integer", "number", "boolean"))


def validate(spec: Spec, value: Any, path: str = "$") -> list[str]:
    """Every way `value` breaks `spec`, each as 'PATH: what is wrong'. Empty when it conforms."""
    if isinstance(spec, Nullable):
        return [] if value is None else validate(spec.inner, value, path)
    if isinstance(spec, Primitive):
        return [] if _is_primitive(spec.name, value) else [f"{path}: expected {spec.name}, got {_describe(value)}"]
    if isinstance(spec, Const):
        if value == spec.value and type(value) is type(spec.value):
            return []
        return [f"{path}: expected {spec.value!r}, got {_describe(value)}"]
    if isinstance(spec, Enum):
        if isinstance(value, str) and value in spec.values:
            return []
        return [f"{path}: expected one of {', '.join(map(repr, spec.values))}, got {_describe(value)}"]
    if isinstance(spec, Array):
        if not isinstance(value, list):
            return [f"{path}: expected array, got {_describe(value)}"]
        problems = [f"{path}: expected at least {spec.min_items} item(s), got {len(value)}"] \
            if len(value) < spec.min_items else []
        for i, item in enumerate(value):
            problems += validate(spec.items, item, f"{path}[{i}]")
        return problems
    if isinstance(spec, Map):
        if not isinstance(value, dict):
            return [f"{path}: expected object, got {_describe(value)}"]
        return [p for key, item in value.items() for p in validate(spec.values, item, f"{path}[{key!r}]")]
    if isinstance(spec, Object):
        if not isinstance(value, dict):
            return [f"{path}: expected object, got {_describe(value)}"]
        problems = []
        for key, sub in spec.required.items():
            if key not in value:
                problems.append(f"{path}.{key}: missing (required)")
            else:
                problems += validate(sub, value[key], f"{path}.{key}")
        for key, sub in spec.optional.items():
            if value.get(key) is not None:
                problems += validate(sub, value[key], f"{path}.{key}")
        return problems
    raise TypeError(f"not a schema spec: {spec!r}")


def _is_primitive(name: str, value: Any) -> bool:
    if name == "string":
        return isinstance(value, str)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "integer":  # JSON has one number type: 3.0 is not an integer id or count in any OpenAI SDK
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    raise ValueError(f"unknown primitive {name!r}")


def _describe(value: Any) -> str:
    kind = {type(None): "null", bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "object"}.get(type(value), type(value).__name__)
    text = repr(value)
    return f"{kind} {text if len(text) <= 60 else text[:57] + '...'}"


# --- the schemas (OpenAI openapi.yaml component names in comments) -------------------------------------------------

COMPLETION_FINISH_REASONS = ("stop", "length", "content_filter")
CHAT_FINISH_REASONS = ("stop", "length", "tool_calls", "content_filter", "function_call")

USAGE = Object(  # CompletionUsage
    required={"prompt_tokens": INTEGER, "completion_tokens": INTEGER, "total_tokens": INTEGER},
    optional={
        "completion_tokens_details": Object(optional={k: INTEGER for k in (
            "accepted_prediction_tokens", "audio_tokens", "reasoning_tokens", "rejected_prediction_tokens")}),
        "prompt_tokens_details": Object(optional={"audio_tokens": INTEGER, "cached_tokens": INTEGER}),
    },
)

# CreateCompletionResponse.choices[].logprobs. A null entry in token_logprobs/top_logprobs is what OpenAI's own
# echo responses carry for the first prompt token (it has no logprob), so null items are part of the shape.
COMPLETION_LOGPROBS = Object(optional={
    "tokens": Array(STRING),
    "token_logprobs": Array(Nullable(NUMBER)),
    "top_logprobs": Array(Nullable(Map(NUMBER))),
    "text_offset": Array(INTEGER),
})


def _completion(finish_reason: Spec, usage: Spec) -> Object:
    choice = Object(required={"index": INTEGER, "text": STRING, "logprobs": Nullable(COMPLETION_LOGPROBS),
                              "finish_reason": finish_reason})
    return Object(required={"id": STRING, "object": Const("text_completion"), "created": INTEGER, "model": STRING,
                            "choices": Array(choice)},
                  optional={"system_fingerprint": STRING, "usage": usage})


COMPLETION = _completion(Enum(COMPLETION_FINISH_REASONS), USAGE)  # CreateCompletionResponse
# Streamed completions share the response shape ("both the streamed and non-streamed response objects share the same
# shape"); finish_reason is null until a choice ends.
COMPLETION_CHUNK = _completion(Nullable(Enum(COMPLETION_FINISH_REASONS)), Nullable(USAGE))

TOP_LOGPROB = Object(required={"token": STRING, "logprob": NUMBER, "bytes": Nullable(Array(INTEGER))})
CHAT_TOKEN_LOGPROB = Object(required={  # ChatCompletionTokenLogprob
    "token": STRING, "logprob": NUMBER, "bytes": Nullable(Array(INTEGER)), "top_logprobs": Array(TOP_LOGPROB)})
CHAT_LOGPROBS = Object(required={  # CreateChatCompletionResponse.choices[].logprobs: both keys required
    "content": Nullable(Array(CHAT_TOKEN_LOGPROB)), "refusal": Nullable(Array(CHAT_TOKEN_LOGPROB))})
TOOL_CALL = Object(required={  # ChatCompletionMessageToolCall
    "id": STRING, "type": Const("function"),
    "function": Object(required={"name": STRING, "arguments": STRING})})
CHAT_MESSAGE = Object(  # ChatCompletionResponseMessage
    required={"role": Const("assistant"), "content": Nullable(STRING), "refusal": Nullable(STRING)},
    optional={"tool_calls": Array(TOOL_CALL)},
)
CHAT_COMPLETION = Object(  # CreateChatCompletionResponse
    required={"id": STRING, "object": Const("chat.completion"), "created": INTEGER, "model": STRING,
              "choices": Array(Object(required={"index": INTEGER, "message": CHAT_MESSAGE,
                                                "logprobs": Nullable(CHAT_LOGPROBS),
                                                "finish_reason": Enum(CHAT_FINISH_REASONS)}))},
    optional={"usage": USAGE, "system_fingerprint": STRING, "service_tier": STRING},
)
CHUNK_TOOL_CALL = Object(  # ChatCompletionMessageToolCallChunk
    required={"index": INTEGER},
    optional={"id": STRING, "type": Const("function"),
              "function": Object(optional={"name": STRING, "arguments": STRING})},
)
CHAT_DELTA = Object(optional={  # ChatCompletionStreamResponseDelta: every field optional
    "content": STRING, "refusal": STRING, "role": Enum(("developer", "system", "user", "assistant", "tool")),
    "tool_calls": Array(CHUNK_TOOL_CALL)})
CHAT_COMPLETION_CHUNK = Object(  # CreateChatCompletionStreamResponse
    required={"id": STRING, "object": Const("chat.completion.chunk"), "created": INTEGER, "model": STRING,
              "choices": Array(Object(required={"index": INTEGER, "delta": CHAT_DELTA,
                                                "finish_reason": Nullable(Enum(CHAT_FINISH_REASONS))},
                                      optional={"logprobs": CHAT_LOGPROBS}))},
    optional={"usage": Nullable(USAGE), "system_fingerprint": STRING},
)

MODEL = Object(required={"id": STRING, "object": Const("model"), "created": INTEGER, "owned_by": STRING})
MODEL_LIST = Object(required={"object": Const("list"), "data": Array(MODEL)})  # ListModelsResponse

# ErrorResponse: all four fields of Error are required; param and code are string or null.
ERROR_RESPONSE = Object(required={"error": Object(required={
    "message": STRING, "type": STRING, "param": Nullable(STRING), "code": Nullable(STRING)})})
# What any client needs to show an error: the envelope and its message (the rest is ERROR_RESPONSE's job).
ERROR_ENVELOPE = Object(required={"error": Object(required={"message": STRING})})
