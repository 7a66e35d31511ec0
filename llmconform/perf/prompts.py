"""Prompts of an exact token length for the load generator: random token ids or text cut from prose, checked by a
round trip through the model's tokenizer (or the server's own /tokenize route), sent as token ids where no text has
that length."""

from __future__ import annotations

import collections
import itertools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from llmconform.config.workloads import Workload

if TYPE_CHECKING:  # the load generator's target, whose /tokenize route can count
    from llmconform.perf.loadgen import Target

# Prose for `prompts: text` (written for this project): prompts are cut from it at exact token counts.
DEFAULT_TEXT = (
    "A serving engine keeps many conversations moving at once. Each request brings a prompt that must be read in "
    "full before the first word of the answer can appear, and then the answer grows one token at a time while other "
    "requests join and leave the batch. Operators care about how long the first token takes, how steady the stream "
    "of later tokens is, and how many tokens the whole machine produces every second. A good benchmark measures "
    "all three with the same clock, on the same requests, and keeps its own overhead small enough that the engine, "
    "not the client, sets the pace. Hardware has limits that no scheduler can beat: a decoding step has to read "
    "every weight of the model from memory, so the memory bandwidth of the accelerator bounds how fast a single "
    "stream can go. Batching many streams shares that read among them, which is why throughput rises with "
    "concurrency until compute or memory capacity runs out. "
)


class PromptError(ValueError):
    """No prompt of the requested token length could be made with this tokenizer."""


@dataclass(frozen=True)
class Prompt:
    text: str
    tokens: int  # as the server counts it: special tokens its tokenizer adds (BOS) included
    token_ids: tuple[int, ...] | None = None  # sent instead of the text (no text of the exact length was found)


