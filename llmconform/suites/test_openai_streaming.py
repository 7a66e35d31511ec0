"""OpenAI API conformance: streaming, read as raw server-sent events (no client library in between)."""

# The `conformance` fixture is imported by name; pytest passes it to the checks' parameters of that name.

import pytest

from llmconform.api import calls, checks, sse
from llmconform.api.calls import generate
from llmconform.api.endpoints import CHAT, ENDPOINTS

PROMPT = "Once upon a time, in a quiet town by the sea,"
by_endpoint = pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[e.name for e in ENDPOINTS])


def stream(llm, endpoint, logprobs_shape=True, **params) -> tuple[sse.Stream, list[str]]:
    return calls.stream(llm, endpoint, PROMPT, logprobs_shape, **params)


@by_endpoint
def test_stream_framing(llm, conformance, endpoint):
    """Spec: stream: "data-only server-sent events ... terminated by a data: [DONE] message"; each data is a
    CreateCompletionResponse / CreateChatCompletionStreamResponse chunk."""
    _, problems = stream(llm, endpoint, max_tokens=8)
    conformance.require(problems)


@by_endpoint
def test_stream_logprobs_schema(llm, conformance, endpoint):
    """Spec: streamed choices[].logprobs: completions chunks share the response's logprobs shape; chat chunks carry
    {content, refusal} (both keys required) like the response."""
    _, problems = stream(llm, endpoint, max_tokens=4, **endpoint.logprobs_params(2))
    conformance.require(problems)


@by_endpoint
def test_stream_chunk_identity(llm, conformance, endpoint):
    """Spec: CreateChatCompletionStreamResponse.id: "Each chunk has the same ID"; created: "Each chunk has the same
    timestamp" (completions chunks share the response shape)."""
    result, problems = stream(llm, endpoint, max_tokens=8)
    conformance.require(problems + checks.stream_identity_problems(result.chunks()))


def test_stream_first_delta_role(llm, conformance):
    """Spec: ChatCompletionStreamResponseDelta.role: each choice's first delta carries role "assistant", and no
    delta names another role."""
    result, problems = stream(llm, CHAT, max_tokens=6, n=2, temperature=1.0, seed=3)
    for index, choice in sorted(checks.assemble(result.chunks(), chat=True).items(), key=lambda kv: str(kv[0])):
        if choice.first_delta_role != "assistant":
            problems.append(f"choice {index}: first delta role {choice.first_delta_role!r}, expected 'assistant'")
        if any(role != "assistant" for role in choice.roles):
            problems.append(f"choice {index}: delta roles {choice.roles}")
    conformance.require(problems)


@by_endpoint
def test_stream_one_finish_reason_per_choice(llm, conformance, endpoint):
    """Spec: choices[].finish_reason: null until the choice ends; exactly one chunk per choice carries it."""
    result, problems = stream(llm, endpoint, max_tokens=6, n=2, temperature=1.0, seed=3)
    streamed = checks.assemble(result.chunks(), chat=endpoint.chat)
    if set(streamed) != {0, 1}:
        problems.append(f"chunks cover choice indices {sorted(streamed, key=str)}, expected [0, 1] for n=2")
    for index, choice in streamed.items():
        if len(choice.finish_reasons) != 1:
            problems.append(f"choice {index}: finish_reason given {len(choice.finish_reasons)} times "
                            f"{choice.finish_reasons}")
    conformance.require(problems)


@by_endpoint
def test_stream_matches_non_stream(llm, conformance, endpoint):
    """Spec: stream: the chunks are the same completion delivered incrementally: at temperature 0 the concatenated
    deltas and the finish_reason equal the non-streamed response."""
    body, problems = generate(llm, endpoint, PROMPT, max_tokens=16, temperature=0)
    result, streamed_problems = stream(llm, endpoint, max_tokens=16, temperature=0)
    problems += streamed_problems
    streamed = checks.assemble(result.chunks(), chat=endpoint.chat).get(0)
    if body is not None and streamed is not None:
        choice = body["choices"][0]
        if streamed.text != endpoint.text(choice):
            problems.append(f"streamed text {streamed.text!r} != non-streamed {endpoint.text(choice)!r}")
        if streamed.finish_reasons[-1:] != [choice.get("finish_reason")]:
            problems.append(f"streamed finish_reason {streamed.finish_reasons} != non-streamed "
                            f"{choice.get('finish_reason')!r}")
    elif streamed is None:
        problems.append("the stream carried no choice 0")
    conformance.require(problems)


