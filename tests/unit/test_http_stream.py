"""The load generator's HTTP/1.1 streaming connection: the response parser fed every possible split of real
responses, and the keep-alive pool against real sockets (a scripted raw server: status lines, framings, closes)."""

import asyncio
import random

import pytest

from llmconform.perf.http_stream import Endpoint, ResponseBroken, StreamPool, _Connection

SSE_BODY = (b'data: {"choices":[{"text":" a"}]}\n\n' b'data: {"choices":[{"text":" b"}]}\n\n'
            b'data: {"choices":[],"usage":{"completion_tokens":2}}\n\n' b"data: [DONE]\n\n")


def chunked(body: bytes, sizes: list[int], trailers: bytes = b"") -> bytes:
    out, position = b"", 0
    for size in sizes:
        piece = body[position:position + size]
        position += size
        out += b"%x;ext=1\r\n%s\r\n" % (len(piece), piece) if size == 7 else b"%x\r\n%s\r\n" % (len(piece), piece)
    assert position >= len(body)
    return out + b"0\r\n" + trailers + b"\r\n"


CHUNKED_200 = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
               + chunked(SSE_BODY, [7, 40, 1, 200]))
LENGTH_400 = b'HTTP/1.1 400 Bad Request\r\nContent-Length: 24\r\n\r\n{"error": {"code": 400}}'


class _Transport:
    def __init__(self):
        self.sent, self.closed = [], False

    def write(self, data):
        self.sent.append(data)

    def close(self):
        self.closed = True


def feed(response: bytes, pieces: list[bytes], on_body=None):
    """Run one response through a connection, read by read; (result or exception, body seen, transport)."""
    loop = asyncio.new_event_loop()
    try:
        connection, transport, seen = _Connection(), _Transport(), []
        connection.connection_made(transport)
        done = loop.create_future()
        connection.start(b"POST / HTTP/1.1\r\n\r\n", on_body or (lambda body, now: seen.append(body)), done)
        for piece in pieces:
            connection.data_received(piece)
        if not done.done():
            connection.connection_lost(None)
        outcome = done.exception() or done.result()
        return outcome, b"".join(seen), transport
    finally:
        loop.close()


def splits(data: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), rng.randint(1, min(12, len(data) - 1))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]


def test_a_chunked_stream_split_anywhere_is_reassembled():
    for cut in range(1, len(CHUNKED_200)):
        outcome, body, transport = feed(CHUNKED_200, [CHUNKED_200[:cut], CHUNKED_200[cut:]])
        assert (outcome, body) == ((200, b""), SSE_BODY), cut
        assert not transport.closed  # kept alive for the next request


def test_a_chunked_stream_byte_by_byte_and_in_random_reads():
    rng = random.Random(7)
    responses = [CHUNKED_200, CHUNKED_200.replace(b"0\r\n\r\n", b"0\r\nx-trailer: 1\r\n\r\n")]
    for response in responses:
        assert feed(response, [bytes([b]) for b in response])[:2] == ((200, b""), SSE_BODY)
        for _ in range(200):
            assert feed(response, splits(response, rng))[:2] == ((200, b""), SSE_BODY)


def test_an_error_answer_returns_its_body_instead_of_streaming_it():
    rng = random.Random(1)
    for _ in range(50):
        outcome, streamed, transport = feed(LENGTH_400, splits(LENGTH_400, rng))
        assert outcome == (400, b'{"error": {"code": 400}}')
        assert streamed == b""
        assert not transport.closed


def test_a_body_framed_by_the_end_of_the_connection():
    response = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n" + SSE_BODY
    outcome, body, transport = feed(response, [response[:60], response[60:]])
    assert outcome == (200, b"") and body == SSE_BODY
    assert transport.closed  # not reusable: the server ends the body by closing


def test_connection_close_is_not_kept_alive():
    response = CHUNKED_200.replace(b"transfer-encoding", b"connection: close\r\ntransfer-encoding")
    outcome, body, transport = feed(response, [response])
    assert outcome == (200, b"") and body == SSE_BODY and transport.closed


@pytest.mark.parametrize("response, status", [(b"", None), (b"HTTP/1.1 200 OK\r\ncontent-ty", None),
                                              (CHUNKED_200[:-20], 200)])
def test_a_connection_lost_early_says_whether_anything_was_answered(response, status):
    outcome, _, _ = feed(response, [response] if response else [])
    assert isinstance(outcome, ResponseBroken)
    assert outcome.status == status
    assert ("before answering" if status is None else "mid-response") in str(outcome)


