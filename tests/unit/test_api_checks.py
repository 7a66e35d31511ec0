import pytest

from llmconform.api import checks, error_answers


def test_usage_arithmetic():
    assert checks.usage_problems({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}, 2) == []
    assert checks.usage_problems({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 6}) == [
        "usage.total_tokens 6 != prompt_tokens 3 + completion_tokens 2"]
    assert checks.usage_problems({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}, 3) == [
        "usage.completion_tokens 2 != 3 tokens returned"]
    assert checks.usage_problems(None) == ["usage: expected object, got null None"]


LEGACY = {"tokens": [" a", "bc"], "token_logprobs": [-0.5, -1.0], "top_logprobs": [{" a": -0.5, "x": -2.0},
                                                                                    {"bc": -1.0, "y": -1.5}],
          "text_offset": [0, 2]}


def test_completion_logprobs_consistent():
    assert checks.completion_logprobs_problems(LEGACY, " abc", 1) == []
    assert checks.completion_logprobs_problems(LEGACY, " abc", 2) == []


@pytest.mark.parametrize("change, text, top, problem", [
    ({}, " abcd", 1, "logprobs.tokens concatenate to ' abc', text is ' abcd'"),
    ({"token_logprobs": [-0.5, 0.25]}, " abc", 1, "logprobs.token_logprobs[1] = 0.25 > 0"),
    ({"text_offset": [0, 1]}, " abc", 1,
     "logprobs.text_offset [0, 1] does not follow the token lengths (expected [0, 2])"),
    ({}, " abc", 3, "logprobs.top_logprobs[0] has 2 entries, expected 3..4"),
    ({"top_logprobs": [{" a": -0.5}]}, " abc", 1, "logprobs.top_logprobs has 1 entries for 2 tokens"),
    ({"top_logprobs": [{" a": 0.1}, {"bc": -1.0}]}, " abc", 0, "logprobs.top_logprobs[0][' a'] = 0.1 > 0"),
])
def test_completion_logprobs_problems(change, text, top, problem):
    assert problem in checks.completion_logprobs_problems({**LEGACY, **change}, text, top)


def test_completion_logprobs_requested_but_null():
    assert checks.completion_logprobs_problems(None, "x", 1) == ["logprobs: null although logprobs were requested"]


def entry(token: str, logprob: float, top: list[tuple[str, float]]) -> dict:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode()),
            "top_logprobs": [{"token": t, "logprob": v, "bytes": list(t.encode())} for t, v in top]}


def test_chat_logprobs():
    logprobs = {"content": [entry("Hel", -0.1, [("Hel", -0.1), ("A", -2.0)]), entry("lo", -0.2, [("lo", -0.2)])],
                "refusal": None}
    assert checks.chat_logprobs_problems(logprobs, "Hello", 2) == []
    assert checks.chat_logprobs_problems(logprobs, "Hello", 1) == [
        "logprobs.content[0].top_logprobs has 2 entries for top_logprobs=1"]
    assert checks.chat_logprobs_problems(logprobs, "Hell", 2) == [
        "logprobs.content bytes concatenate to b'Hello' ('Hello'), content is 'Hell' (b'Hell')",
        "logprobs.content tokens concatenate to 'Hello', content is 'Hell'"]


def byte_entry(token: str, raw: bytes) -> dict:
    return {"token": token, "logprob": -0.1, "bytes": list(raw), "top_logprobs": []}


def test_chat_logprobs_character_split_over_tokens_is_judged_by_bytes():
    """'€' is E2 82 AC: byte-fallback tokens carry its pieces; their token strings cannot spell it, their bytes do."""
    split = [byte_entry("a", b"a"), byte_entry("\ufffd", b"\xe2"), byte_entry("\ufffd", b"\x82\xac")]
    assert checks.chat_logprobs_problems({"content": split, "refusal": None}, "a€", 0) == []
    # What a server that puts the replacement character's UTF-8 in `bytes` answers: the euro sign is lost.
    replaced = [byte_entry("a", b"a")] + [byte_entry("\ufffd", "\ufffd".encode())] * 2
    assert checks.chat_logprobs_problems({"content": replaced, "refusal": None}, "a€", 0) == [
        "logprobs.content bytes concatenate to b'a\\xef\\xbf\\xbd\\xef\\xbf\\xbd' ('a\ufffd\ufffd'), content is "
        "'a€' (b'a\\xe2\\x82\\xac')",
        "logprobs.content tokens concatenate to 'a\ufffd\ufffd', content is 'a€'"]


