"""HTTP/1.1 POSTs for the load generator, with the response body handed over where the bytes arrive.

Through aiohttp every read of every stream wakes that stream's task (the reader's future, then a step of the task),
and that wake-up was most of the client's CPU per streamed chunk: against the scripted SSE server
(tests/fakes/sse_server.py) a worker paid 48 us per chunk with 16 streams and 29 us with 160, and 31 and 16 us when
the chunked body is parsed inside the connection's `data_received` and handed to a callback. The client's CPU
per chunk times the streams one worker holds is its share of each ITL window, so the load generator talks to the
server through this bare protocol: one keep-alive connection per request in flight, each request's timeout one timer
(not one per read), no task switch per chunk.

It speaks what OpenAI-style servers answer (uvicorn and the like): a status line and headers, then a body framed by
`transfer-encoding: chunked`, `content-length`, or the end of the connection. Timestamps are taken once per read
(`time.perf_counter`), as aiohttp's reader gave them.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_HEAD_BYTES = 65536
# What a chunked body expects next when no chunk data is due (see _Connection._unchunk).
_SIZE_LINE, _CRLF, _TRAILERS = 0, -1, -2


class ResponseBroken(Exception):
    """The connection failed before the response was complete. `status` is the response's status if its head had
    arrived, else None (nothing was answered: the request may be sent again)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    path: str
    tls: bool
    head: bytes  # the request line and fixed headers, up to the content-length header's value

    @classmethod
    def for_url(cls, base_url: str, route: str, headers: dict[str, str]) -> Endpoint:
        url = urlsplit(base_url.rstrip("/") + route)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"{base_url!r} is not an http:// or https:// URL")
        tls = url.scheme == "https"
        port = url.port or (443 if tls else 80)
        path = url.path + (f"?{url.query}" if url.query else "")
        lines = [f"POST {path} HTTP/1.1", f"Host: {url.hostname}:{port}", "Connection: keep-alive",
                 *(f"{k}: {v}" for k, v in headers.items() if k.lower() not in ("host", "content-length"))]
        return cls(url.hostname, port, path, tls, ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1"))

    def request(self, payload: bytes) -> bytes:
        return b"%s%d\r\n\r\n%s" % (self.head, len(payload), payload)


BodyCallback = Callable[[bytes, float], None]  # (body bytes of a 200 answer, time.perf_counter() of their read)


class _Connection(asyncio.Protocol):
    """One connection; one request at a time. Parses the response head, then unframes the body as it arrives."""

    def __init__(self):
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.done: asyncio.Future | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def start(self, request: bytes, on_body: BodyCallback | None, done: asyncio.Future) -> None:
        self.done, self.on_body = done, on_body
        self.buffer = b""
        self.status: int | None = None
        self.framing = ""  # "chunked", "length" or "close", once the head is read
        self.left = 0  # body bytes still due: of the current chunk (chunked) or of the body (length)
        self.error_body: list[bytes] = []
        self.keep_alive = True
        assert self.transport is not None, "a request on a connection that was never made"
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        if self.done is None or self.done.done():
            return  # nothing asked: bytes after a finished answer, dropped with the connection
        now = time.perf_counter()
        try:
            if self.status is None:
                self.buffer += data
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.buffer) > MAX_HEAD_BYTES:
                        raise ResponseBroken(f"response head longer than {MAX_HEAD_BYTES} bytes")
                    return
                self._head(self.buffer[:end].decode("latin-1"))
                data, self.buffer = self.buffer[end + 4:], b""
                if self.framing == "length" and self.left == 0:
                    self._finish()
                    return
            self._body_bytes(data, now)
        except ResponseBroken as broken:
            self._fail(broken)
        except ValueError as error:
            self._fail(ResponseBroken(f"malformed HTTP response: {error}", self.status))

    def _head(self, head: str) -> None:
        lines = head.split("\r\n")
        version, code, *_ = [*lines[0].split(" ", 2), ""]
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise ValueError(f"status line {lines[0][:100]!r}")
        fields: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        self.keep_alive = fields.get("connection", "").lower() != "close" and version != "HTTP/1.0"
        if "chunked" in fields.get("transfer-encoding", "").lower():
            self.framing = "chunked"
        elif "content-length" in fields:
            self.framing, self.left = "length", int(fields["content-length"])
        else:
            self.framing, self.keep_alive = "close", False
        self.status = int(code)

    def _body_bytes(self, data: bytes, now: float) -> None:
        if self.framing == "length":
            piece = data[:self.left]
            self.left -= len(piece)
            self._deliver(piece, now)
            if self.left == 0:
                self._finish()
        elif self.framing == "close":
            self._deliver(data, now)
        else:
            self._unchunk(data, now)

    def _unchunk(self, data: bytes, now: float) -> None:
        """Chunked transfer coding: SIZE[;ext] CRLF, DATA CRLF, ..., 0 CRLF, trailers, CRLF. `left` says what is due:
        > 0 bytes of a chunk's data, _SIZE_LINE, _CRLF after a chunk's data, _TRAILERS after the last chunk."""
        buffer = self.buffer + data if self.buffer else data
        position, pieces = 0, []
        while True:
            if self.left > 0:
                piece = buffer[position:position + self.left]
                if not piece:
                    break
                pieces.append(piece)
                position += len(piece)
                self.left -= len(piece)
                if self.left == 0:
                    self.left = _CRLF
                continue
            end = buffer.find(b"\r\n", position)
            if end < 0:
                break
            if self.left == _CRLF:
                if end != position:
                    raise ValueError("chunk data longer than its size")
                self.left = _SIZE_LINE
            elif self.left == _SIZE_LINE:
                size = int(buffer[position:end].split(b";", 1)[0], 16)
                self.left = size or _TRAILERS
            elif end == position:  # _TRAILERS: the empty line ends the body
                self.buffer = b""
                self._deliver(b"".join(pieces), now)
                self._finish()
                return
            position = end + 2
        self.buffer = buffer[position:]
        self._deliver(b"".join(pieces), now)

    def _deliver(self, body: bytes, now: float) -> None:
        if not body:
            return
        if self.status == 200 and self.on_body is not None:
            self.on_body(body, now)
        else:
            self.error_body.append(body)

    def _finish(self) -> None:
        assert self.done is not None
        if not self.keep_alive:
            self.close()
        self.done.set_result((self.status, b"".join(self.error_body)))

    def _fail(self, broken: ResponseBroken) -> None:
        self.close()
        if self.done is not None and not self.done.done():
            self.done.set_exception(broken)

    def eof_received(self) -> bool:
        if self.done is not None and not self.done.done() and self.framing == "close":
            self._finish()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.done is not None and not self.done.done():
            if self.framing == "close":
                self._finish()
            else:
                why = f": {exc}" if exc else ""
                where = "mid-response" if self.status is not None else "before answering"
                self._fail(ResponseBroken(f"server closed the connection {where}{why}", self.status))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class StreamPool:
    """Keep-alive connections to one endpoint, one per request in flight. An idle connection is reused only while
    younger than `keepalive_s` (below the server's own keep-alive timeout: uvicorn's is 5 s), so a request is not sent
    on a connection the server is closing."""

    def __init__(self, endpoint: Endpoint, keepalive_s: float, connect_timeout_s: float = 60.0):
        self.endpoint = endpoint
        self.keepalive_s = keepalive_s
        self.connect_timeout_s = connect_timeout_s
        self.idle: list[_Connection] = []
        self.tls = ssl.create_default_context() if endpoint.tls else None

    async def post(self, payload: bytes, on_body: BodyCallback | None = None, timeout_s: float | None = None,
                   on_send: Callable[[], None] | None = None) -> tuple[int, bytes]:
        """POST `payload` (JSON); the answer's status, and its body unless it was a 200 with `on_body` (which then
        received every body byte as it arrived). A request whose connection broke before anything was answered is
        sent once more: seen on vLLM-CPU at concurrency 16-32, a pooled connection the server closed as it was
        reused; nothing was answered, so sending again is safe, and the request is measured as the server serves
        it. `on_send` runs just before each sending (a caller stamps its send time there). Raises ResponseBroken,
        OSError, asyncio.TimeoutError."""
        try:
            return await self._post_once(payload, on_body, timeout_s, on_send)
        except ResponseBroken as broken:
            if broken.status is not None:
                raise
        return await self._post_once(payload, on_body, timeout_s, on_send)

    async def _post_once(self, payload: bytes, on_body: BodyCallback | None, timeout_s: float | None,
                         on_send: Callable[[], None] | None) -> tuple[int, bytes]:
        if on_send:
            on_send()
        connection = await self._connection()
        done = asyncio.get_running_loop().create_future()
        connection.start(self.endpoint.request(payload), on_body, done)
        try:
            status, body = await asyncio.wait_for(done, timeout_s)
        except BaseException:
            connection.close()
            raise
        if not connection.closed:
            connection.idle_since = time.monotonic()
            self.idle.append(connection)
        return status, body

    async def _connection(self) -> _Connection:
        now = time.monotonic()
        while self.idle:
            connection = self.idle.pop()
            if not connection.closed and now - connection.idle_since < self.keepalive_s:
                return connection
            connection.close()
        loop = asyncio.get_running_loop()
        _, connection = await asyncio.wait_for(loop.create_connection(
            _Connection, self.endpoint.host, self.endpoint.port, ssl=self.tls,
            server_hostname=self.endpoint.host if self.tls else None), self.connect_timeout_s)
        return connection

    def close(self) -> None:
        for connection in self.idle:
            connection.close()
        self.idle.clear()
