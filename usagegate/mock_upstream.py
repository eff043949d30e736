"""A fast, deterministic OpenAI + Anthropic compatible upstream for tests, the demo and the bench.

Map of the module:

- `serve(host, port)` / `python -m usagegate.mock_upstream --port N`: run until SIGINT/SIGTERM.
- `MockUpstream`: the state (a bounded log of received requests) and the router that turns one
  parsed `Request` into a `Reply`; `MockUpstream.start(host, port)` serves it on the running loop.
- `_Connection`: a raw `asyncio.Protocol` speaking HTTP/1.1 with httptools (keep-alive,
  pipelining, Content-Length bodies, chunked SSE streams). No framework: this server is the
  baseline the benchmark divides by, so it has to be at least as fast as a minimal asyncio server.
- The `_openai_*` / `_anthropic_*` builders: response bodies and SSE events in the real APIs' shapes.

Determinism: the answer text is picked from a hash of the request body with `stream` and
`stream_options` removed, so the streamed and non-streamed forms of one request carry the same
text and the same usage. Prompt tokens are `ceil(len(input text) / 4)` (at least 1); completion
tokens are the number of text pieces emitted (one word per piece).

Request headers that change the answer (names are case-insensitive):

- `X-Mock-Status: N`           reply with status N and a provider-shaped error (429 adds retry-after: 1)
- `X-Mock-Delay-Ms: N`         wait N ms before replying (other connections are not blocked)
- `X-Mock-Break-After: N`      streams: send N events then drop the connection mid-body;
                               non-streams: send the head and half the body, then drop it
- `X-Mock-Chunk-Delay-Ms: N`   streams: wait N ms between events (for time-to-first-token tests)
- `X-Mock-Cached-Tokens: N`    report N cached / cache-read prompt tokens (capped at the prompt)
- `X-Mock-Cache-Creation-Tokens: N`  Anthropic: report N cache-write tokens
- `X-Mock-Reasoning-Tokens: N` OpenAI: report N reasoning tokens, counted in the completion tokens
- `X-Mock-Set-Cookie: N`       add `Set-Cookie: mock_session=N; Path=/` to the answer

Introspection: `GET /_mock/requests` lists the last 200 requests (method, path, query, headers
with lowercase names, body as text, and `closed_early`: the client closed the connection while a
delayed or paced reply was still pending); `DELETE /_mock/requests` clears the list.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import functools
import http
import itertools
import os
import signal
import sys
import time
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, cast

import httptools
import orjson

REQUEST_LOG_SIZE = 200

# 64 words so one hash byte picks one word; the text only has to look like prose.
_WORDS: tuple[str, ...] = (
    "the", "quick", "model", "answers", "every", "question", "with", "care", "and", "a",
    "little", "humour", "tokens", "flow", "through", "gateway", "to", "user", "who", "asked",
    "about", "costs", "budgets", "plans", "latency", "streams", "of", "text", "arrive", "in",
    "order", "while", "cache", "hits", "save", "money", "for", "teams", "that", "ship",
    "fast", "reliable", "software", "today", "tomorrow", "maybe", "certainly", "here", "is", "your",
    "summary", "report", "result", "data", "query", "table", "chart", "insight", "friendly", "mock",
    "upstream", "replies", "politely", "done",
)
_MODELS: tuple[str, ...] = (
    "gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "o3-mini", "text-embedding-3-small",
    "text-embedding-3-large", "gpt-3.5-turbo-instruct",
    "claude-sonnet-4-20250514", "claude-3-5-haiku-20241022",
)
_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
    500: "api_error", 529: "overloaded_error",
}
_OPENAI_ERROR_TYPES = {
    400: "invalid_request_error", 401: "invalid_request_error", 403: "invalid_request_error",
    404: "invalid_request_error", 429: "rate_limit_exceeded", 500: "server_error",
    503: "server_error",
}
_OPENAI_ERROR_CODES = {401: "invalid_api_key", 404: "not_found", 429: "rate_limit_exceeded"}
_JSON = b"application/json"
_SSE = b"text/event-stream"
# Keys that differ between the streamed and non-streamed form of the same request.
_STREAM_KEYS = ("stream", "stream_options")


# --------------------------------------------------------------------------- value types


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: str
    # Raw (name, value) pairs: decoding every header of every request would cost more than the
    # rest of a /v1/models reply, so the log keeps them raw and `headers_dict` decodes on demand.
    raw_headers: list[tuple[bytes, bytes]]
    body: bytes
    keep_alive: bool
    # The X-Mock-* headers, keyed by lowercase name without the prefix ("status", "delay-ms").
    mock: dict[str, int] = field(default_factory=dict)
    # The client hung up before a delayed or paced reply was fully written (it cancelled).
    closed_early: bool = False

    def headers_dict(self) -> dict[str, str]:
        """Headers with lowercase names; repeated headers are joined with ", "."""
        out: dict[str, str] = {}
        for raw_name, raw_value in self.raw_headers:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            out[name] = out[name] + ", " + value if name in out else value
        return out


@dataclass(slots=True)
class Reply:
    """What to send: a whole body, or a list of SSE events sent as one HTTP chunk each."""

    status: int
    content_type: bytes = _JSON
    body: bytes = b""
    events: list[bytes] | None = None
    headers: tuple[tuple[bytes, bytes], ...] = ()
    delay_s: float = 0.0
    # None: write the whole stream at once (fast; still one HTTP chunk per event). A number:
    # write each event separately, sleeping this long in between (0 just yields to the loop).
    chunk_delay_s: float | None = None
    break_after: int | None = None
    # The framed chunked body of `events` (terminator included), built once per cached reply.
    wire: bytes | None = None
    # Whether the bytes carry the _ID_SLOTS / _CREATED_SLOT placeholders that `fill` replaces.
    stamped: bool = False
    ids: tuple[bytes, bytes] = (b"", b"")
    created: bytes = b""

    def copy_for_send(self) -> Reply:
        """A per-request copy of a cached reply, with fresh ids and time for `fill`."""
        return Reply(
            self.status, self.content_type, self.body, self.events, self.headers,
            wire=self.wire, stamped=self.stamped, ids=(_new_id(), _new_id()),
            created=b"%d" % time.time(),
        )

    def fill(self, data: bytes) -> bytes:
        if not self.stamped:
            return data
        a, b = _ID_SLOT_BYTES
        return data.replace(a, self.ids[0]).replace(b, self.ids[1]).replace(_CREATED_SLOT_BYTES, self.created)

    @property
    def needs_loop(self) -> bool:
        return self.delay_s > 0 or (self.events is not None and self.chunk_delay_s is not None)


@dataclass(slots=True)
class _Answer:
    """The deterministic part of a generation: identical for the streamed and plain forms."""

    pieces: list[str]  # what each stream event carries; "".join(pieces) is the text
    prompt_tokens: int
    truncated: bool  # stopped by max_tokens
    cached_tokens: int
    cache_creation_tokens: int
    reasoning_tokens: int

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def output_tokens(self) -> int:
        return len(self.pieces)


@dataclass(slots=True)
class _Hints:
    cached: int = 0
    cache_creation: int = 0
    reasoning: int = 0


_NO_HINTS = _Hints()


class _BadRequest(Exception):
    pass


# --------------------------------------------------------------------------- helpers


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


# Generated replies are cached per request body, so they are built with placeholders that
# `Reply.fill` swaps for a fresh id and the current time on every send. Each placeholder has
# the length of its replacement so that pre-computed chunk sizes stay right.
_ID_SLOTS = ("mockidslotA0000000000000", "mockidslotB0000000000000")
_ID_SLOT_BYTES = tuple(slot.encode() for slot in _ID_SLOTS)
_CREATED_SLOT = 9876543210
_CREATED_SLOT_BYTES = b"9876543210"
_ID_PREFIX = os.urandom(6).hex()
_id_counter = itertools.count()
# Distinct bodies remembered; streams are a few kB, so this bounds the cache to a few MB.
_CACHE_SIZE = 512
_CACHE_MAX_BYTES = 64 * 1024


def _new_id() -> bytes:
    # Unique per response like the real APIs, so a gateway that dedupes by id is not fooled;
    # a per-process prefix plus a counter avoids a urandom syscall per response.
    return b"%s%012x" % (_ID_PREFIX.encode(), next(_id_counter))


def _tokens_for(text: str) -> int:
    return max(1, -(-len(text) // 4))


def _text_of(content: Any) -> str:
    """The text in a message content: a string, or a list of parts with `text`/`input_text`."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, dict):
                text = part.get("text")
                if isinstance(text, str):
                    out.append(text)
                elif "content" in part:
                    out.append(_text_of(part["content"]))
        return " ".join(out)
    return ""


