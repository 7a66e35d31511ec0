"""OpenAI API conformance: non-streaming /v1/completions and /v1/chat/completions."""

# The `conformance` fixture is imported by name; pytest passes it to the checks' parameters of that name.

import pytest

from llmconform.api import checks, error_answers, openapi, schema
from llmconform.api.calls import answer_problems, context_length, generate, health_problems, post
from llmconform.api.endpoints import CHAT, COMPLETIONS, ENDPOINTS
from llmconform.pytest.conformance_fixture import Conformance

PROMPT = "The quick brown fox jumps over the lazy dog. Once upon a time"
by_endpoint = pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[e.name for e in ENDPOINTS])
# Stop sequences that a model with an ASCII vocabulary is not going to produce: they fill a 4-item stop list.
UNLIKELY_STOPS = ("QZXQ1", "QZXQ2", "QZXQ3")


def first_choice(body: dict | None) -> dict:
    return ((body or {}).get("choices") or [{}])[0]


@by_endpoint
def test_response_schema(llm, conformance, endpoint):
    """Spec: CreateCompletionResponse / CreateChatCompletionResponse: id, object, created, model, choices[] with
    index, finish_reason (enum), logprobs (key present), text or message {role, content, refusal}; usage."""
    body, problems = generate(llm, endpoint, PROMPT, max_tokens=8)
    if body is not None:
        problems += schema.validate(endpoint.response_schema, body)
    conformance.require(problems)


@by_endpoint
def test_logprobs_schema(llm, conformance, endpoint):
    """Spec: choices[].logprobs: completions {tokens, token_logprobs, top_logprobs, text_offset}; chat
    {content: ChatCompletionTokenLogprob[] | null, refusal: ... | null} (both keys required)."""
    body, problems = generate(llm, endpoint, PROMPT, max_tokens=4, **endpoint.logprobs_params(2))
    if body is not None:
        problems += schema.validate(endpoint.response_schema, body)
        problems += openapi.validate(endpoint.openapi_response, body)
    conformance.require(problems)


@by_endpoint
def test_usage_arithmetic(llm, conformance, endpoint):
    """Spec: CompletionUsage: total_tokens = prompt_tokens + completion_tokens; completion_tokens counts the
    generated tokens of all n choices (counted here from their logprobs)."""
    body, problems = generate(llm, endpoint, PROMPT, max_tokens=6, n=2, temperature=1.0, seed=11,
                              **endpoint.logprobs_params(1))
    if body is not None:
        counted = sum(len(endpoint.logprob_tokens(c)) for c in body.get("choices") or [])
        problems += checks.usage_problems(body.get("usage"), counted)
    conformance.require(problems)


@pytest.mark.parametrize("endpoint, limit", [(COMPLETIONS, "max_tokens"), (CHAT, "max_tokens"),
                                             (CHAT, "max_completion_tokens")],
                         ids=["completions-max_tokens", "chat-max_tokens", "chat-max_completion_tokens"])
def test_max_tokens_honored(llm, conformance, endpoint, limit):
    """Spec: max_tokens / max_completion_tokens: "the maximum number of tokens that can be generated";
    finish_reason "length" exactly when that limit was hit."""
    problems = []
    for value in (1, 7):
        body, failed = generate(llm, endpoint, PROMPT, **{limit: value}, **endpoint.logprobs_params(0))
        problems += failed
        if body is not None:
            choice = first_choice(body)
            tokens = len(endpoint.logprob_tokens(choice))
            problems += [f"{limit}={value}: {p}" for p in
                         checks.max_tokens_problems(tokens, value, choice.get("finish_reason"))]
    conformance.require(problems)


@by_endpoint
def test_context_length_boundary(llm, conformance: Conformance, endpoint):
    """Spec: max_tokens: "The token count of your prompt plus max_tokens cannot exceed the model's context length."
    prompt + max_tokens == context is accepted; one token more is rejected with 400, and the server stays up."""
    limit = context_length(llm)
    if limit is None:
        pytest.skip("context length unknown: /v1/models has no max_model_len and the case sets none")
    probe, problems = generate(llm, endpoint, PROMPT, max_tokens=1)
    prompt_tokens = ((probe or {}).get("usage") or {}).get("prompt_tokens")
    if not isinstance(prompt_tokens, int):
        conformance.stop(problems or ["usage.prompt_tokens missing: the prompt's length cannot be measured"])
    _, at_limit = generate(llm, endpoint, PROMPT, max_tokens=limit - prompt_tokens)
    problems += [f"prompt {prompt_tokens} + max_tokens {limit - prompt_tokens} == context {limit} was refused: {p}"
                 for p in at_limit]
    over = post(llm, endpoint.path, endpoint.body(llm.model, PROMPT, max_tokens=limit - prompt_tokens + 1))
    problems += [f"prompt {prompt_tokens} + max_tokens {limit - prompt_tokens + 1} > context {limit}: {p}"
                 for p in error_answers.status_problems(over.status, 400, over.text)]
    if over.status == 400:
        problems += error_answers.envelope_problems(over.text)
    conformance.require(problems + health_problems(llm))


