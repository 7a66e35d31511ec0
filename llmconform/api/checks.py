"""Semantic checks on OpenAI responses beyond their shape: usage arithmetic, logprobs consistency, max_tokens and
finish_reason, stop sequences, and how a stream's chunks fit together. Each returns a list of problems (empty when
the response conforms), so a check can report everything wrong at once."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from llmconform.api import schema


def usage_problems(usage, completion_tokens_counted: int | None = None) -> list[str]:
    """CompletionUsage: total_tokens == prompt_tokens + completion_tokens, and completion_tokens equals the tokens
    actually returned (counted from logprobs, summed over choices) when that count is known."""
    problems = schema.validate(schema.USAGE, usage, "usage")
    if problems:
        return problems
    prompt, completion, total = usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]
    if total != prompt + completion:
        problems.append(f"usage.total_tokens {total} != prompt_tokens {prompt} + completion_tokens {completion}")
    if completion_tokens_counted is not None and completion != completion_tokens_counted:
        problems.append(f"usage.completion_tokens {completion} != {completion_tokens_counted} tokens returned")
    return problems


def completion_logprobs_problems(logprobs, text: str, top: int) -> list[str]:
    """Legacy completions logprobs: tokens concatenate to the text, one token_logprobs/top_logprobs/text_offset entry
    per token, logprobs <= 0, `top` to `top`+1 alternatives per position ("the API will always return the logprob
    of the sampled token, so there may be up to logprobs+1 elements"), text_offset = where each token starts."""
    if logprobs is None:
        return ["logprobs: null although logprobs were requested"]
    problems = schema.validate(schema.COMPLETION_LOGPROBS, logprobs, "logprobs")
    if problems:
        return problems
    tokens = logprobs.get("tokens") or []
    joined = "".join(tokens)
    if joined != text:
        problems.append(f"logprobs.tokens concatenate to {joined!r}, text is {text!r}")
    for key in ("token_logprobs", "top_logprobs", "text_offset"):
        values = logprobs.get(key)
        if values is None or len(values) != len(tokens):
            problems.append(f"logprobs.{key} has {'no' if values is None else len(values)} entries for "
                            f"{len(tokens)} tokens")
    for i, value in enumerate(logprobs.get("token_logprobs") or []):
        if value is not None and value > 0:
            problems.append(f"logprobs.token_logprobs[{i}] = {value} > 0")
    for i, alternatives in enumerate(logprobs.get("top_logprobs") or []):
        if alternatives is None:
            continue
        if not top <= len(alternatives) <= top + 1:
            problems.append(f"logprobs.top_logprobs[{i}] has {len(alternatives)} entries, expected {top}..{top + 1}")
        problems += [f"logprobs.top_logprobs[{i}][{t!r}] = {v} > 0" for t, v in alternatives.items() if v > 0]
    offsets = logprobs.get("text_offset") or []
    if len(offsets) == len(tokens) and offsets:
        expected = [offsets[0]]
        for token in tokens[:-1]:
            expected.append(expected[-1] + len(token))
        if offsets != expected:
            problems.append(f"logprobs.text_offset {offsets} does not follow the token lengths (expected {expected})")
    return problems


def chat_logprobs_problems(logprobs, content: str, top: int) -> list[str]:
    """Chat logprobs (ChatCompletionTokenLogprob): the tokens' `bytes` concatenate to the content ("Useful in
    instances where characters are represented by multiple tokens and their byte representations must be combined
    to generate the correct text representation", so a token that is part of a character shows no text of its own:
    the token strings must concatenate to the content only when every token is whole UTF-8, or bytes are null);
    every logprob <= 0, at most `top` alternatives per position ("may be fewer than requested"; at least one when any
    were asked for), alternatives sorted most likely first."""
    if logprobs is None:
        return ["logprobs: null although logprobs were requested"]
    entries = logprobs.get("content") if isinstance(logprobs, dict) else None
    problems = schema.validate(schema.Array(schema.CHAT_TOKEN_LOGPROB), entries, "logprobs.content")
    if problems:
        return problems
    assert isinstance(entries, list)  # the schema checked it
    problems += _logprob_text_problems(entries, content)
    for i, entry in enumerate(entries):
        if entry["logprob"] > 0:
            problems.append(f"logprobs.content[{i}].logprob = {entry['logprob']} > 0")
        alternatives = entry["top_logprobs"]
        if len(alternatives) > top or (top > 0 and not alternatives):
            problems.append(f"logprobs.content[{i}].top_logprobs has {len(alternatives)} entries for "
                            f"top_logprobs={top}")
        values = [a["logprob"] for a in alternatives]
        problems += [f"logprobs.content[{i}].top_logprobs[{j}].logprob = {v} > 0"
                     for j, v in enumerate(values) if v > 0]
        if values != sorted(values, reverse=True):
            problems.append(f"logprobs.content[{i}].top_logprobs are not sorted most likely first: {values}")
    return problems


def _logprob_text_problems(entries: list[dict], content: str) -> list[str]:
    joined_tokens = "".join(e["token"] for e in entries)
    if any(e["bytes"] is None for e in entries):
        if joined_tokens != content:
            return [f"logprobs.content tokens concatenate to {joined_tokens!r}, content is {content!r}"]
        return []
    joined = bytes(b for e in entries for b in e["bytes"])
    problems = []
    if not _same_text(joined, content):
        problems.append(f"logprobs.content bytes concatenate to {joined!r} ({joined.decode('utf-8', 'replace')!r}), "
                        f"content is {content!r} ({content.encode('utf-8')!r})")
    whole = all(_decodes(bytes(e["bytes"])) for e in entries)
    if whole and joined_tokens != content:
        problems.append(f"logprobs.content tokens concatenate to {joined_tokens!r}, content is {content!r}")
    return problems


def _decodes(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _same_text(generated: bytes, content: str) -> bool:
    """Whether `content` is the text of the generated bytes. Bytes that are not valid UTF-8 have no exact text:
    decoders replace them with U+FFFD, one per byte or one per broken sequence, so runs of U+FFFD compare as one."""
    if _decodes(generated):
        return generated.decode("utf-8") == content
    collapse = re.compile("\ufffd+")
    return collapse.sub("\ufffd", generated.decode("utf-8", "replace")) == collapse.sub("\ufffd", content)


def max_tokens_problems(tokens: int, max_tokens: int, finish_reason) -> list[str]:
    """max_tokens is "the maximum number of tokens that can be generated"; finish_reason is "length" exactly when
    that limit was hit, otherwise "stop" (a natural stop or a stop sequence)."""
    if tokens > max_tokens:
        return [f"{tokens} tokens returned for max_tokens={max_tokens}"]
    if tokens == max_tokens and finish_reason != "length":
        return [f"finish_reason {finish_reason!r} although max_tokens={max_tokens} was reached (expected 'length')"]
    if tokens < max_tokens and finish_reason != "stop":
        return [f"finish_reason {finish_reason!r} after {tokens} of max_tokens={max_tokens} tokens (expected 'stop')"]
    return []


def stop_problems(text: str, stops: list[str], reference: str, finish_reason) -> list[str]:
    """stop: "The returned text will not contain the stop sequence." With `reference` the same request's output
    without stop sequences (greedy), the text must be the reference cut before the first stop occurrence."""
    problems = [f"the output contains stop sequence {s!r}: {text!r}" for s in stops if s in text]
    cuts = [reference.find(s) for s in stops if s in reference]
    if cuts:
        expected = reference[:min(cuts)]
        if text != expected:
            problems.append(f"output {text!r} is not the stop-free output cut at the first stop sequence "
                            f"({expected!r})")
        if finish_reason != "stop":
            problems.append(f"finish_reason {finish_reason!r} after a stop sequence (expected 'stop')")
    return problems


@dataclass
class StreamedChoice:
    text: str = ""
    roles: list = field(default_factory=list)  # delta.role values in order of arrival
    first_delta_role: object = None
    finish_reasons: list = field(default_factory=list)
    logprob_tokens: list = field(default_factory=list)


def assemble(chunks: list[dict], chat: bool) -> dict[int, StreamedChoice]:
    """Per choice index: the concatenated text, the roles and finish_reasons seen, and the streamed logprob tokens."""
    choices: dict[int, StreamedChoice] = {}
    for chunk in chunks:
        for choice in chunk.get("choices") or []:
            index = choice.get("index")
            first = index not in choices
            streamed = choices.setdefault(index, StreamedChoice())
            if chat:
                delta = choice.get("delta") or {}
                if first:
                    streamed.first_delta_role = delta.get("role")
                if delta.get("role") is not None:
                    streamed.roles.append(delta["role"])
                streamed.text += delta.get("content") or ""
                logprobs = choice.get("logprobs") or {}
                streamed.logprob_tokens += [e.get("token") for e in logprobs.get("content") or []]
            else:
                streamed.text += choice.get("text") or ""
                logprobs = choice.get("logprobs") or {}
                streamed.logprob_tokens += logprobs.get("tokens") or []
            if choice.get("finish_reason") is not None:
                streamed.finish_reasons.append(choice["finish_reason"])
    return choices


def stream_identity_problems(chunks: list[dict]) -> list[str]:
    """Chunk `id`: "Each chunk has the same ID"; `created`: "Each chunk has the same timestamp"."""
    problems = []
    for key in ("id", "created", "object"):
        values = [c.get(key) for c in chunks]
        distinct = list(dict.fromkeys(map(repr, values)))
        if len(distinct) > 1:
            problems.append(f"chunks carry {len(distinct)} different {key} values: {', '.join(distinct[:4])}")
    return problems


def include_usage_problems(chunks: list[dict], expected_choices: int, chat: bool) -> list[str]:
    """stream_options.include_usage: one additional chunk before [DONE] whose usage holds the request's totals and
    whose choices "is always an empty array"; every other chunk's usage is null."""
    if not chunks:
        return ["no chunks"]
    last, others = chunks[-1], chunks[:-1]
    problems = []
    if last.get("choices") != []:
        problems.append(f"the last chunk's choices is {last.get('choices')!r}, expected [] (the usage chunk)")
    usage = last.get("usage")
    if usage is None:
        problems.append("the last chunk has no usage")
    else:
        counted = sum(len(c.logprob_tokens) for c in assemble(chunks, chat).values()) or None
        problems += usage_problems(usage, counted)
    problems += [f"chunk {i} carries usage {c['usage']!r} before the usage chunk" for i, c in enumerate(others)
                 if c.get("usage") is not None]
    indices = {ch.get("index") for c in others for ch in c.get("choices") or []}
    if indices != set(range(expected_choices)):
        problems.append(f"content chunks cover choice indices {sorted(indices, key=str)}, expected "
                        f"0..{expected_choices - 1}")
    return problems


def stream_usage_null_problems(chunks: list[dict]) -> list[str]:
    """With include_usage, "All other chunks will also include a usage field, but with a null value"."""
    return [f"chunk {i} has no usage field (expected usage: null)" if "usage" not in c else
            f"chunk {i} carries usage {c['usage']!r} (expected usage: null)"
            for i, c in enumerate(chunks[:-1]) if c.get("usage") is not None or "usage" not in c]


def choice_indices_problems(choices: list, n: int) -> list[str]:
    """`n` choices, with `index` 0..n-1."""
    indices = sorted((c.get("index") for c in choices), key=str)
    if indices != list(range(n)):
        return [f"choice indices {indices}, expected {list(range(n))} for n={n}"]
    return []



# --- JSON that generation may have cut short -----------------------------------------------------------------------

_NUMBER_PREFIX = re.compile(r"-?(?:(?:0|[1-9]\d*)(?:\.\d*|(?:\.\d+)?[eE][+-]?\d*)?)?")
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")
_ESCAPES = set('"\\/bfnrtu')
_HEX = set("0123456789abcdefABCDEF")


def json_prefix_problem(text: str) -> str | None:
    """None when `text` is the beginning of some JSON text (what generation stopped at max_tokens may leave), else
    what is wrong and where. A complete JSON text is a prefix of itself; text after a complete value is not."""
    stack: list[str] = []
    expect = "value"  # value, value-or-close, key, key-or-close, colon, comma-or-close, end
    i, n = 0, len(text)

    def after_value() -> str:
        return "comma-or-close" if stack else "end"

    while i < n:
        c = text[i]
        if c in " \t\n\r":
            i += 1
            continue
        where = f"at character {i} ({text[i:i + 20]!r})"
        if expect == "end":
            return f"text after the complete JSON value {where}"
        if c == '"' and expect in ("value", "value-or-close", "key", "key-or-close"):  # a string value or key
            end = _string_end(text, i)
            if isinstance(end, str):
                return end
            if end is None:
                return None  # the text ends inside the string
            expect, i = ("colon" if expect.startswith("key") else after_value()), end
            continue
        if expect in ("value", "value-or-close"):
            if c == "]" and expect == "value-or-close":
                stack.pop()
                expect, i = after_value(), i + 1
            elif c in "{[":
                stack.append(c)
                expect, i = ("key-or-close" if c == "{" else "value-or-close"), i + 1
            elif c == "-" or c.isdigit():
                j = i
                while j < n and text[j] in "+-.eE0123456789":
                    j += 1
                token = text[i:j]
                whole = _NUMBER.fullmatch(token) is not None
                if not (whole or (j == n and _NUMBER_PREFIX.fullmatch(token))):
                    return f"invalid number {token!r} at character {i}"
                expect, i = after_value(), j
            else:
                literal = next((w for w in ("true", "false", "null") if w.startswith(text[i:i + len(w)])), None)
                if literal is None:
                    return f"expected a JSON value {where}"
                if i + len(literal) > n:
                    return None  # the text ends inside the literal
                expect, i = after_value(), i + len(literal)
        elif expect in ("key", "key-or-close"):
            if c == "}" and expect == "key-or-close":
                stack.pop()
                expect, i = after_value(), i + 1
            else:
                return f"expected an object key {where}"
        elif expect == "colon":
            if c != ":":
                return f"expected ':' {where}"
            expect, i = "value", i + 1
        else:  # comma-or-close
            if c == ",":
                expect, i = ("key" if stack[-1] == "{" else "value"), i + 1
            elif c == {"{": "}", "[": "]"}[stack[-1]]:
                stack.pop()
                expect, i = after_value(), i + 1
            else:
                return f"expected ',' or {'}' if stack[-1] == '{' else ']'!r} {where}"
    return None


def _string_end(text: str, start: int):
    """The index after the string that opens at `start`; None when the text ends inside it; a str when invalid."""
    i, n = start + 1, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            return i + 1
        if c == "\\":
            if i + 1 >= n:
                return None
            if text[i + 1] not in _ESCAPES:
                return f"invalid escape {text[i:i + 2]!r} at character {i}"
            if text[i + 1] == "u":
                digits = text[i + 2:i + 6]
                if not all(d in _HEX for d in digits):
                    return f"invalid \\u escape {text[i:i + 6]!r} at character {i}"
                if len(digits) < 4:
                    return None
                i += 6
                continue
            i += 2
            continue
        if ord(c) < 0x20:
            return f"unescaped control character {c!r} in a string at character {i}"
        i += 1
    return None


def generated_json_problems(text: str, schema_: dict, finish_reason, what: str) -> tuple[list[str], str | None]:
    """(problems, inconclusive reason) for JSON a model generated under a schema (structured output, tool-call
    arguments). finish_reason "stop" (or "tool_calls"): complete JSON valid for the schema. "length": generation hit
    max_tokens, which the spec allows to cut the JSON: complete and valid passes, a valid JSON prefix is
    inconclusive, anything else is a problem."""
    import jsonschema

    try:
        value = json.loads(text)
    except ValueError as error:
        if finish_reason != "length":
            return [f"{what} is not JSON ({error}) although finish_reason is {finish_reason!r}: {text[:300]!r}"], None
        problem = json_prefix_problem(text)
        if problem:
            return [(f"{what} is not even the beginning of JSON ({problem}) after finish_reason 'length': "
                     f"{text[:300]!r}")], None
        return [], (f"inconclusive: generation stopped at max_tokens (finish_reason 'length') inside the JSON; "
                    f"{what} is a valid JSON prefix of {len(text)} characters ({text[:80]!r}...)")
    try:
        jsonschema.validate(value, schema_)
    except jsonschema.ValidationError as error:
        return [f"{what} does not validate against the schema: {error.message}: {text[:300]!r}"], None
    return [], None
