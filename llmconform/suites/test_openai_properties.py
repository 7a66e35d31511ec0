"""OpenAI API conformance, property-based: random valid sampling parameters never give a server error, and every
answer keeps its promises (shape, max_tokens, stop sequences, n)."""

# The `conformance` fixture is imported by name; pytest passes it to the checks' parameters of that name.

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmconform.api import checks, schema
from llmconform.api.calls import generate, without_logprobs
from llmconform.api.endpoints import ENDPOINTS

PROMPT = "Write a short story about a lighthouse keeper."
stop_text = st.text(alphabet="abcdefghijklmnopqrstuvwxyz .,", min_size=1, max_size=3)


@st.composite
def sampling(draw) -> dict:
    """Valid parameters. n > 1 is drawn only with temperature > 0: greedy n > 1 has its own check
    (test_n_with_greedy_sampling), so a known refusal of it does not hide here."""
    n = draw(st.integers(1, 3))
    params = {
        "max_tokens": draw(st.integers(1, 16)),
        "n": n,
        "temperature": draw(st.sampled_from([0.0, 0.7, 1.3, 2.0]) if n == 1 else st.sampled_from([0.7, 1.3, 2.0])),
        "top_p": draw(st.sampled_from([0.1, 0.5, 1.0])),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }
    stops = draw(st.lists(stop_text, max_size=4, unique=True))
    if stops:
        params["stop"] = stops[0] if len(stops) == 1 and draw(st.booleans()) else stops
    return params


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[e.name for e in ENDPOINTS])
@settings(max_examples=12, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(params=sampling())
def test_valid_sampling_parameters(llm, conformance, endpoint, params):
    """Spec: CreateCompletionRequest / CreateChatCompletionRequest max_tokens, n, temperature, top_p, seed, stop:
    any valid combination is answered 200 with a conforming body, n choices, at most max_tokens tokens each, and
    no stop sequence in the text."""
    body, problems = generate(llm, endpoint, PROMPT, **params, **endpoint.logprobs_params(0))
    if body is not None:
        # Logprobs are asked for only to count tokens; their shape is test_logprobs_schema's check.
        problems += schema.validate(endpoint.response_schema, without_logprobs(body))
    if body is not None and not problems:
        choices = body["choices"]
        problems += checks.choice_indices_problems(choices, params["n"])
        stops = params.get("stop") or []
        stops = [stops] if isinstance(stops, str) else stops
        for choice in choices:
            text, tokens = endpoint.text(choice), len(endpoint.logprob_tokens(choice))
            if tokens > params["max_tokens"]:
                problems.append(f"choice {choice['index']}: {tokens} tokens for max_tokens={params['max_tokens']}")
            # A stop sequence that only the token max_tokens ended on completes is
            # test_stop_sequence_at_max_tokens's case: it checks that deterministically (greedy), while here the
            # sampled output, and so whether the case arises, repeats only where the engine honours `seed`.
            before_last = "".join(endpoint.logprob_tokens(choice)[:-1])
            at_limit = choice.get("finish_reason") == "length"
            problems += [f"choice {choice['index']}: stop sequence {s!r} in the output {text!r}" for s in stops
                         if s in text and not (at_limit and s not in before_last)]
    conformance.require([f"{params}: {p}" for p in problems])