@by_endpoint
def test_stream_include_usage(llm, conformance, endpoint):
    """Spec: stream_options.include_usage: "an additional chunk will be streamed before the data: [DONE] message.
    The usage field on this chunk shows the token usage statistics for the entire request, and the choices field
    will always be an empty array"; its totals equal the non-streamed usage at temperature 0."""
    body, problems = generate(llm, endpoint, PROMPT, max_tokens=8, temperature=0)
    # Logprobs only count the streamed tokens here; their shape is test_stream_logprobs_schema's check.
    result, streamed_problems = stream(llm, endpoint, logprobs_shape=False, max_tokens=8, temperature=0,
                                       stream_options={"include_usage": True}, **endpoint.logprobs_params(0))
    chunks = result.chunks()
    problems += streamed_problems + checks.include_usage_problems(chunks, 1, endpoint.chat)
    streamed_usage = (chunks[-1].get("usage") if chunks else None) or {}
    usage = (body or {}).get("usage") or {}
    totals = ("prompt_tokens", "completion_tokens", "total_tokens")
    differs = [streamed_usage.get(k) for k in totals] != [usage.get(k) for k in totals]
    if body is not None and streamed_usage and differs:
        problems.append(f"streamed usage {streamed_usage} != non-streamed usage {usage}")
    conformance.require(problems)


@by_endpoint
def test_stream_usage_null_on_other_chunks(llm, conformance, endpoint):
    """Spec: stream_options.include_usage: "All other chunks will also include a usage field, but with a null
    value"."""
    result, problems = stream(llm, endpoint, max_tokens=4, stream_options={"include_usage": True})
    conformance.require(problems + checks.stream_usage_null_problems(result.chunks()))


@by_endpoint
def test_stream_token_accounting(llm, conformance, endpoint):
    """Spec: CompletionUsage.completion_tokens: "Number of tokens in the generated completion" (MLPerf TEST06's
    idea: the count a server reports is the count it produced): with n=2, every choice ends with exactly one
    finish_reason, has one logprobs entry per generated token, reaches max_tokens exactly when it says "length",
    and the usage chunk's completion_tokens is the sum of the streamed tokens."""
    max_tokens = 8
    result, problems = stream(llm, endpoint, logprobs_shape=False, max_tokens=max_tokens, n=2, temperature=1.0,
                              seed=7, stream_options={"include_usage": True}, **endpoint.logprobs_params(0))
    chunks = result.chunks()
    streamed = checks.assemble(chunks, chat=endpoint.chat)
    if set(streamed) != {0, 1}:
        problems.append(f"chunks cover choice indices {sorted(streamed, key=str)}, expected [0, 1] for n=2")
    for index, choice in sorted(streamed.items(), key=lambda kv: str(kv[0])):
        if len(choice.finish_reasons) != 1:
            problems.append(f"choice {index}: finish_reason given {len(choice.finish_reasons)} times "
                            f"{choice.finish_reasons}")
            continue
        problems += [f"choice {index}: {p}" for p in
                     checks.max_tokens_problems(len(choice.logprob_tokens), max_tokens, choice.finish_reasons[0])]
    usage = (chunks[-1].get("usage") if chunks else None) or {}
    counted = sum(len(c.logprob_tokens) for c in streamed.values())
    if usage.get("completion_tokens") != counted:
        problems.append(f"usage.completion_tokens {usage.get('completion_tokens')} != {counted} tokens streamed "
                        f"(logprobs entries of both choices)")
    conformance.require(problems)