def _int_value(raw: bytes) -> int:
    try:
        return max(0, int(raw))
    except ValueError:
        return 0


def _answer(body: dict[str, Any], prompt_text: str, limit: Any, hints: _Hints) -> _Answer:
    """Pick the answer text from a hash of the body so that the same request gets the same text."""
    stable = {k: v for k, v in body.items() if k not in _STREAM_KEYS}
    digest = hashlib.blake2b(orjson.dumps(stable, option=orjson.OPT_SORT_KEYS), digest_size=32).digest()
    natural = 5 + digest[0] % 27  # 5..31 words, one hash byte each below
    count = natural
    if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
        count = min(natural, limit)
    words = [_WORDS[b % len(_WORDS)] for b in digest[1 : 1 + count]]
    words[0] = words[0].capitalize()
    pieces = [words[0]] + [" " + w for w in words[1:]]
    pieces[-1] += "."
    prompt_tokens = _tokens_for(prompt_text)
    cached = min(hints.cached, prompt_tokens)
    return _Answer(
        pieces=pieces,
        prompt_tokens=prompt_tokens,
        truncated=count < natural,
        cached_tokens=cached,
        cache_creation_tokens=min(hints.cache_creation, prompt_tokens - cached),
        reasoning_tokens=hints.reasoning,
    )