@pytest.mark.parametrize("response", [b"SSH-2.0-OpenSSH\r\n\r\n",
                                      b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
                                      b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabcd\r\n"])
def test_a_malformed_response_fails_the_request(response):
    outcome, _, transport = feed(response, [response])
    assert isinstance(outcome, ResponseBroken) and "malformed HTTP response" in str(outcome)
    assert transport.closed


def test_endpoint_from_url():
    endpoint = Endpoint.for_url("https://example.org/base/", "/v1/completions", {"Authorization": "Bearer k",
                                                                                 "Content-Length": "9"})
    assert (endpoint.host, endpoint.port, endpoint.path, endpoint.tls) == ("example.org", 443, "/base/v1/completions",
                                                                           True)
    request = endpoint.request(b'{"a": 1}')
    assert request.startswith(b"POST /base/v1/completions HTTP/1.1\r\nHost: example.org:443\r\n")
    assert b"Authorization: Bearer k\r\n" in request and request.count(b"Content-Length") == 1
    assert request.endswith(b"Content-Length: 8\r\n\r\n{\"a\": 1}")
    assert Endpoint.for_url("http://127.0.0.1:8000", "/v1/x", {}).port == 8000
    with pytest.raises(ValueError, match="is not an http"):
        Endpoint.for_url("127.0.0.1:8000", "/v1/x", {})


class ScriptedRawServer:
    """A real TCP server that answers each request (read up to its body) with the next scripted response; `None`
    closes the connection instead. Counts connections."""

    def __init__(self, responses: list[bytes | None]):
        self.responses, self.connections, self.requests = list(responses), 0, []
        self.transports: list[asyncio.Transport] = []

    async def __aenter__(self):
        server = self

        class Handler(asyncio.Protocol):
            def connection_made(self, transport):
                server.connections += 1
                server.transports.append(transport)
                self.transport, self.buffer = transport, b""

            def data_received(self, data):
                self.buffer += data
                head_end = self.buffer.find(b"\r\n\r\n")
                if head_end < 0:
                    return
                length = int(self.buffer[:head_end].lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                if len(self.buffer) < head_end + 4 + length:
                    return
                server.requests.append(self.buffer[:head_end + 4 + length])
                self.buffer = self.buffer[head_end + 4 + length:]
                response = server.responses.pop(0)
                if response is None:
                    self.transport.close()
                elif response:
                    self.transport.write(response)

        self.server = await asyncio.get_running_loop().create_server(Handler, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    def close_connections(self):
        for transport in self.transports:
            transport.close()

    async def __aexit__(self, *exc):
        self.server.close()


def test_the_pool_keeps_connections_alive_and_drops_stale_ones():
    async def scenario():
        async with ScriptedRawServer([CHUNKED_200, LENGTH_400, CHUNKED_200]) as server:
            pool = StreamPool(Endpoint.for_url(server.url, "/v1/completions", {}), keepalive_s=0.2)
            seen = []
            assert await pool.post(b"{}", lambda body, now: seen.append(body)) == (200, b"")
            assert await pool.post(b"{}", lambda body, now: seen.append(body)) == (400, b'{"error": {"code": 400}}')
            assert server.connections == 1  # the second request reused the first connection
            await asyncio.sleep(0.3)  # idle longer than keepalive_s: not reused
            assert await pool.post(b"{}", lambda body, now: seen.append(body)) == (200, b"")
            assert server.connections == 2
            assert b"".join(seen) == SSE_BODY * 2
            assert all(r.startswith(b"POST /v1/completions HTTP/1.1\r\n") for r in server.requests)
            pool.close()

    asyncio.run(scenario())


def test_a_request_past_its_timeout_is_abandoned_with_its_connection():
    async def scenario():
        async with ScriptedRawServer([b"", CHUNKED_200]) as server:  # the first request is never answered
            pool = StreamPool(Endpoint.for_url(server.url, "/v1/completions", {}), keepalive_s=5)
            with pytest.raises(asyncio.TimeoutError):
                await pool.post(b"{}", lambda body, now: None, timeout_s=0.2)
            assert pool.idle == []
            assert await pool.post(b"{}", lambda body, now: None) == (200, b"")
            assert server.connections == 2

    asyncio.run(scenario())


def test_a_refused_connection_raises_oserror():
    async def scenario():
        async with ScriptedRawServer([]) as server:
            url = server.url
        pool = StreamPool(Endpoint.for_url(url, "/v1/completions", {}), keepalive_s=5)
        with pytest.raises(OSError):
            await pool.post(b"{}")

    asyncio.run(scenario())


def test_a_request_nothing_answered_is_sent_once_more():
    async def scenario():
        # the server closes the first connection on the request, answers the resend; then closes twice
        async with ScriptedRawServer([None, CHUNKED_200, None, None, LENGTH_400]) as server:
            pool = StreamPool(Endpoint.for_url(server.url, "/v1/completions", {}), keepalive_s=5)
            sends = []
            assert await pool.post(b"{}", lambda body, now: None, on_send=lambda: sends.append(1)) == (200, b"")
            assert len(sends) == 2 and server.connections == 2
            with pytest.raises(ResponseBroken) as broken:  # unanswered twice: given up, not sent a third time
                await pool.post(b"{}", lambda body, now: None, on_send=lambda: sends.append(2))
            assert broken.value.status is None and sends == [1, 1, 2, 2]
            pool.close()

    asyncio.run(scenario())


def test_an_answer_broken_after_its_status_is_not_sent_again():
    """The server may have generated it: sending it again would measure (and bill) it twice."""
    async def scenario():
        partial = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\ndata:"
        async with ScriptedRawServer([partial, CHUNKED_200]) as server:
            pool = StreamPool(Endpoint.for_url(server.url, "/v1/completions", {}), keepalive_s=5)
            with pytest.raises(ResponseBroken) as broken:
                task = asyncio.ensure_future(pool.post(b"{}", lambda body, now: None))
                await asyncio.sleep(0.1)
                server.close_connections()
                await task
            assert broken.value.status == 200 and len(server.requests) == 1
            pool.close()

    asyncio.run(scenario())