@by_endpoint
def test_prompt_longer_than_context_rejected(llm, conformance, endpoint):
    """Spec: the prompt's token count cannot exceed the context length: a longer prompt gets 400, not 500."""
    limit = context_length(llm)
    if limit is None:
        pytest.skip("context length unknown: /v1/models has no max_model_len and the case sets none")
    answer = post(llm, endpoint.path, endpoint.body(llm.model, "hello world " * limit, max_tokens=1))
    problems = error_answers.status_problems(answer.status, 400, answer.text)
    if answer.status == 400:
        problems += error_answers.envelope_problems(answer.text)
    conformance.require(problems + health_problems(llm))


@pytest.mark.parametrize("form", ["string", "list"])
@by_endpoint
def test_stop_sequence(llm, conformance, endpoint, form):
    """Spec: stop (string, or array of up to 4): "The returned text will not contain the stop sequence";
    finish_reason "stop" when one was hit."""
    reference, problems = generate(llm, endpoint, PROMPT, max_tokens=24, temperature=0)
    if reference is None:
        conformance.require(problems)
    text = endpoint.text(first_choice(reference))
    if len(text.strip()) < 6:
        pytest.skip(f"the greedy output {text!r} is too short to take a stop sequence from")
    middle = len(text) // 2
    stop = text[middle:middle + 2]
    stops = [stop] if form == "string" else [*UNLIKELY_STOPS, stop]
    body, problems = generate(llm, endpoint, PROMPT, max_tokens=24, temperature=0,
                              stop=stop if form == "string" else stops)
    if body is not None:
        choice = first_choice(body)
        problems += checks.stop_problems(endpoint.text(choice), stops, text, choice.get("finish_reason"))
    conformance.require(problems)


@by_endpoint
def test_stop_sequence_at_max_tokens(llm, conformance, endpoint):
    """Spec: stop: "The returned text will not contain the stop sequence", also when the token that completes it is
    the last one max_tokens allows: the text ends before it and finish_reason is "stop" (a server that checks the
    length limit before the stop sequences answers "length" with the stop sequence in the text)."""
    reference, problems = generate(llm, endpoint, PROMPT, max_tokens=16, temperature=0, **endpoint.logprobs_params(0))
    if reference is None:
        conformance.require(problems)
    tokens = endpoint.logprob_tokens(first_choice(reference))
    # The last token whose whole text does not occur earlier in the output becomes the stop sequence, and max_tokens
    # ends the generation on it; greedy decoding repeats the same tokens (test_temperature_zero_deterministic).
    last = next((i for i in range(len(tokens) - 1, 0, -1) if isinstance(tokens[i], str) and tokens[i].strip()
                 and "\ufffd" not in tokens[i] and tokens[i] not in "".join(tokens[:i])), None)
    if last is None:
        pytest.skip(f"no token of the greedy output {tokens} can serve as a stop sequence that occurs only there")
    stop, max_tokens = tokens[last], last + 1
    body, more = generate(llm, endpoint, PROMPT, max_tokens=max_tokens, temperature=0, stop=[stop])
    problems += more
    if body is not None:
        choice = first_choice(body)
        # The expected text is the reference's own text cut at the stop, not its logprob tokens joined: a byte-fallback
        # token's logprob string lacks the replacement character its partial UTF-8 sequence puts in the text.
        problems += [f"max_tokens {max_tokens}, stop {stop!r}: {p}" for p in
                     checks.stop_problems(endpoint.text(choice), [stop], endpoint.text(first_choice(reference)),
                                          choice.get("finish_reason"))]
    conformance.require(problems)


@by_endpoint
def test_n_choices(llm, conformance, endpoint):
    """Spec: n: "How many completions to generate for each prompt": n choices, index 0..n-1."""
    body, problems = generate(llm, endpoint, PROMPT, max_tokens=8, n=3, temperature=1.0, seed=5)
    if body is not None:
        problems += checks.choice_indices_problems(body.get("choices") or [], 3)
    conformance.require(problems)


@by_endpoint
def test_n_with_greedy_sampling(llm, conformance, endpoint):
    """Spec: n (1..128) with temperature 0 is a valid request: n choices, all the same greedy output."""
    body, problems = generate(llm, endpoint, PROMPT, max_tokens=8, n=2, temperature=0)
    if body is not None:
        choices = body.get("choices") or []
        problems += checks.choice_indices_problems(choices, 2)
        texts = {endpoint.text(c) for c in choices}
        if len(texts) > 1:
            problems.append(f"greedy choices differ: {sorted(texts)}")
    conformance.require(problems)