def _sse(data: Any, event: str | None = None) -> bytes:
    payload = b"data: " + _dumps(data) + b"\n\n"
    if event is None:
        return payload
    return b"event: " + event.encode() + b"\n" + payload


# Stands in for the text of a stream event in `_piece_events`; orjson escapes it as "\u0000".
_PIECE = "\x00piece\x00"
_PIECE_JSON = orjson.dumps(_PIECE)


def _piece_events(template: Any, pieces: list[str], event: str | None = None) -> list[bytes]:
    """One SSE event per piece, serialising the shared part of the event only once.

    Streams are mostly identical events that differ in a few characters of text; splicing the
    JSON-encoded piece into a pre-serialised template makes a stream about 3x cheaper to build.
    """
    before, after = _sse(template, event).split(_PIECE_JSON)
    return [before + orjson.dumps(p) + after for p in pieces]


def _openai_error(status: int, message: str, code: str | None = None) -> Reply:
    error = {
        "message": message,
        "type": _OPENAI_ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error"),
        "param": None,
        "code": code if code is not None else _OPENAI_ERROR_CODES.get(status),
    }
    return Reply(status, body=_dumps({"error": error}))


def _anthropic_error(status: int, message: str) -> Reply:
    kind = _ANTHROPIC_ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return Reply(status, body=_dumps({"type": "error", "error": {"type": kind, "message": message}}))


# --------------------------------------------------------------------------- OpenAI


