from llmconform.api import sse


def stream(body: str, content_type: str = "text/event-stream; charset=utf-8") -> sse.Stream:
    events, trailing = sse.parse_events(body)
    return sse.Stream(status=200, content_type=content_type, events=events, trailing=trailing, body=body)


GOOD = 'data: {"id": "a", "n": 1}\n\ndata: {"id": "a", "n": 2}\n\ndata: [DONE]\n\n'


def test_parses_data_events_in_order():
    events, trailing = sse.parse_events(GOOD)
    assert [e.data for e in events] == ['{"id": "a", "n": 1}', '{"id": "a", "n": 2}', "[DONE]"]
    assert trailing == ""
    assert stream(GOOD).chunks() == [{"id": "a", "n": 1}, {"id": "a", "n": 2}]
    assert sse.framing_problems(stream(GOOD)) == []


def test_sse_field_rules():
    events, _ = sse.parse_events(": keep-alive\r\ndata:x\r\ndata:  y\r\n\r\nevent: error\ndata: z\n\n")
    assert [e.data for e in events] == ["x\n y", "z"]  # one space after the colon is dropped, not two
    assert events[1].fields == {"event": ["error"], "data": ["z"]}


def test_comment_lines_are_fine():
    assert sse.framing_problems(stream(": ping\n\n" + GOOD)) == []


def test_missing_done():
    assert sse.framing_problems(stream('data: {"n": 1}\n\n')) == ["no data: [DONE] event"]


def test_done_twice_or_not_last():
    assert sse.framing_problems(stream(GOOD + "data: [DONE]\n\n")) == ["data: [DONE] sent 2 times"]
    assert sse.framing_problems(stream('data: [DONE]\n\ndata: {"n": 1}\n\n')) == [
        "1 data event(s) after data: [DONE]"]


def test_lines_without_the_data_field():
    problems = sse.framing_problems(stream('{"n": 1}\n\n' + GOOD))
    # The SSE field name is what precedes the first colon: here '{"n"'.
    assert problems == ['event 0 has field(s) {"n": OpenAI streams carry only data: lines',
                        "event 0 has no data: line"]


def test_non_json_data_and_wrong_content_type():
    problems = sse.framing_problems(stream("data: hello\n\ndata: [DONE]\n\n", content_type="application/json"))
    assert problems == ["content-type is 'application/json', expected text/event-stream",
                        "data event 0 is not JSON: 'hello'"]


def test_unterminated_last_event():
    body = 'data: {"n": 1}\n\ndata: [DONE]\n'
    events, trailing = sse.parse_events(body)
    assert [e.data for e in events] == ['{"n": 1}'] and trailing == "data: [DONE]"
    assert sse.framing_problems(stream(body)) == [
        "no data: [DONE] event", "the stream ends inside an event (no blank line after it): 'data: [DONE]'"]


def test_events_glued_without_blank_line_are_one_event():
    body = 'data: {"n": 1}\ndata: {"n": 2}\n\ndata: [DONE]\n\n'
    assert sse.framing_problems(stream(body)) == ['data event 0 is not JSON: \'{"n": 1}\\n{"n": 2}\'']


def test_replacement_characters_sent_as_utf8_are_valid_but_broken_bytes_are_not():
    """A model whose output is not valid UTF-8 streams U+FFFD (EF BF BD on the wire): that is valid UTF-8."""
    text, error = sse.decode("data: {\"text\": \"\ufffd\"}\n\n".encode())
    assert error is None and "\ufffd" in text
    text, error = sse.decode(b"data: {\"text\": \"\xe2\x82\"}\n\n")
    assert error == "byte 16: b'\\xe2\\x82\"}\\n\\n'" and "\ufffd" in text
    broken = sse.Stream(200, "text/event-stream", *sse.parse_events(text), body=text, utf8_error=error)
    assert "the stream is not valid UTF-8 (byte 16: b'\\xe2\\x82\"}\\n\\n')" in sse.framing_problems(broken)