@by_endpoint
def test_seed_reproducible(llm, conformance, endpoint):
    """Spec: seed: "repeated requests with the same seed and parameters should return the same result" (Beta; the
    spec calls determinism best effort)."""
    params = {"max_tokens": 16, "temperature": 1.0, "top_p": 0.9, "seed": 1234}
    outputs, problems = [], []
    for _ in range(2):
        body, failed = generate(llm, endpoint, PROMPT, **params)
        problems += failed
        if body is not None:
            outputs.append(endpoint.text(first_choice(body)))
    if len(set(outputs)) > 1:
        problems.append(f"same seed, different outputs: {outputs}")
    conformance.require(problems)


@by_endpoint
def test_temperature_zero_deterministic(llm, conformance, endpoint):
    """Spec: temperature 0 ("lower values like 0.2 will make it more focused and deterministic"): greedy decoding,
    so repeated requests give the same output."""
    outputs, problems = [], []
    for _ in range(3):
        body, failed = generate(llm, endpoint, PROMPT, max_tokens=16, temperature=0)
        problems += failed
        if body is not None:
            outputs.append(endpoint.text(first_choice(body)))
    if len(set(outputs)) > 1:
        problems.append(f"temperature 0, different outputs: {outputs}")
    conformance.require(problems)


@pytest.mark.parametrize("top", [0, 3])
@by_endpoint
def test_logprobs_contents(llm, conformance, endpoint, top):
    """Spec: completions logprobs (0..5) / chat logprobs + top_logprobs (0..20): alternatives as requested,
    every logprob <= 0, the tokens concatenate to the returned text."""
    body, problems = generate(llm, endpoint, PROMPT, max_tokens=8, temperature=0, **endpoint.logprobs_params(top))
    if body is not None:
        choice = first_choice(body)
        check = checks.chat_logprobs_problems if endpoint.chat else checks.completion_logprobs_problems
        problems += check(choice.get("logprobs"), endpoint.text(choice), top)
    conformance.require(problems)


@by_endpoint
def test_logprobs_over_limit_rejected(llm, conformance, endpoint):
    """Spec: completions logprobs maximum 5; chat top_logprobs maximum 20: one more is rejected with 400 and the
    server stays up."""
    params = {"logprobs": True, "top_logprobs": 21} if endpoint.chat else {"logprobs": 6}
    answer = post(llm, endpoint.path, endpoint.body(llm.model, PROMPT, max_tokens=2, **params))
    problems = [f"{params}: {p}" for p in error_answers.status_problems(answer.status, 400, answer.text)]
    if answer.status == 400:
        problems += error_answers.envelope_problems(answer.text)
    conformance.require(problems + health_problems(llm))


def test_echo(llm, conformance):
    """Spec: CreateCompletionRequest.echo: "Echo back the prompt in addition to the completion": the text is the
    prompt followed by the completion, and the logprobs tokens cover both."""
    plain, problems = generate(llm, COMPLETIONS, PROMPT, max_tokens=6, temperature=0)
    echoed, failed = generate(llm, COMPLETIONS, PROMPT, max_tokens=6, temperature=0, echo=True, logprobs=1)
    problems += failed
    if plain is not None and echoed is not None:
        expected = PROMPT + COMPLETIONS.text(first_choice(plain))
        choice = first_choice(echoed)
        if COMPLETIONS.text(choice) != expected:
            problems.append(f"echo text {COMPLETIONS.text(choice)!r}, expected prompt + completion {expected!r}")
        problems += checks.completion_logprobs_problems(choice.get("logprobs"), COMPLETIONS.text(choice), 1)
    conformance.require(problems)


def test_chat_history_accepted(llm, conformance):
    """Spec: CreateChatCompletionRequest.messages: system, user and assistant messages make one conversation; the
    chat template takes the whole history (more prompt tokens than the last message alone)."""
    history = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a colour."},
               {"role": "assistant", "content": "Blue."}, {"role": "user", "content": "Another one?"}]
    answer = post(llm, CHAT.path, {"model": llm.model, "messages": history, "max_tokens": 4})
    alone, problems = generate(llm, CHAT, "Another one?", max_tokens=4)
    problems += error_answers.status_problems(answer.status, 200, answer.text)
    body = answer.json if answer.status == 200 else None
    if body is not None:
        problems += schema.validate(schema.CHAT_COMPLETION, body) + answer_problems(llm, CHAT, body)
        with_history = (body.get("usage") or {}).get("prompt_tokens")
        last_only = ((alone or {}).get("usage") or {}).get("prompt_tokens")
        if isinstance(with_history, int) and isinstance(last_only, int) and with_history <= last_only:
            problems.append(f"prompt_tokens {with_history} with the history <= {last_only} for the last "
                            "message alone: the history did not reach the model")
    conformance.require(problems)
