"""The fixed requests every layout answers for the equivalence suite, and the parsing of OpenAI-style responses
(completions, chat, streamed completions) into `compare.Generation`s.

Token identity: where the engine can return token ids (vLLM's `return_token_ids` and `return_tokens_as_token_ids`
request extensions), tokens and top-k entries are compared by id; otherwise by token text, and each Generation says
which (`identity`).
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass

import httpx

from llmconform.equivalence.comparators import Generation, Step

TEXT_PROMPTS: dict[str, str] = {
    "greeting": "Hello, my name is",
    "capital": "The capital of France is",
    "counting": "1, 2, 3, 4, 5, 6,",
    "code": "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "story": "Once upon a time, in a quiet village by the sea, there lived an old fisherman who",
    "long": ("The history of the printing press begins in the fifteenth century, when metal movable type made it "
             "possible to reproduce pages quickly and cheaply. Within a few decades presses spread across the "
             "cities of the continent, books became affordable to merchants and students, and the number of "
             "titles in circulation grew from thousands to millions. Scholars argue about which effects mattered "
             "most: the standardisation of spelling, the speed at which new ideas travelled, or the rise of a "
             "reading public that could compare sources for itself. What is certain is that"),
}

CHAT_PROMPTS: dict[str, list[dict]] = {
    "question": [{"role": "user", "content": "What is the tallest mountain in the world?"}],
    "system": [{"role": "system", "content": "You are a terse assistant. Answer in one sentence."},
               {"role": "user", "content": "Why is the sky blue?"}],
    "multi-turn": [{"role": "user", "content": "Give me a number between 1 and 10."},
                   {"role": "assistant", "content": "7"},
                   {"role": "user", "content": "Now double it and explain."}],
}

TOKEN_ID_PROMPT_LENGTHS = {"ids-short": 8, "ids-medium": 24, "ids-long": 96}
TOKEN_ID_SEED = 20261127
FIRST_SPECIAL_FREE_ID = 3  # ids below this are often special tokens (pad, bos, eos); a prompt avoids them
SAMPLING_SEED = 33

# Request fields that make an engine return token ids; engines without them are compared by token text.
TOKEN_ID_EXTENSIONS: dict[str, dict] = {
    "vllm": {"return_token_ids": True, "return_tokens_as_token_ids": True},
}


def token_id_prompts(vocab_size: int | None) -> dict[str, list[int]]:
    """Prompts given as token ids, the same for every layout: seeded ids from the low end of the vocabulary (every
    real vocabulary has at least 256 ordinary tokens; 256 is used when the size is unknown)."""
    high = min(vocab_size or 256, 1000)
    rng = random.Random(TOKEN_ID_SEED)
    return {name: [rng.randrange(FIRST_SPECIAL_FREE_ID, high) for _ in range(length)]
            for name, length in TOKEN_ID_PROMPT_LENGTHS.items()}


class ProbeError(Exception):
    """The engine answered a probe request with an error (or not at all)."""


@dataclass
class ProbeClient:
    """Sends the probe requests to one server. `max_tokens` and `top_k` are the same for every layout."""

    http: httpx.Client
    model: str
    engine: str
    max_tokens: int = 16
    top_k: int = 5

    @property
    def extensions(self) -> dict:
        return TOKEN_ID_EXTENSIONS.get(self.engine, {})

    def greedy(self, prompt: str | list[int]) -> dict:
        return {"model": self.model, "prompt": prompt, "max_tokens": self.max_tokens, "temperature": 0.0,
                "logprobs": self.top_k, **self.extensions}

    def complete(self, name: str, prompt: str | list[int], **overrides) -> Generation:
        body = self._post("/v1/completions", {**self.greedy(prompt), **overrides})
        return parse_completion(name, body)

    def complete_streaming(self, name: str, prompt: str | list[int]) -> Generation:
        request = {**self.greedy(prompt), "stream": True, "stream_options": {"include_usage": True}}
        try:
            with self.http.stream("POST", "/v1/completions", json=request) as response:
                if response.status_code != 200:
                    raise ProbeError(f"POST /v1/completions (stream) answered {response.status_code}: "
                                     f"{response.read().decode(errors='replace')[:500]}")
                events = [json.loads(data) for data in _sse_data(response.iter_lines())]
        except httpx.HTTPError as error:
            raise ProbeError(f"POST /v1/completions (stream) failed: {type(error).__name__}: {error}") from None
        return parse_completion_stream(name, events)

    def chat(self, name: str, messages: list[dict], **overrides) -> Generation:
        request = {"model": self.model, "messages": messages, "max_tokens": self.max_tokens, "temperature": 0.0,
                   "logprobs": True, "top_logprobs": self.top_k, **self.extensions, **overrides}
        return parse_chat(name, self._post("/v1/chat/completions", request))

    def seeded_sample(self, name: str, prompt: str) -> Generation:
        return self.complete(name, prompt, temperature=1.0, top_p=1.0, seed=SAMPLING_SEED)

    def first_token_counts(self, prompt: str, samples: int) -> dict[str, int]:
        """First-token frequencies over `samples` independent samples at temperature 1 (one request, n=samples)."""
        body = self._post("/v1/completions", {"model": self.model, "prompt": prompt, "max_tokens": 1,
                                              "temperature": 1.0, "top_p": 1.0, "n": samples, **self.extensions})
        counts: dict[str, int] = {}
        for choice in body.get("choices", []):
            ids = choice.get("token_ids")
            token = f"id:{ids[0]}" if ids else choice.get("text", "")
            counts[token] = counts.get(token, 0) + 1
        if sum(counts.values()) != samples:
            raise ProbeError(f"asked for {samples} samples (n={samples}), got {sum(counts.values())} choices")
        return counts

    def concurrent(self, requests: list[dict], headers: dict[str, str]) -> list[Generation]:
        """Send completions requests at once (so that the engine batches them); answers in request order."""
        return asyncio.run(self._concurrent(requests, headers))

    async def _concurrent(self, requests: list[dict], headers: dict[str, str]) -> list[Generation]:
        async with httpx.AsyncClient(base_url=str(self.http.base_url), headers=headers,
                                     timeout=self.http.timeout) as client:
            responses = await asyncio.gather(*(client.post("/v1/completions", json=r) for r in requests))
        answers = []
        for index, response in enumerate(responses):
            if response.status_code != 200:
                raise ProbeError(f"concurrent request {index} answered {response.status_code}: {response.text[:500]}")
            answers.append(parse_completion(str(index), response.json()))
        return answers

    def _post(self, route: str, request: dict) -> dict:
        try:
            response = self.http.post(route, json=request)
        except httpx.HTTPError as error:
            raise ProbeError(f"POST {route} failed: {type(error).__name__}: {error}") from None
        if response.status_code != 200:
            raise ProbeError(f"POST {route} answered {response.status_code}: {response.text[:500]}")
        return response.json()


# --- parsing -----------------------------------------------------------------------------------------------------
def parse_completion(name: str, body: dict) -> Generation:
    choice = _only_choice(body)
    logprobs = choice.get("logprobs") or {}
    steps = _completion_steps(logprobs.get("tokens") or [], logprobs.get("token_logprobs") or [],
                              logprobs.get("top_logprobs") or [])
    return _generation(name, choice.get("text") or "", choice.get("token_ids"), steps, choice.get("finish_reason"),
                       body.get("usage"), choice.get("prompt_token_ids"))


def parse_completion_stream(name: str, events: list[dict]) -> Generation:
    """Reassemble a streamed completion (one choice) from its `data:` events."""
    text, token_ids = "", []
    tokens: list[str] = []
    token_logprobs: list[float | None] = []
    top_logprobs: list[dict | None] = []
    finish_reason, usage, prompt_ids, saw_ids = None, None, None, False
    for event in events:
        if event.get("usage"):
            usage = event["usage"]
        for choice in event.get("choices") or []:
            if choice.get("index", 0) != 0:
                raise ProbeError(f"a stream for one prompt carried choice index {choice.get('index')}")
            text += choice.get("text") or ""
            if choice.get("token_ids") is not None:
                saw_ids = True
                token_ids += choice["token_ids"]
            if choice.get("prompt_token_ids"):
                prompt_ids = choice["prompt_token_ids"]
            logprobs = choice.get("logprobs") or {}
            tokens += logprobs.get("tokens") or []
            token_logprobs += logprobs.get("token_logprobs") or []
            top_logprobs += logprobs.get("top_logprobs") or []
            finish_reason = choice.get("finish_reason") or finish_reason
    steps = _completion_steps(tokens, token_logprobs, top_logprobs)
    return _generation(name, text, token_ids if saw_ids else None, steps, finish_reason, usage, prompt_ids)


def parse_chat(name: str, body: dict) -> Generation:
    choice = _only_choice(body)
    content = (choice.get("logprobs") or {}).get("content") or []
    steps = tuple(Step(_key(item["token"]), item.get("logprob"),
                       _best_first((_key(t["token"]), t["logprob"]) for t in item.get("top_logprobs") or []))
                  for item in content)
    message = choice.get("message") or {}
    return _generation(name, message.get("content") or "", choice.get("token_ids"), steps,
                       choice.get("finish_reason"), body.get("usage"), body.get("prompt_token_ids"))


def _only_choice(body: dict) -> dict:
    choices = body.get("choices") or []
    if len(choices) != 1:
        raise ProbeError(f"expected exactly one choice, got {len(choices)}")
    return choices[0]


def _completion_steps(tokens: list, token_logprobs: list, top_logprobs: list) -> tuple[Step, ...]:
    steps = []
    for index, token in enumerate(tokens):
        top = top_logprobs[index] if index < len(top_logprobs) and top_logprobs[index] else {}
        logprob = token_logprobs[index] if index < len(token_logprobs) else None
        steps.append(Step(_key(token), logprob, _best_first((_key(t), lp) for t, lp in top.items())))
    return tuple(steps)


def _generation(name: str, text: str, token_ids: list[int] | None, steps: tuple[Step, ...],
                finish_reason: str | None, usage: dict | None, prompt_ids: list[int] | None) -> Generation:
    if token_ids is not None:
        tokens, identity = tuple(f"id:{i}" for i in token_ids), "token ids"
    elif steps:
        tokens = tuple(s.key for s in steps)
        identity = "token ids" if all(k.startswith("id:") for k in tokens) else "token text"
    else:
        tokens, identity = (), "text only"
    counts = {k: usage[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens") if k in usage} \
        if usage else None
    return Generation(prompt=name, text=text, tokens=tokens, steps=steps, finish_reason=finish_reason, usage=counts,
                      identity=identity, prompt_token_ids=tuple(prompt_ids) if prompt_ids else None)


def _key(token: str) -> str:
    """vLLM's `return_tokens_as_token_ids` spells tokens `token_id:N`; such tokens are keyed by id."""
    return f"id:{token[len('token_id:'):]}" if token.startswith("token_id:") else token


def _best_first(pairs) -> tuple[tuple[str, float], ...]:
    return tuple(sorted(pairs, key=lambda pair: -pair[1]))


def _sse_data(lines):
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[len("data:"):].strip()
        if data == "[DONE]":
            return
        yield data
