"""A scripted, fast streaming-completions server for testing the load generator itself (the thing under test is the
client, so the server must cost far less per chunk than any client: raw asyncio protocol, HTTP/1.1 keep-alive,
chunked transfer encoding, pre-encoded chunks, one timer for all streams).

Every POST /v1/completions streams `max_tokens` choice chunks, then a usage chunk and [DONE], like vLLM with
`stream_options.include_usage`. Pacing: after `ttft_ms`, every stream in flight gets one chunk per tick of `itl_ms`
(one timer writes to every stream, so at 64 streams and 1 ms it offers 64,000 chunks/s). A larger `itl_ms` is a
server that got slower (every chunk delayed). `max_streams` is a capacity: requests beyond it queue (their TTFT
grows), as in an engine whose batch is full.

    python -m tests.fakes.sse_server --itl-ms 1 [--ttft-ms 0] [--max-streams N] [--port 0]   # prints "port N"

`SseServer` starts it as a subprocess (its own interpreter: no GIL shared with the client under test).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import subprocess
import sys
from pathlib import Path

MAX_HEAD = 65536


def _chunk(payload: bytes) -> bytes:
    """One HTTP/1.1 chunk carrying one SSE event."""
    event = b"data: " + payload + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(event), event)


# Chunks shaped like vLLM's completions chunks (the same fields, about 230 bytes): the client's cost per chunk is
# mostly parsing them, and the server's is one write whatever their size.
_FIELDS = {"id": "cmpl-0c3b6a2d4f0e9c1b5a7d3e6f8a1c2b4d", "object": "text_completion", "created": 1764633600,
           "model": "fake"}
_CHOICE = {"index": 0, "text": " tok", "logprobs": None, "finish_reason": None, "stop_reason": None,
           "prompt_logprobs": None}
CHOICE = _chunk(json.dumps({**_FIELDS, "choices": [_CHOICE], "usage": None}).encode())
LAST = _chunk(json.dumps({**_FIELDS, "choices": [{**_CHOICE, "finish_reason": "length"}], "usage": None}).encode())
DONE = _chunk(b"[DONE]") + b"0\r\n\r\n"
HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
        b"connection: keep-alive\r\n\r\n")


class Streams:
    """Every stream in flight, advanced one chunk per tick by one timer; at most `max_streams` at once."""

    def __init__(self, itl_s: float, max_streams: int | None = None):
        self.itl_s = itl_s
        self.max_streams = max_streams
        self.active: list[list] = []  # [transport, chunks left, usage chunk]
        self.waiting: collections.deque = collections.deque()
        self.ticking = False
        self.next_tick = 0.0  # when the current tick was due (loop time)

    def add(self, transport, tokens: int, usage: bytes) -> None:
        if self.max_streams and len(self.active) >= self.max_streams:
            self.waiting.append([transport, tokens, usage])
            return
        self.active.append([transport, tokens, usage])
        if not self.ticking:
            self.ticking = True
            self.next_tick = asyncio.get_running_loop().time()
            asyncio.get_running_loop().call_soon(self.tick)

    def tick(self) -> None:
        still = []
        for stream in self.active:
            transport, left, usage = stream
            if transport.is_closing():
                continue
            if left > 1:
                transport.write(CHOICE)
                stream[1] = left - 1
                still.append(stream)
            else:
                transport.write(LAST + usage + DONE)
        while self.waiting and (not self.max_streams or len(still) < self.max_streams):
            still.append(self.waiting.popleft())
        self.active = still
        if still:
            # Ticks on a fixed grid: writing to every stream takes time (about 10 us a stream here), and waiting a
            # full ITL after that work would stretch the ITL with the number of streams (28 ms for 20 at 900 streams).
            loop = asyncio.get_running_loop()
            self.next_tick += self.itl_s
            loop.call_later(max(0.0, self.next_tick - loop.time()), self.tick)
        else:
            self.ticking = False


class Connection(asyncio.Protocol):
    def __init__(self, streams: Streams, ttft_s: float):
        self.streams = streams
        self.ttft_s = ttft_s
        self.buffer = b""
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data: bytes):
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                if len(self.buffer) > MAX_HEAD:
                    self.transport.close()
                return
            head = self.buffer[:head_end].decode("latin-1").split("\r\n")
            length = next((int(line.split(":", 1)[1]) for line in head[1:]
                           if line.lower().startswith("content-length:")), 0)
            if len(self.buffer) < head_end + 4 + length:
                return
            body = self.buffer[head_end + 4:head_end + 4 + length]
            self.buffer = self.buffer[head_end + 4 + length:]
            self.answer(head[0], body)

    def answer(self, request_line: str, body: bytes) -> None:
        method, path, _ = request_line.split(" ", 2)
        if method != "POST" or path != "/v1/completions":
            self.transport.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
            return
        request = json.loads(body)
        tokens = int(request.get("max_tokens") or 16)
        prompt = request.get("prompt")
        usage = {"completion_tokens": tokens}
        if isinstance(prompt, list):  # token ids: their count is the prompt's length
            usage["prompt_tokens"] = len(prompt)
        usage_chunk = _chunk(json.dumps({"id": "fake", "object": "text_completion", "model": "fake",
                                         "choices": [], "usage": usage}).encode())
        self.transport.write(HEAD)
        def start():
            return (self.streams.add(self.transport, tokens, usage_chunk))
        if self.ttft_s:
            asyncio.get_running_loop().call_later(self.ttft_s, start)
        else:
            start()


async def serve(port: int, itl_s: float, ttft_s: float, max_streams: int | None) -> None:
    loop = asyncio.get_running_loop()
    streams = Streams(itl_s, max_streams)
    server = await loop.create_server(lambda: Connection(streams, ttft_s), "127.0.0.1", port, backlog=4096)
    print(f"port {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


class SseServer:
    """The server in a subprocess, for `with SseServer(itl_ms=1) as server: ... server.url`."""

    def __init__(self, itl_ms: float, ttft_ms: float = 0.0, max_streams: int | None = None):
        self.argv = [sys.executable, "-m", "tests.fakes.sse_server", "--itl-ms", str(itl_ms),
                     "--ttft-ms", str(ttft_ms)] + (["--max-streams", str(max_streams)] if max_streams else [])
        self.process: subprocess.Popen | None = None
        self.url = ""

    def __enter__(self) -> SseServer:
        root = Path(__file__).resolve().parents[2]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
        self.process = subprocess.Popen(self.argv, stdout=subprocess.PIPE, text=True, cwd=root, env=env)
        line = self.process.stdout.readline()
        if not line.startswith("port "):
            self.process.kill()
            raise RuntimeError(f"the fake SSE server did not start: {line!r}")
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"
        return self

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--itl-ms", type=float, default=1.0, help="time between a stream's chunks")
    parser.add_argument("--ttft-ms", type=float, default=0.0, help="time before a stream's first chunk")
    parser.add_argument("--max-streams", type=int, help="streams served at once; the rest queue")
    args = parser.parse_args()
    # uvloop: its writes cost about half of asyncio's, and the server must stay far cheaper per chunk than the client
    # under test (on 2 cores with the client's bare protocol, asyncio's server fell behind first: ITL 27 ms for 20).
    import uvloop

    try:
        uvloop.run(serve(args.port, args.itl_ms / 1e3, args.ttft_ms / 1e3, args.max_streams))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