def _chat_usage(a: _Answer) -> dict[str, Any]:
    completion = a.output_tokens + a.reasoning_tokens
    return {
        "prompt_tokens": a.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": a.prompt_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": a.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": a.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _openai_chat(body: dict[str, Any], hints: _Hints) -> Reply:
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise _BadRequest("'messages' is a required property")
    prompt = "\n".join(_text_of(m.get("content")) for m in messages if isinstance(m, dict))
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    a = _answer(body, prompt, limit, hints)
    model = body.get("model", "")
    finish = "length" if a.truncated else "stop"
    rid, created = "chatcmpl-" + _ID_SLOTS[0], _CREATED_SLOT
    if not body.get("stream"):
        return Reply(200, body=_dumps({
            "id": rid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": a.text, "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": finish,
            }],
            "usage": _chat_usage(a),
            "service_tier": "default",
            "system_fingerprint": "fp_mock",
        }))
    with_usage = _include_usage(body)

    def chunk(delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
            "service_tier": "default", "system_fingerprint": "fp_mock",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if with_usage:  # OpenAI only adds the key at all when usage was asked for
            data["usage"] = None
        return data

    events = [_sse(chunk({"role": "assistant", "content": "", "refusal": None}, None))]
    events += _piece_events(chunk({"content": _PIECE}, None), a.pieces)
    events.append(_sse(chunk({}, finish)))
    if with_usage:
        events.append(_sse({
            "id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
            "service_tier": "default", "system_fingerprint": "fp_mock",
            "choices": [], "usage": _chat_usage(a),
        }))
    events.append(b"data: [DONE]\n\n")
    return Reply(200, content_type=_SSE, events=events)


def _openai_completions(body: dict[str, Any], hints: _Hints) -> Reply:
    prompt = body.get("prompt", "")
    prompt_text = _text_of(prompt) if isinstance(prompt, list) else str(prompt)
    a = _answer(body, prompt_text, body.get("max_tokens", 16), hints)  # the API's default is 16
    model = body.get("model", "")
    finish = "length" if a.truncated else "stop"
    rid, created = "cmpl-" + _ID_SLOTS[0], _CREATED_SLOT
    usage = {
        "prompt_tokens": a.prompt_tokens,
        "completion_tokens": a.output_tokens,
        "total_tokens": a.prompt_tokens + a.output_tokens,
    }
    if not body.get("stream"):
        return Reply(200, body=_dumps({
            "id": rid, "object": "text_completion", "created": created, "model": model,
            "choices": [{"text": a.text, "index": 0, "logprobs": None, "finish_reason": finish}],
            "usage": usage, "system_fingerprint": "fp_mock",
        }))
    with_usage = _include_usage(body)

    def chunk(text: str, finish_reason: str | None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": rid, "object": "text_completion", "created": created, "model": model,
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}],
            "system_fingerprint": "fp_mock",
        }
        if with_usage:
            data["usage"] = None
        return data

    events = _piece_events(chunk(_PIECE, None), a.pieces)
    events.append(_sse(chunk("", finish)))
    if with_usage:
        events.append(_sse({
            "id": rid, "object": "text_completion", "created": created, "model": model,
            "choices": [], "usage": usage, "system_fingerprint": "fp_mock",
        }))
    events.append(b"data: [DONE]\n\n")
    return Reply(200, content_type=_SSE, events=events)


