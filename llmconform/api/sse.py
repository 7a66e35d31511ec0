"""A raw server-sent-events reader: the bytes an engine streams, parsed by the SSE rules (WHATWG HTML, "Parsing an
event stream") without any client library smoothing over framing mistakes, plus the OpenAI framing checks."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

DONE = "[DONE]"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


@dataclass
class Event:
    data: str | None  # the data lines joined with "\n"; None when the event had no data field
    fields: dict[str, list[str]] = field(default_factory=dict)  # every field seen, data included


@dataclass
class Stream:
    status: int
    content_type: str
    events: list[Event]
    trailing: str  # text after the last blank line: an event the server never terminated
    body: str  # the whole body, for error messages and non-200 answers
    utf8_error: str | None = None  # where the raw bytes stop being UTF-8 (the body then holds U+FFFD there)

    @property
    def data(self) -> list[str]:
        return [e.data for e in self.events if e.data is not None]

    def chunks(self) -> list[dict]:
        """The JSON chunks before [DONE] (framing_problems says whether they all parse)."""
        result = []
        for data in self.data:
            if data == DONE:
                break
            try:
                chunk = json.loads(data)
            except ValueError:
                continue
            if isinstance(chunk, dict):
                result.append(chunk)
        return result


def parse_events(text: str) -> tuple[list[Event], str]:
    """(events, unterminated trailing text). A blank line ends an event; ':' starts a comment line."""
    events: list[Event] = []
    current: dict[str, list[str]] = {}
    lines = _LINE_BREAK.split(text)
    # A body that ends in a line break splits into a last empty string that is not a blank line of its own.
    complete, last = lines[:-1], lines[-1]
    pending: list[str] = []
    for line in complete:
        if line == "":
            if current:
                events.append(_event(current))
            current, pending = {}, []
            continue
        pending.append(line)
        if line.startswith(":"):
            continue
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        current.setdefault(name, []).append(value)
    trailing = "\n".join(pending + ([last] if last else []))
    return events, trailing


def _event(fields: dict[str, list[str]]) -> Event:
    return Event(data="\n".join(fields["data"]) if "data" in fields else None, fields=fields)


def read_stream(client, path: str, body: dict, headers: dict | None = None) -> Stream:
    """POST `body` to `path` with an httpx.Client and read the raw stream to its end."""
    with client.stream("POST", path, json=body, headers=headers or {}) as response:
        raw = b"".join(response.iter_bytes())
    text, utf8_error = decode(raw)
    events, trailing = parse_events(text)
    return Stream(status=response.status_code, content_type=response.headers.get("content-type", ""), events=events,
                  trailing=trailing, body=text, utf8_error=utf8_error)


def decode(raw: bytes) -> tuple[str, str | None]:
    """(text, None) for UTF-8; else the text with U+FFFD for the bad bytes and where they start. A U+FFFD the
    server sent on purpose (a model's output that is not valid UTF-8) is valid UTF-8 on the wire."""
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as error:
        return raw.decode("utf-8", errors="replace"), f"byte {error.start}: {raw[error.start:error.start + 8]!r}"


def framing_problems(stream: Stream) -> list[str]:
    """OpenAI streaming framing: a text/event-stream of `data:` events, each a JSON object, ended by exactly one
    `data: [DONE]` and nothing after it."""
    problems = []
    if not stream.content_type.startswith("text/event-stream"):
        problems.append(f"content-type is {stream.content_type!r}, expected text/event-stream")
    if stream.utf8_error:
        problems.append(f"the stream is not valid UTF-8 ({stream.utf8_error})")
    for i, event in enumerate(stream.events):
        others = sorted(set(event.fields) - {"data"})
        if others:
            problems.append(f"event {i} has field(s) {', '.join(others)}: OpenAI streams carry only data: lines")
        if event.data is None:
            problems.append(f"event {i} has no data: line")
    data = stream.data
    done_at = [i for i, d in enumerate(data) if d == DONE]
    if not done_at:
        problems.append("no data: [DONE] event")
    elif len(done_at) > 1:
        problems.append(f"data: [DONE] sent {len(done_at)} times")
    elif done_at[0] != len(data) - 1:
        problems.append(f"{len(data) - 1 - done_at[0]} data event(s) after data: [DONE]")
    for i, d in enumerate(data):
        if d == DONE:
            continue
        try:
            chunk = json.loads(d)
        except ValueError:
            problems.append(f"data event {i} is not JSON: {d[:80]!r}")
            continue
        if not isinstance(chunk, dict):
            problems.append(f"data event {i} is not a JSON object: {d[:80]!r}")
    if stream.trailing.strip():
        problems.append(f"the stream ends inside an event (no blank line after it): {stream.trailing[:80]!r}")
    return problems
