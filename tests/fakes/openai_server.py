"""A small OpenAI-compatible server with switches that each break one family of the API, to prove that the conformance
suites catch real bugs. It is the thing under test, so a fake is right here (docs/architecture.md#conventions).

Its "model" is a deterministic function of the prompt (and seed): text is made of 2-character tokens, the context is
CONTEXT tokens long, and it never ends a generation on its own (only max_tokens, a stop sequence or the context).
Without a bug switch it conforms to every check of llmconform/suites/test_openai_*.py.

Run by hand: python -m tests.fakes.openai_server --port 8000 [--api-key K] [--bug NAME]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "fake-model"
CONTEXT = 256
PIECES = [a + b for a in " abcdefgh" for b in "ijklmnopqr"]  # 90 two-character tokens, some starting with a space

# Each switch breaks one family of checks; the comment says what the broken server does.
BUGS = {
    "schema": "responses lack `created`",
    "models": "the model list's entries lack `owned_by`",
    "usage": "total_tokens is one more than prompt + completion",
    "max-tokens": "one token more than max_tokens is generated",
    "stop-leak": "the stop sequence stays in the output",
    "context": "prompt + max_tokens beyond the context is accepted",
    "n": "n is ignored (always one choice)",
    "seed": "the seed is ignored (sampling is random)",
    "greedy-random": "temperature 0 samples at random",
    "logprobs": "logprobs are positive and skip the first token",
    "echo": "echo is ignored",
    "history": "only the last chat message reaches the model",
    "sse-no-done": "streams end without data: [DONE]",
    "sse-framing": "stream events are not separated by blank lines",
    "stream-id": "each chunk has its own id",
    "stream-role": "the first chat delta has no role",
    "stream-finish": "every chunk carries the finish_reason",
    "stream-usage": "the usage chunk also carries the last choice",
    "server-error": "invalid requests get 500",
    "error-shape": "errors are flat {object: error, message, ..., code: int}",
    "unknown-model": "any model name is served",
    "sick-after-error": "the request after an invalid one fails with 500",
    "no-auth": "the API key is not checked",
    "json-schema": "response_format is ignored",
    "tools": "tool call arguments are not JSON",
    # What only the newer checks catch: OpenAI's OpenAPI document, the served model's name, logprob bytes.
    "service-tier": "responses carry service_tier 'standard', outside the document's enum",
    "wrong-model": "responses and chunks name another model than the one served",
    "logprob-bytes": "chat logprobs bytes drop each token's last byte",
    # The regression catalog: bugs real engines had, each as it was reported.
    "usage-every-chunk": "vLLM#7262: with include_usage every chunk carries the usage, not null",
    "stream-tool-type": "vLLM#16340: the first streamed tool-call chunk lacks type 'function'",
    "tool-finish-stop": "vLLM PR#25054: tool_choice 'required' answers finish_reason 'stop' when not streamed",
    "seed-completions": "SGLang#15481: the seed is ignored on /v1/completions (chat honours it)",
    "n-finish-duplicate": "SGLang PR#8417: with n > 1 each choice's finish_reason chunk is sent twice",
    "stop-at-limit": "SGLang 0.5.16: the length limit is checked before the stop sequences, so a stop sequence the "
                     "last allowed token completes stays in the text with finish_reason 'length'",
    "metrics-count": "the generation token counter of /metrics counts one token less per request",
}
# Conforming behaviours a check must not call failures (it may call them inconclusive).
QUIRKS = {
    "json-max-tokens": "structured output runs out of max_tokens inside the JSON (finish_reason 'length'), as a "
                       "weak model's runs of whitespace do",
}
CHAT_ROLES = ("system", "developer", "user", "assistant", "tool")


class RequestError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


@dataclass
class Choice:
    index: int
    tokens: list[str]
    logprobs: list[float]
    finish_reason: str
    tool_calls: list | None = None

    @property
    def text(self) -> str:
        return "".join(self.tokens)


@dataclass
class FakeOpenAI:
    api_key: str | None = None
    bug: str | None = None
    quirk: str | None = None
    sick: threading.Event = field(default_factory=threading.Event)
    # Prometheus counters under vLLM's names (attach with --llm-engine vllm to check them)
    counters: dict = field(default_factory=lambda: dict.fromkeys(
        ("vllm:prompt_tokens_total", "vllm:generation_tokens_total", "vllm:request_success_total"), 0))
    lock: threading.Lock = field(default_factory=threading.Lock)

    # --- the "model" ---------------------------------------------------------------------------------------------

    @staticmethod
    def tokenize(text: str) -> list[str]:
        return [text[i:i + 2] for i in range(0, len(text), 2)]

    def sample(self, prompt: str, count: int, temperature: float, seed, index: int,
               chat: bool) -> list[tuple[str, float]]:
        if temperature == 0 and self.bug != "greedy-random":
            source = prompt
        elif seed is not None and self.bug != "seed" and (chat or self.bug != "seed-completions"):
            source = f"{prompt}|{seed}|{index}|{temperature}"
        else:
            source = f"{prompt}|{time.time_ns()}|{index}"
        tokens = []
        for i in range(count):
            digest = hashlib.sha256(f"{source}|{i}".encode()).digest()
            tokens.append((PIECES[digest[0] % len(PIECES)], -0.05 - digest[1] / 100))
        return tokens

    def generate(self, prompt: str, params: dict, index: int, limit: int, chat: bool) -> Choice:
        if self.bug == "max-tokens":
            limit += 1
        sampled = self.sample(prompt, limit, params.get("temperature", 1.0), params.get("seed"), index, chat)
        stops = params.get("stop") or []
        stops = [stops] if isinstance(stops, str) else stops
        tokens, logprobs = [], []
        for token, logprob in sampled:
            tokens.append(token)
            logprobs.append(logprob)
            text = "".join(tokens)
            hits = [text.find(s) for s in stops if s in text]
            if self.bug == "stop-at-limit" and len(tokens) == limit:
                break
            if hits:
                if self.bug != "stop-leak":  # cut the last token so that the tokens still spell the text
                    cut = min(hits) - len("".join(tokens[:-1]))
                    tokens[-1] = tokens[-1][:max(cut, 0)]
                return Choice(index, tokens, logprobs, "stop")
        return Choice(index, tokens, logprobs, "length")

    # --- requests ------------------------------------------------------------------------------------------------

    def check_auth(self, headers) -> None:
        if self.api_key and self.bug != "no-auth" and headers.get("Authorization") != f"Bearer {self.api_key}":
            raise RequestError(401, "Incorrect API key provided.", code="invalid_api_key")

    def models(self) -> dict:
        model = {"id": MODEL, "object": "model", "created": 1700000000, "owned_by": "llmconform",
                 "max_model_len": CONTEXT}
        if self.bug == "models":
            del model["owned_by"]
        return {"object": "list", "data": [model]}

    def validate(self, body, chat: bool) -> None:
        if not isinstance(body, dict):
            raise RequestError(400, "the body must be a JSON object")
        if "model" not in body:
            raise RequestError(400, "model is required", "model")
        if body["model"] != MODEL and self.bug != "unknown-model":
            raise RequestError(404, f"The model {body['model']!r} does not exist", "model", "model_not_found")
        if chat:
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                raise RequestError(400, "messages must be a non-empty array", "messages")
            for m in messages:
                if not isinstance(m, dict) or m.get("role") not in CHAT_ROLES or not isinstance(m.get("content"), str):
                    raise RequestError(400, f"invalid message {m!r}", "messages")
        elif not isinstance(body.get("prompt"), str):
            raise RequestError(400, "prompt must be a string", "prompt")
        ranges = {"temperature": (0, 2), "top_p": (0, 1), "n": (1, 128), "max_tokens": (0, None),
                  "max_completion_tokens": (0, None), "presence_penalty": (-2, 2), "frequency_penalty": (-2, 2),
                  "seed": (None, None), "logprobs": (0, 5) if not chat else None, "top_logprobs": (0, 20)}
        for name, bounds in ranges.items():
            if name not in body or bounds is None or body[name] is None:
                continue
            value = body[name]
            integer = name in ("n", "max_tokens", "max_completion_tokens", "seed", "logprobs", "top_logprobs")
            if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
                raise RequestError(400, f"{name} must be {'an integer' if integer else 'a number'}", name)
            low, high = bounds
            if (low is not None and value < low) or (high is not None and value > high):
                raise RequestError(400, f"{name} must be in [{low}, {high}]", name)
        if chat and "logprobs" in body and not isinstance(body["logprobs"], bool):
            raise RequestError(400, "logprobs must be a boolean", "logprobs")
        stop = body.get("stop")
        if stop is not None and not (isinstance(stop, str) or (isinstance(stop, list) and len(stop) <= 4 and all(
                isinstance(s, str) for s in stop))):
            raise RequestError(400, "stop must be a string or an array of up to 4 strings", "stop")

    def prompt_of(self, body: dict, chat: bool) -> str:
        if not chat:
            return body["prompt"]
        messages = body["messages"][-1:] if self.bug == "history" else body["messages"]
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"

    def complete(self, body, chat: bool) -> tuple[dict, list[Choice], list[str]]:
        """(request params, choices, prompt tokens)."""
        self.validate(body, chat)
        prompt = self.prompt_of(body, chat)
        prompt_tokens = self.tokenize(prompt)
        room = CONTEXT - len(prompt_tokens)
        if room < 0:
            raise RequestError(400, f"the prompt has {len(prompt_tokens)} tokens; the context is {CONTEXT}", "prompt")
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if limit is None:
            limit = room if chat else 16
        if limit > room and self.bug != "context":
            raise RequestError(400, f"prompt ({len(prompt_tokens)} tokens) + max_tokens ({limit}) exceeds the "
                                    f"context ({CONTEXT})", "max_tokens")
        n = 1 if self.bug == "n" else body.get("n") or 1
        choices = [self.generate(prompt, body, i, limit, chat) for i in range(n)]
        if chat and (body.get("response_format") or {}).get("type") == "json_schema" and self.bug != "json-schema":
            tokens = self.tokenize(json.dumps(instance(body["response_format"]["json_schema"].get("schema") or {})))
            finish = "stop"
            if self.quirk == "json-max-tokens":  # an opening brace, then whitespace up to max_tokens
                tokens, finish = ["{\n"] + ["  "] * (limit - 1), "length"
            choices = [Choice(c.index, tokens, [-0.1] * len(tokens), finish) for c in choices]
        tool_choice = body.get("tool_choice")
        named = isinstance(tool_choice, dict) and (tool_choice.get("function") or {}).get("name")
        if chat and body.get("tools") and (tool_choice == "required" or named):
            function = next((t["function"] for t in body["tools"] if t["function"]["name"] == named),
                            body["tools"][0]["function"])
            arguments = json.dumps(instance(function.get("parameters") or {}))
            if self.bug == "tools":
                arguments = arguments[:-1]
            # As OpenAI answers (vLLM PR#25054): "tool_calls" for "required", "stop" for a named function.
            finish = "stop" if named or (self.bug == "tool-finish-stop" and not body.get("stream")) else "tool_calls"
            for c in choices:
                c.tool_calls = [{"id": f"call_{c.index:09d}", "type": "function",
                                 "function": {"name": function["name"], "arguments": arguments}}]
                c.tokens, c.logprobs, c.finish_reason = [], [], finish
        generated = sum(len(c.tokens) for c in choices) - (self.bug == "metrics-count")
        with self.lock:
            self.counters["vllm:prompt_tokens_total"] += len(prompt_tokens)
            self.counters["vllm:generation_tokens_total"] += generated
            self.counters["vllm:request_success_total"] += 1
        return body, choices, prompt_tokens

    def metrics(self) -> str:
        with self.lock:
            return "".join(f"# TYPE {name[:-len('_total')]} counter\n{name}{{model_name=\"{MODEL}\"}} {value}.0\n"
                           for name, value in self.counters.items())


def instance(schema: dict):
    """A value that validates against a simple JSON schema (objects, enums, primitives)."""
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        return {k: instance(schema.get("properties", {}).get(k, {})) for k in schema.get("required", [])}
    return {"string": "text", "integer": 1, "number": 0.5, "boolean": True, "array": []}.get(kind)


def completion_logprobs(tokens, logprobs, top: int, offset: int, bug: str | None) -> dict:
    tops = [{t: lp, **{p: lp - 0.5 * (j + 1) for j, p in enumerate(q for q in PIECES if q != t)
                       if j < top - 1}} for t, lp in zip(tokens, logprobs)]
    offsets, position = [], offset
    for t in tokens:
        offsets.append(position)
        position += len(t)
    values = list(logprobs)
    if bug == "logprobs":
        values, tokens, tops, offsets = [abs(v) for v in values[1:]], tokens[1:], tops[1:], offsets[1:]
    return {"tokens": list(tokens), "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}


def chat_logprobs(tokens, logprobs, top: int, bug: str | None) -> dict:
    entries = []
    for t, lp in zip(tokens, logprobs):
        alternatives = [t, *[p for p in PIECES if p != t][:max(top - 1, 0)]]
        token_bytes = list(t.encode())[:-1] if bug == "logprob-bytes" else list(t.encode())
        entries.append({"token": t, "logprob": abs(lp) if bug == "logprobs" else lp, "bytes": token_bytes,
                        "top_logprobs": [{"token": a, "logprob": lp - 0.5 * j, "bytes": list(a.encode())}
                                         for j, a in enumerate(alternatives[:top])]})
    if bug == "logprobs":
        entries = entries[1:]
    return {"content": entries, "refusal": None}


def tool_call_deltas(tool_calls: list[dict], bug: str | None) -> list[dict]:
    """Streamed tool calls as OpenAI sends them: a first delta with index, id, type and name (empty arguments), then
    the arguments in pieces."""
    deltas = []
    for index, call in enumerate(tool_calls):
        first = {"index": index, "id": call["id"], "type": "function",
                 "function": {"name": call["function"]["name"], "arguments": ""}}
        if bug == "stream-tool-type":
            del first["type"]
        arguments = call["function"]["arguments"]
        deltas += [first] + [{"index": index, "function": {"arguments": arguments[i:i + 5]}}
                             for i in range(0, len(arguments), 5)]
    return deltas


class Handler(BaseHTTPRequestHandler):
    server: FakeHTTPServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes: without this each answer waits ~40 ms

    def log_message(self, format, *args):  # keep test output clean
        pass

    @property
    def fake(self) -> FakeOpenAI:
        return self.server.fake

    @property
    def model_name(self) -> str:
        return "fake-model-v2" if self.fake.bug == "wrong-model" else MODEL

    def do_GET(self):
        try:
            if self.path == "/health":
                return self.send_json(200, {})
            if self.path == "/version":
                return self.send_json(200, {"version": "1.0.0"})
            if self.path == "/metrics":
                return self.send_json(200, self.fake.metrics(), "text/plain; version=0.0.4")
            self.fake.check_auth(self.headers)
            if self.path == "/v1/models":
                return self.send_json(200, self.fake.models())
            if self.path == f"/v1/models/{MODEL}":
                return self.send_json(200, self.fake.models()["data"][0])
            raise RequestError(404, f"no route {self.path}")
        except RequestError as error:
            self.send_error_object(error)

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            self.fake.check_auth(self.headers)
            if self.path not in ("/v1/completions", "/v1/chat/completions"):
                raise RequestError(404, f"no route {self.path}")
            if self.fake.bug == "sick-after-error" and self.fake.sick.is_set():
                self.fake.sick.clear()
                return self.send_json(500, {"error": {"message": "engine failed", "type": "server_error",
                                                      "param": None, "code": None}})
            try:
                body = json.loads(raw)
            except ValueError:
                raise RequestError(400, "the body is not valid JSON") from None
            chat = self.path == "/v1/chat/completions"
            params, choices, prompt_tokens = self.fake.complete(body, chat)
            if params.get("stream"):
                return self.send_stream(params, choices, prompt_tokens, chat)
            self.send_json(200, self.response(params, choices, prompt_tokens, chat))
        except RequestError as error:
            if error.status == 400 and self.fake.bug == "sick-after-error":
                self.fake.sick.set()
            self.send_error_object(error)

    # --- answers -------------------------------------------------------------------------------------------------

    def response(self, params, choices: list[Choice], prompt_tokens: list[str], chat: bool) -> dict:
        bug = self.fake.bug
        completion_tokens = sum(len(c.tokens) for c in choices)
        body = {"id": "chatcmpl-1" if chat else "cmpl-1", "object": "chat.completion" if chat else "text_completion",
                "created": 1700000000, "model": self.model_name, "choices": [],
                "usage": {"prompt_tokens": len(prompt_tokens), "completion_tokens": completion_tokens,
                          "total_tokens": len(prompt_tokens) + completion_tokens + (bug == "usage")}}
        if bug == "schema":
            del body["created"]
        if bug == "service-tier":
            body["service_tier"] = "standard"
        for c in choices:
            if chat:
                logprobs = chat_logprobs(c.tokens, c.logprobs, params.get("top_logprobs") or 0, bug) \
                    if params.get("logprobs") else None
                message = {"role": "assistant", "content": None if c.tool_calls else c.text, "refusal": None}
                if c.tool_calls:
                    message["tool_calls"] = c.tool_calls
                body["choices"].append({"index": c.index, "message": message, "logprobs": logprobs,
                                        "finish_reason": c.finish_reason})
            else:
                text, tokens, logprobs = c.text, c.tokens, c.logprobs
                if params.get("echo") and bug != "echo":
                    text = params["prompt"] + text
                    tokens, logprobs = prompt_tokens + tokens, [None] * len(prompt_tokens) + logprobs
                lp = None
                if params.get("logprobs") is not None:
                    lp = completion_logprobs(tokens, [v if v is not None else -1.0 for v in logprobs],
                                             params["logprobs"], 0, bug)
                    if params.get("echo") and bug != "echo":
                        lp["token_logprobs"][0], lp["top_logprobs"][0] = None, None
                body["choices"].append({"index": c.index, "text": text, "logprobs": lp,
                                        "finish_reason": c.finish_reason})
        return body

    def chunks(self, params, choices: list[Choice], prompt_tokens: list[str], chat: bool) -> list[dict]:
        bug = self.fake.bug
        include_usage = (params.get("stream_options") or {}).get("include_usage")
        chunks = []

        def chunk(i: int, choice: dict) -> dict:
            body = {"id": f"chunk-{i}" if bug == "stream-id" else "stream-1",
                    "object": "chat.completion.chunk" if chat else "text_completion", "created": 1700000000,
                    "model": self.model_name, "choices": [choice]}
            if include_usage:
                body["usage"] = usage if bug == "usage-every-chunk" else None
            return body

        usage = self.response(params, choices, prompt_tokens, chat)["usage"]

        for c in choices:
            if chat and bug != "stream-role":
                chunks.append(chunk(len(chunks), {"index": c.index, "delta": {"role": "assistant", "content": ""},
                                                  "logprobs": None, "finish_reason": None}))
            if c.tool_calls:
                chunks += [chunk(len(chunks), {"index": c.index, "delta": {"tool_calls": [delta]}, "logprobs": None,
                                               "finish_reason": None}) for delta in tool_call_deltas(c.tool_calls, bug)]
                chunks.append(chunk(len(chunks), {"index": c.index, "delta": {}, "logprobs": None,
                                                  "finish_reason": c.finish_reason}))
            for k, (token, logprob) in enumerate(zip(c.tokens, c.logprobs)):
                last = k == len(c.tokens) - 1
                finish = c.finish_reason if last or bug == "stream-finish" else None
                if chat:
                    lp = chat_logprobs([token], [logprob], params.get("top_logprobs") or 0, None) \
                        if params.get("logprobs") else None
                    choice = {"index": c.index, "delta": {"content": token}, "logprobs": lp, "finish_reason": finish}
                else:
                    lp = completion_logprobs([token], [logprob], params["logprobs"], 0, None) \
                        if params.get("logprobs") is not None else None
                    choice = {"index": c.index, "text": token, "logprobs": lp, "finish_reason": finish}
                chunks.append(chunk(len(chunks), choice))
                if last and bug == "n-finish-duplicate" and len(choices) > 1:
                    empty = {"delta": {}} if chat else {"text": ""}
                    chunks.append(chunk(len(chunks), {**choice, **empty, "logprobs": None}))
        if include_usage:
            final = {**chunk(len(chunks), {}), "choices": [], "usage": usage}
            if bug == "stream-usage":
                final["choices"] = chunks[-1]["choices"]
            chunks.append(final)
        return chunks

    def send_stream(self, params, choices, prompt_tokens, chat: bool) -> None:
        separator = "\n" if self.fake.bug == "sse-framing" else "\n\n"
        events = [f"data: {json.dumps(c)}{separator}" for c in self.chunks(params, choices, prompt_tokens, chat)]
        if self.fake.bug != "sse-no-done":
            events.append(f"data: [DONE]{separator}")
        payload = "".join(events).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def send_error_object(self, error: RequestError) -> None:
        if self.fake.bug == "server-error" and error.status == 400:
            return self.send_json(500, {"error": {"message": "Internal Server Error", "type": "server_error",
                                                  "param": None, "code": None}})
        if self.fake.bug == "error-shape":
            return self.send_json(error.status, {"object": "error", "message": error.message,
                                                 "type": "BadRequestError", "param": error.param,
                                                 "code": error.status})
        kind = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error"}
        self.send_json(error.status, {"error": {"message": error.message, "type": kind.get(error.status, "error"),
                                                "param": error.param, "code": error.code}})

    def send_json(self, status: int, body, content_type: str = "application/json") -> None:
        payload = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class FakeHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeOpenAI, host: str = "127.0.0.1", port: int = 0):
        super().__init__((host, port), Handler)
        self.fake = fake

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key")
    parser.add_argument("--bug", choices=sorted(BUGS), help="; ".join(f"{k}: {v}" for k, v in BUGS.items()))
    parser.add_argument("--quirk", choices=sorted(QUIRKS), help="; ".join(f"{k}: {v}" for k, v in QUIRKS.items()))
    args = parser.parse_args()
    server = FakeHTTPServer(FakeOpenAI(api_key=args.api_key, bug=args.bug, quirk=args.quirk), port=args.port)
    print(f"fake OpenAI server on {server.url} (model {MODEL}, bug {args.bug})", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