def test_chat_logprobs_invalid_utf8_matches_replacement_characters():
    """A lone lead byte has no text: content shows U+FFFD (one per byte or per sequence, as the decoder does)."""
    broken = [byte_entry("\ufffd", b"\xe2\x82"), byte_entry("x", b"x")]
    assert checks.chat_logprobs_problems({"content": broken, "refusal": None}, "\ufffdx", 0) == []
    assert checks.chat_logprobs_problems({"content": broken, "refusal": None}, "\ufffd\ufffdx", 0) == []
    assert checks.chat_logprobs_problems({"content": broken, "refusal": None}, "x", 0) != []


def test_chat_logprobs_without_bytes_need_the_tokens_to_spell_the_content():
    entries = [{"token": "ab", "logprob": -0.1, "bytes": None, "top_logprobs": []}]
    assert checks.chat_logprobs_problems({"content": entries, "refusal": None}, "ab", 0) == []
    assert checks.chat_logprobs_problems({"content": entries, "refusal": None}, "abc", 0) == [
        "logprobs.content tokens concatenate to 'ab', content is 'abc'"]


def test_chat_logprobs_order_and_sign():
    logprobs = {"content": [entry("a", 0.5, [("b", -3.0), ("a", 0.5)])], "refusal": None}
    assert checks.chat_logprobs_problems(logprobs, "a", 2) == [
        "logprobs.content[0].logprob = 0.5 > 0", "logprobs.content[0].top_logprobs[1].logprob = 0.5 > 0",
        "logprobs.content[0].top_logprobs are not sorted most likely first: [-3.0, 0.5]"]


def test_chat_logprobs_zero_top_means_empty_lists():
    logprobs = {"content": [entry("a", -0.5, [])], "refusal": None}
    assert checks.chat_logprobs_problems(logprobs, "a", 0) == []
    assert checks.chat_logprobs_problems(logprobs, "a", 2) == [
        "logprobs.content[0].top_logprobs has 0 entries for top_logprobs=2"]


@pytest.mark.parametrize("tokens, limit, finish, problems", [
    (4, 4, "length", []),
    (2, 4, "stop", []),
    (5, 4, "length", ["5 tokens returned for max_tokens=4"]),
    (4, 4, "stop", ["finish_reason 'stop' although max_tokens=4 was reached (expected 'length')"]),
    (3, 4, "length", ["finish_reason 'length' after 3 of max_tokens=4 tokens (expected 'stop')"]),
])
def test_max_tokens(tokens, limit, finish, problems):
    assert checks.max_tokens_problems(tokens, limit, finish) == problems


def test_stop_sequences():
    reference = "alpha beta gamma"
    assert checks.stop_problems("alpha ", ["beta"], reference, "stop") == []
    assert checks.stop_problems("alpha beta", ["beta"], reference, "stop") == [
        "the output contains stop sequence 'beta': 'alpha beta'",
        "output 'alpha beta' is not the stop-free output cut at the first stop sequence ('alpha ')"]
    assert checks.stop_problems("alpha ", ["beta", "QQ"], reference, "length") == [
        "finish_reason 'length' after a stop sequence (expected 'stop')"]


def chunk(index, text=None, finish=None, role=None, usage=None, id_="x", created=1) -> dict:
    delta = {k: v for k, v in (("role", role), ("content", text)) if v is not None}
    body = {"id": id_, "object": "chat.completion.chunk", "created": created, "model": "m",
            "choices": [{"index": index, "delta": delta, "finish_reason": finish}]}
    if usage is not None:
        body["usage"] = usage
    return body


def test_assemble_chat_chunks():
    chunks = [chunk(0, "", role="assistant"), chunk(1, "", role="assistant"), chunk(0, "He"), chunk(1, "Yo"),
              chunk(0, "y", finish="stop"), chunk(1, None, finish="length")]
    choices = checks.assemble(chunks, chat=True)
    assert choices[0].text == "Hey" and choices[0].finish_reasons == ["stop"]
    assert choices[1].first_delta_role == "assistant" and choices[1].finish_reasons == ["length"]


def test_stream_identity():
    assert checks.stream_identity_problems([chunk(0, "a"), chunk(0, "b")]) == []
    assert checks.stream_identity_problems([chunk(0, "a"), chunk(0, "b", id_="y", created=2)]) == [
        "chunks carry 2 different id values: 'x', 'y'", "chunks carry 2 different created values: 1, 2"]


def test_include_usage():
    usage = {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}
    good = [chunk(0, "a", finish="length"), {**chunk(0), "choices": [], "usage": usage}]
    assert checks.include_usage_problems(good, 1, chat=True) == []
    no_usage_chunk = [chunk(0, "a", finish="length")]
    last_is_content = ("the last chunk's choices is [{'index': 0, 'delta': {'content': 'a'}, 'finish_reason': "
                       "'length'}], expected [] (the usage chunk)")
    assert checks.include_usage_problems(no_usage_chunk, 1, chat=True) == [
        last_is_content, "the last chunk has no usage", "content chunks cover choice indices [], expected 0..0"]
    early = [chunk(0, "a", usage=usage), {**chunk(0), "choices": [], "usage": usage}]
    assert checks.include_usage_problems(early, 1, chat=True) == [
        f"chunk 0 carries usage {usage!r} before the usage chunk"]