class PromptTokenizer:
    """Makes prompts whose token count is exact: tokens -> text -> tokens again, truncating or topping up until the
    round trip is stable (byte-level BPE merges neighbours, so N sampled tokens rarely re-encode to N).

    The vocabulary and decoding come from the model's tokenizer.json (read with `tokenizers`). Counting is the
    server's where it can tell (`with_server`: its /tokenize route), because the server's tokenizer may split text
    differently from tokenizer.json alone (transformers picks a tokenizer class by model type, with its own
    pre-tokenizer); otherwise tokenizer.json counts and usage.prompt_tokens checks it afterwards."""

    def __init__(self, tokenizer, encode: Callable[[str], list[int]] | None = None,
                 added_by_server: int | None = None, counted_by: str = "tokenizer.json",
                 accepts_token_ids: bool = False):
        self.tokenizer = tokenizer
        # When no text of the exact length is found: token ids where the engine takes them, else the nearest text.
        self.accepts_token_ids = accepts_token_ids
        self.fallbacks: collections.Counter = collections.Counter()  # "token ids" / "nearest" -> prompts made so
        self.most_off = 0  # the largest difference of a nearest-length prompt, in tokens
        self._lock = threading.Lock()
        self.encode = encode or (lambda text: tokenizer.encode(text, add_special_tokens=False).ids)
        # special tokens (e.g. BOS) the server adds to every prompt
        self.added_by_server = (tokenizer.num_special_tokens_to_add(False) if added_by_server is None
                                else added_by_server)
        self.counted_by = counted_by
        special = set(tokenizer.get_added_tokens_decoder())
        self.ordinary_ids = np.array([i for i in range(tokenizer.get_vocab_size(with_added_tokens=True))
                                      if i not in special], dtype=np.int64)

    @classmethod
    def from_dir(cls, path: str | Path) -> PromptTokenizer:
        from tokenizers import Tokenizer

        path = Path(path)
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(f"no tokenizer.json at {path}")
        return cls(Tokenizer.from_file(str(file)))

    def with_server(self, target: Target) -> PromptTokenizer:
        """The same tokenizer, counting with the server's POST /tokenize (vLLM, SGLang) where it answers;
        unchanged where it does not."""
        import httpx

        client = httpx.Client(base_url=target.base_url, timeout=60, headers=target.headers)

        def server_ids(text: str, special: bool) -> list[int]:
            response = client.post("/tokenize", json={"model": target.model, "prompt": text,
                                                      "add_special_tokens": special})
            response.raise_for_status()
            return response.json()["tokens"]

        accepts_ids = target.accepts_token_id_prompts
        try:
            added = len(server_ids("a", True)) - len(server_ids("a", False))
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            client.close()
            return PromptTokenizer(self.tokenizer, self.encode, self.added_by_server, self.counted_by, accepts_ids)
        return PromptTokenizer(self.tokenizer, lambda text: server_ids(text, False), added,
                               counted_by=f"{target.base_url}/tokenize", accepts_token_ids=accepts_ids)

    @property
    def made(self) -> str:
        """How the prompts made so far got their length."""
        if not self.fallbacks:
            return "exact-length text"
        parts = []
        if self.fallbacks["token ids"]:
            parts.append(f"{self.fallbacks['token ids']} sent as token ids (no text of the exact length found)")
        if self.fallbacks["nearest"]:
            parts.append(f"{self.fallbacks['nearest']} of the nearest length found (off by up to {self.most_off} "
                         f"token(s); this engine takes no token-id prompts)")
        return "exact-length text, except " + "; ".join(parts)

    def count(self, text: str, with_special: bool = True) -> int:
        return len(self.encode(text)) + (self.added_by_server if with_special else 0)

    def random_prompts(self, n: int, tokens: int, rng: np.random.Generator) -> list[Prompt]:
        """`n` prompts of uniformly random ordinary tokens, each exactly `tokens` long as the server counts."""
        body = self._body_length(tokens)

        def one(child: np.random.Generator) -> Prompt:
            def draw(k: int) -> list[int]:
                return child.choice(self.ordinary_ids, size=k).tolist()

            return self._fit(draw(body), tokens, draw)

        return self._each(one, rng.spawn(n))

    def text_prompts(self, n: int, tokens: int, rng: np.random.Generator, text: str | None = None) -> list[Prompt]:
        """`n` prompts cut from natural text (`text`, default the built-in prose), each starting at a different word
        and with its own request number first, so that no two share a cached prefix."""
        body = self._body_length(tokens)
        words = (text or DEFAULT_TEXT).split()

        def one(i: int) -> Prompt:
            start = int(starts[i])
            rotated = " ".join(words[start:] + words[:start])
            ids = self.tokenizer.encode(f"Request {i}: {rotated}", add_special_tokens=False).ids
            while len(ids) < body + 8:  # enough text to cut from
                ids += self.tokenizer.encode(" " + rotated, add_special_tokens=False).ids
            filler = itertools.cycle(ids)
            return self._fit(ids[:body], tokens, lambda k: [next(filler) for _ in range(k)])

        starts = rng.integers(len(words), size=n)
        return self._each(one, range(n))

    def _each(self, make: Callable, items) -> list[Prompt]:
        # Counting may be a round trip to the server per try: overlap them. Each prompt has its own random stream,
        # so the prompts do not depend on the order the threads run in.
        with ThreadPoolExecutor(max_workers=16) as pool:
            return list(pool.map(make, items))

    def _body_length(self, tokens: int) -> int:
        body = tokens - self.added_by_server
        if body < 1:
            raise PromptError(f"a prompt of {tokens} tokens leaves no room after the {self.added_by_server} special "
                              f"token(s) the server adds")
        return body

    def _fit(self, ids: list[int], tokens: int, more: Callable[[int], list[int]], tries: int = 32) -> Prompt:
        """A prompt of `tokens` tokens as the server counts, from a first guess of body ids: decode, re-encode,
        truncate or top up, until the round trip is stable. Some tokenizers never settle on some lengths (a decode
        that re-encodes to a different split every time): then token ids where the engine takes them, else the
        nearest length seen (its true length recorded, the difference reported by `made`)."""
        length = tokens - self.added_by_server
        nearest: tuple[int, str] | None = None
        for _ in range(tries):
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            again = self.encode(text)
            if len(again) == length:
                return Prompt(text, tokens)
            if nearest is None or abs(len(again) - length) < abs(nearest[0] - length):
                nearest = (len(again), text)
            ids = again[:length] if len(again) > length else again + more(length - len(again))
        with self._lock:
            if self.accepts_token_ids:
                self.fallbacks["token ids"] += 1
                full = (ids + more(tokens))[:tokens]  # the engine adds no special token to token ids
                return Prompt(self.tokenizer.decode(full, skip_special_tokens=True), tokens, tuple(full))
            self.fallbacks["nearest"] += 1
            assert nearest is not None  # set by the first try
            self.most_off = max(self.most_off, abs(nearest[0] - length))
        return Prompt(nearest[1], nearest[0] + self.added_by_server)


def make_prompts(tokenizer: PromptTokenizer, workload: Workload, count: int, stream: int) -> list[Prompt]:
    """Prompts for one phase of a sweep; `stream` separates the random streams of points and warm-ups, so no prompt
    repeats across them (a repeat would be served from the prefix cache)."""
    rng = np.random.default_rng([workload.seed, stream])
    if workload.prompts == "text":
        return tokenizer.text_prompts(count, workload.input_tokens, rng, workload.text)
    return tokenizer.random_prompts(count, workload.input_tokens, rng)