def _openai_embeddings(body: dict[str, Any], hints: _Hints) -> Reply:
    raw = body.get("input")
    if raw is None:
        raise _BadRequest("'input' is a required property")
    # A token array (list of ints) is one input; a list of strings or of token arrays is many.
    items: list[Any] = raw if isinstance(raw, list) and raw and not isinstance(raw[0], int) else [raw]
    model = str(body.get("model", ""))
    dims = body.get("dimensions")
    if not isinstance(dims, int) or dims <= 0:
        dims = 3072 if "large" in model else 1536
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    prompt_tokens = 0
    for index, item in enumerate(items):
        if isinstance(item, list):
            prompt_tokens += max(1, len(item))
            seed_bytes = _dumps(item)
        else:
            prompt_tokens += _tokens_for(str(item))
            seed_bytes = str(item).encode()
        vector = _vector(seed_bytes + model.encode(), dims)
        embedding: Any = base64.b64encode(vector.tobytes()).decode() if as_base64 else vector.tolist()
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    return Reply(200, body=_dumps({
        "object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }))


def _vector(seed: bytes, dims: int) -> array[float]:
    """A deterministic float32 vector in [-1, 1): hash bytes mapped to floats, then repeated."""
    digest = hashlib.blake2b(seed, digest_size=64).digest()
    base = [(b - 128) / 128.0 for b in digest]
    return array("f", (base * (dims // 64 + 1))[:dims])


def _responses_usage(a: _Answer) -> dict[str, Any]:
    output = a.output_tokens + a.reasoning_tokens
    return {
        "input_tokens": a.prompt_tokens,
        "input_tokens_details": {"cached_tokens": a.cached_tokens},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": a.reasoning_tokens},
        "total_tokens": a.prompt_tokens + output,
    }


def _openai_responses(body: dict[str, Any], hints: _Hints) -> Reply:
    raw = body.get("input", "")
    prompt = _text_of(raw) if isinstance(raw, list) else str(raw)
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        prompt = instructions + "\n" + prompt
    limit = body.get("max_output_tokens")
    a = _answer(body, prompt, limit, hints)
    rid, mid, created = "resp_" + _ID_SLOTS[0], "msg_" + _ID_SLOTS[1], _CREATED_SLOT
    part_done = {"type": "output_text", "text": a.text, "annotations": [], "logprobs": []}
    item_done = {
        "id": mid, "type": "message", "status": "incomplete" if a.truncated else "completed",
        "role": "assistant", "content": [part_done],
    }

    def response(status: str, output: list[Any], usage: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "id": rid, "object": "response", "created_at": created, "status": status,
            "background": False, "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": instructions, "max_output_tokens": limit, "model": body.get("model", ""),
            "output": output, "parallel_tool_calls": True, "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None}, "service_tier": "default", "store": True,
            "temperature": 1.0, "text": {"format": {"type": "text"}}, "tool_choice": "auto",
            "tools": [], "top_p": 1.0, "truncation": "disabled", "usage": usage, "user": None,
            "metadata": {},
        }

    final_status = "incomplete" if a.truncated else "completed"
    final = response(final_status, [item_done], _responses_usage(a))
    if not body.get("stream"):
        return Reply(200, body=_dumps(final))
    seq = iter(range(1 << 30))

    def event(kind: str, **data: Any) -> bytes:
        return _sse({"type": kind, "sequence_number": next(seq), **data}, event=kind)

    where = {"item_id": mid, "output_index": 0, "content_index": 0}
    events = [
        event("response.created", response=response("in_progress", [], None)),
        event("response.in_progress", response=response("in_progress", [], None)),
        event("response.output_item.added", output_index=0, item={
            "id": mid, "type": "message", "status": "in_progress", "role": "assistant", "content": [],
        }),
        event("response.content_part.added", **where, part={
            "type": "output_text", "text": "", "annotations": [], "logprobs": [],
        }),
    ]
    events += [event("response.output_text.delta", **where, delta=p, logprobs=[]) for p in a.pieces]
    events += [
        event("response.output_text.done", **where, text=a.text, logprobs=[]),
        event("response.content_part.done", **where, part=part_done),
        event("response.output_item.done", output_index=0, item=item_done),
        event("response." + final_status, response=final),
    ]
    return Reply(200, content_type=_SSE, events=events)


@functools.cache
def _models_body() -> bytes:
    data = [{"id": m, "object": "model", "created": 1700000000, "owned_by": "mock"} for m in _MODELS]
    return _dumps({"object": "list", "data": data})


def _openai_models() -> Reply:
    return Reply(200, body=_models_body())


# --------------------------------------------------------------------------- Anthropic


def _anthropic_messages(body: dict[str, Any], hints: _Hints) -> Reply:
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise _BadRequest("messages: Field required")
    prompt = "\n".join(_text_of(m.get("content")) for m in messages if isinstance(m, dict))
    system = body.get("system")
    if system:
        prompt = _text_of(system) + "\n" + prompt
    a = _answer(body, prompt, body.get("max_tokens"), hints)
    model = body.get("model", "")
    mid = "msg_" + _ID_SLOTS[0]
    stop = "max_tokens" if a.truncated else "end_turn"
    # Anthropic's input_tokens excludes cache reads and writes, unlike OpenAI's prompt_tokens.
    usage_in = {
        "input_tokens": a.prompt_tokens - a.cached_tokens - a.cache_creation_tokens,
        "cache_creation_input_tokens": a.cache_creation_tokens,
        "cache_read_input_tokens": a.cached_tokens,
    }

    def message(content: list[Any], stop_reason: str | None, output_tokens: int) -> dict[str, Any]:
        return {
            "id": mid, "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": stop_reason, "stop_sequence": None,
            "usage": {**usage_in, "output_tokens": output_tokens, "service_tier": "standard"},
        }

    if not body.get("stream"):
        return Reply(200, body=_dumps(message([{"type": "text", "text": a.text}], stop, a.output_tokens)))

    def event(kind: str, **data: Any) -> bytes:
        return _sse({"type": kind, **data}, event=kind)

    events = [
        # The real API reports a placeholder output count here and the total in message_delta.
        event("message_start", message=message([], None, 1)),
        event("content_block_start", index=0, content_block={"type": "text", "text": ""}),
        event("ping"),
    ]
    events += _piece_events(
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": _PIECE}},
        a.pieces,
        event="content_block_delta",
    )
    events += [
        event("content_block_stop", index=0),
        event("message_delta", delta={"stop_reason": stop, "stop_sequence": None},
              usage={"output_tokens": a.output_tokens}),
        event("message_stop"),
    ]
    return Reply(200, content_type=_SSE, events=events)


# --------------------------------------------------------------------------- router and state

_Handler = Callable[[dict[str, Any], _Hints], Reply]
_ROUTES: dict[tuple[str, str], _Handler] = {
    ("POST", "/v1/chat/completions"): _openai_chat,
    ("POST", "/v1/completions"): _openai_completions,
    ("POST", "/v1/embeddings"): _openai_embeddings,
    ("POST", "/v1/responses"): _openai_responses,
    ("POST", "/v1/messages"): _anthropic_messages,
}
_MOCK_PATH = "/_mock/requests"


@dataclass
class MockUpstream:
    """The mock's state and router. Build one per server; `handle` never blocks."""

    requests: deque[Request] = field(default_factory=lambda: deque(maxlen=REQUEST_LOG_SIZE))
    # Generated replies by (path, body, token hints): the same body always gets the same answer.
    _cache: dict[tuple[Any, ...], Reply] = field(default_factory=dict, repr=False)

    def handle(self, req: Request) -> Reply:
        if req.path == _MOCK_PATH:
            return self._introspect(req.method)
        self.requests.append(req)  # formatted only when someone reads the log
        reply = self._route(req)
        if reply.stamped:
            reply = reply.copy_for_send()
        m = req.mock
        if m:
            reply.delay_s = m.get("delay-ms", 0) / 1000
            if "chunk-delay-ms" in m:
                reply.chunk_delay_s = m["chunk-delay-ms"] / 1000
            reply.break_after = m.get("break-after")
            if "set-cookie" in m:  # as a CDN in front of a provider does (e.g. __cf_bm)
                if not reply.stamped:
                    reply = replace(reply)
                reply.headers = (*reply.headers, (b"set-cookie", b"mock_session=%d; Path=/" % m["set-cookie"]))
        return reply

    def _route(self, req: Request) -> Reply:
        anthropic = req.path == "/v1/messages"
        error = _anthropic_error if anthropic else _openai_error
        forced = req.mock.get("status", 0)
        if forced:
            reply = error(forced, f"Mock error {forced} requested by X-Mock-Status")
            if forced == 429:
                reply.headers = ((b"retry-after", b"1"),)
            return reply
        if req.method == "GET" and req.path == "/v1/models":
            return _openai_models()
        handler = _ROUTES.get((req.method, req.path))
        if handler is None:
            return _openai_error(404, f"Invalid URL ({req.method} {req.path})")
        m = req.mock
        key = (req.path, req.body, m.get("cached-tokens"), m.get("cache-creation-tokens"), m.get("reasoning-tokens"))
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        reply = self._generate(req, handler, error)
        if reply.stamped and len(reply.body) + len(reply.wire or b"") <= _CACHE_MAX_BYTES:
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.clear()  # crude, but a benchmark repeats few bodies and tests fewer
            self._cache[key] = reply
        return reply

    def _generate(self, req: Request, handler: _Handler, error: Callable[[int, str], Reply]) -> Reply:
        try:
            body = orjson.loads(req.body)
        except orjson.JSONDecodeError:
            return error(400, "We could not parse the JSON body of your request.")
        if not isinstance(body, dict):
            return error(400, "The request body must be a JSON object.")
        m = req.mock
        hints = _NO_HINTS if not m else _Hints(
            cached=m.get("cached-tokens", 0),
            cache_creation=m.get("cache-creation-tokens", 0),
            reasoning=m.get("reasoning-tokens", 0),
        )
        try:
            reply = handler(body, hints)
        except _BadRequest as e:
            return error(400, str(e))
        reply.stamped = True
        if reply.events is not None:
            reply.wire = b"".join([_chunk(e) for e in reply.events]) + b"0\r\n\r\n"
        return reply

    def _introspect(self, method: str) -> Reply:
        if method == "GET":
            log = [
                {
                    "method": r.method, "path": r.path, "query": r.query,
                    "headers": r.headers_dict(), "body": r.body.decode("utf-8", "replace"),
                    "closed_early": r.closed_early,
                }
                for r in self.requests
            ]
            return Reply(200, body=_dumps(log))
        if method == "DELETE":
            self.requests.clear()
            return Reply(200, body=b'{"cleared":true}')
        return _openai_error(404, f"Invalid URL ({method} {_MOCK_PATH})")

    async def start(self, host: str = "127.0.0.1", port: int = 9100) -> asyncio.Server:
        """Listen on the running loop; returns the server (port 0 picks a free port)."""
        loop = asyncio.get_running_loop()
        return await loop.create_server(lambda: _Connection(self), host, port, backlog=2048)


# --------------------------------------------------------------------------- HTTP/1.1 protocol

_REASONS: dict[int, bytes] = {s.value: s.phrase.encode() for s in http.HTTPStatus}


def _head(reply: Reply, length: int | None, keep_alive: bool) -> bytes:
    prefix = _head_prefix(reply.status, reply.content_type, reply.headers, keep_alive, length is None)
    return prefix if length is None else prefix + b"content-length: %d\r\n\r\n" % length


@functools.lru_cache(maxsize=256)
def _head_prefix(
    status: int, content_type: bytes, headers: tuple[tuple[bytes, bytes], ...], keep_alive: bool, chunked: bool
) -> bytes:
    """Everything in a response head but its Content-Length; cached as replies repeat a few shapes."""
    lines = [
        b"HTTP/1.1 %d %s" % (status, _REASONS.get(status, b"Unknown")),
        b"content-type: " + content_type,
    ]
    lines += [name + b": " + value for name, value in headers]
    if not keep_alive:
        lines.append(b"connection: close")
    if chunked:  # a complete head; otherwise the caller appends Content-Length and the blank line
        lines += [b"cache-control: no-cache", b"transfer-encoding: chunked", b""]
    return b"\r\n".join(lines) + b"\r\n"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class _Connection(asyncio.Protocol):
    """One client connection. Requests are answered strictly in order, even when pipelined."""

    def __init__(self, mock: MockUpstream) -> None:
        self._upstream = mock
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._mock_headers: dict[str, int] = {}
        self._body: list[bytes] = []
        self._pending: deque[Request] = deque()
        self._busy = False  # a delayed or paced reply is being written by a task
        self._task: asyncio.Task[None] | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, so cast rather than check.
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._task is not None:
            self._task.cancel()

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            if self._transport is not None:
                reply = _openai_error(400, "Malformed HTTP request")
                self._transport.write(_head(reply, len(reply.body), False) + reply.body)
                self._transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._mock_headers = {}
        self._body = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        if name[:7].lower() == b"x-mock-":
            self._mock_headers[name[7:].decode("latin-1").lower()] = _int_value(value)

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        path, _, query = self._url.decode("latin-1").partition("?")
        self._pending.append(Request(
            method=self._parser.get_method().decode(),
            path=path,
            query=query,
            raw_headers=self._headers,
            body=b"".join(self._body),
            keep_alive=self._parser.should_keep_alive(),
            mock=self._mock_headers,
        ))
        if not self._busy:
            self._drain()

    # replying
    def _drain(self) -> None:
        while self._pending and self._transport is not None:
            req = self._pending.popleft()
            reply = self._upstream.handle(req)
            if reply.needs_loop:
                self._busy = True
                self._task = asyncio.get_running_loop().create_task(self._send_later(req, reply))
                return
            self._send(req, reply)

    def _send(self, req: Request, reply: Reply) -> None:
        transport = self._transport
        assert transport is not None
        if reply.events is None:
            body = reply.body
            if reply.break_after is not None:
                # Promise the whole body, deliver half: the client sees a truncated response.
                transport.write(_head(reply, len(body), True) + reply.fill(body[: len(body) // 2]))
                transport.close()
                return
            transport.write(_head(reply, len(body), req.keep_alive) + reply.fill(body))
        else:
            # One HTTP chunk per SSE event, but a single write: a syscall per event would make
            # streams several times slower. X-Mock-Chunk-Delay-Ms gives separate writes.
            head = _head(reply, None, req.keep_alive)
            if reply.break_after is not None:
                cut = b"".join([_chunk(e) for e in reply.events[: reply.break_after]])
                transport.write(head + reply.fill(cut))
                transport.close()  # no terminating chunk: the body is cut mid-stream
                return
            wire = reply.wire
            if wire is None:
                wire = b"".join([_chunk(e) for e in reply.events]) + b"0\r\n\r\n"
            transport.write(head + reply.fill(wire))
        if not req.keep_alive:
            transport.close()

    async def _send_later(self, req: Request, reply: Reply) -> None:
        try:
            if reply.delay_s > 0:
                await asyncio.sleep(reply.delay_s)
            if self._transport is None:
                req.closed_early = True
                return
            if reply.events is None or reply.chunk_delay_s is None:
                self._send(req, reply)
            else:
                await self._send_paced(req, reply)
        except asyncio.CancelledError:
            req.closed_early = True  # connection_lost: the client hung up before the reply was out
            raise
        finally:
            self._busy = False
            self._task = None
        if self._transport is not None and not self._transport.is_closing():
            self._drain()

    async def _send_paced(self, req: Request, reply: Reply) -> None:
        assert reply.events is not None and reply.chunk_delay_s is not None
        transport = self._transport
        assert transport is not None
        transport.write(_head(reply, None, req.keep_alive))
        for sent, event in enumerate(reply.events):
            if reply.break_after is not None and sent >= reply.break_after:
                transport.close()
                return
            if sent:
                await asyncio.sleep(reply.chunk_delay_s)
            if self._transport is None:
                return
            transport.write(_chunk(reply.fill(event)))
        if reply.break_after is not None:
            transport.close()
            return
        transport.write(b"0\r\n\r\n")
        if not req.keep_alive:
            transport.close()


# --------------------------------------------------------------------------- entry points


async def _serve(host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = await MockUpstream().start(host, port)
    bound = server.sockets[0].getsockname()[1]  # differs from `port` when port is 0
    print(f"mock-upstream listening on http://{host}:{bound}", flush=True)
    await stop.wait()
    server.close()


def serve(host: str = "127.0.0.1", port: int = 9100) -> None:
    """Serve the mock until SIGINT or SIGTERM, on uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:  # uvloop is a dependency, but the mock should still run without it
        asyncio.run(_serve(host, port))
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(host, port))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m usagegate.mock_upstream", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100, help="0 picks a free port (printed on start)")
    args = parser.parse_args(argv)
    serve(args.host, args.port)


if __name__ == "__main__":
    main(sys.argv[1:])