def test_usage_null_on_other_chunks():
    chunks = [chunk(0, "a", usage=None), {**chunk(0, "b"), "usage": None}, {**chunk(0), "choices": []}]
    assert checks.stream_usage_null_problems(chunks) == ["chunk 0 has no usage field (expected usage: null)"]
    # vLLM#7262: the usage on every chunk
    usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    assert checks.stream_usage_null_problems([chunk(0, "a", usage=usage), chunk(0)]) == [
        f"chunk 0 carries usage {usage!r} (expected usage: null)"]


def test_choice_indices():
    assert checks.choice_indices_problems([{"index": 1}, {"index": 0}], 2) == []
    assert checks.choice_indices_problems([{"index": 0}, {"index": 0}], 2) == [
        "choice indices [0, 0], expected [0, 1] for n=2"]


def test_error_answers():
    assert error_answers.status_problems(400, 400, "") == []
    assert error_answers.status_problems(500, 400, "boom") == ["server error HTTP 500, expected 400: 'boom'"]
    assert error_answers.status_problems(422, 400, "{}") == ["HTTP 422, expected 400: '{}'"]
    assert error_answers.envelope_problems('{"error": {"message": "bad"}}') == []
    assert error_answers.envelope_problems('{"detail": "bad"}') == ["body.error: missing (required)"]
    assert error_answers.envelope_problems("Internal Server Error") == [
        "error body is not JSON: 'Internal Server Error'"]
    full = '{"error": {"message": "m", "type": "t", "param": null, "code": "model_not_found"}}'
    assert error_answers.error_object_problems(full) == []
    assert error_answers.error_object_problems('{"error": "Unauthorized"}') == [
        "body.error: expected object, got string 'Unauthorized'",
        "openapi ErrorResponse: body.error: 'Unauthorized' is not of type 'object'"]


@pytest.mark.parametrize("text", ["", "  \n", "{", '{"a', '{"a":', '{"a": 1', '{"a": -', '{"a": 1.', '{"a": 1e+',
                                  '{"a": tr', '{"a": [1, {"b": null', '{"a": "x\\u00', '{"a": "\\', '[1, 2]',
                                  '{"a": 1}  '])
def test_json_prefixes(text):
    assert checks.json_prefix_problem(text) is None


@pytest.mark.parametrize("text, problem", [
    ('{"a": 1} x', "text after the complete JSON value at character 9"),
    ("hello", "expected a JSON value at character 0"),
    ('{"a" 1', "expected ':' at character 5"),
    ("{1", "expected an object key at character 1"),
    ("[1,]", "expected a JSON value at character 3"),
    ('{"a": 01', "invalid number '01' at character 6"),
    ('{"a": 1.e5}', "invalid number '1.e5' at character 6"),
    ('{"a": [1}', "expected ',' or ']' at character 8"),
    ('{"a": "\\q"}', "invalid escape '\\\\q' at character 7"),
    ('{"a": "x\ny"}', "unescaped control character '\\n' in a string at character 8"),
    ('{"a": nul}', "expected a JSON value at character 6"),
])
def test_json_prefix_problems(text, problem):
    assert checks.json_prefix_problem(text).startswith(problem)


ANSWER = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}}, "required": ["answer"]}


def test_generated_json_is_judged_by_finish_reason():
    assert checks.generated_json_problems('{"answer": "yes"}', ANSWER, "stop", "content") == ([], None)
    # Complete and valid although max_tokens was reached: nothing to doubt.
    assert checks.generated_json_problems('{"answer": "no"}', ANSWER, "length", "content") == ([], None)
    problems, inconclusive = checks.generated_json_problems('{"answer": "y', ANSWER, "length", "content")
    assert problems == [] and inconclusive.startswith("inconclusive: generation stopped at max_tokens")
    problems, _ = checks.generated_json_problems('{"answer": "y', ANSWER, "stop", "content")
    assert problems[0].startswith("content is not JSON (Unterminated string") and "finish_reason is 'stop'" in \
        problems[0]
    problems, _ = checks.generated_json_problems('{"answer": "maybe"}', ANSWER, "stop", "content")
    assert problems[0].startswith("content does not validate against the schema: 'maybe' is not one of")
    problems, _ = checks.generated_json_problems("Sure! {", ANSWER, "length", "arguments")
    assert problems[0].startswith("arguments is not even the beginning of JSON (expected a JSON value at "
                                  "character 0")
