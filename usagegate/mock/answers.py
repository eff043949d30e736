"""The mock's value types and the pieces every provider's answers are built from: the request and
reply, the deterministic answer text and its token counts, ids, SSE framing and error bodies."""

from __future__ import annotations

import hashlib
import itertools
import os
import time
from dataclasses import dataclass, field
from typing import Any

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
MODELS: tuple[str, ...] = (
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
SSE = b"text/event-stream"
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
    # Whether the bytes carry the ID_SLOTS / CREATED_SLOT placeholders that `fill` replaces.
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
class Answer:
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
class Hints:
    cached: int = 0
    cache_creation: int = 0
    reasoning: int = 0


NO_HINTS = Hints()


class BadRequest(Exception):
    pass


# --------------------------------------------------------------------------- helpers


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


# Generated replies are cached per request body, so they are built with placeholders that
# `Reply.fill` swaps for a fresh id and the current time on every send. Each placeholder has
# the length of its replacement so that pre-computed chunk sizes stay right.
ID_SLOTS = ("mockidslotA0000000000000", "mockidslotB0000000000000")
_ID_SLOT_BYTES = tuple(slot.encode() for slot in ID_SLOTS)
CREATED_SLOT = 9876543210
_CREATED_SLOT_BYTES = b"9876543210"
_ID_PREFIX = os.urandom(6).hex()
_id_counter = itertools.count()
# Distinct bodies remembered; streams are a few kB, so this bounds the cache to a few MB.
CACHE_SIZE = 512
CACHE_MAX_BYTES = 64 * 1024


def _new_id() -> bytes:
    # Unique per response like the real APIs, so a gateway that dedupes by id is not fooled;
    # a per-process prefix plus a counter avoids a urandom syscall per response.
    return b"%s%012x" % (_ID_PREFIX.encode(), next(_id_counter))


def tokens_for(text: str) -> int:
    return max(1, -(-len(text) // 4))


def text_of(content: Any) -> str:
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
                    out.append(text_of(part["content"]))
        return " ".join(out)
    return ""


def int_value(raw: bytes) -> int:
    try:
        return max(0, int(raw))
    except ValueError:
        return 0


def answer(body: dict[str, Any], prompt_text: str, limit: Any, hints: Hints) -> Answer:
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
    prompt_tokens = tokens_for(prompt_text)
    cached = min(hints.cached, prompt_tokens)
    return Answer(
        pieces=pieces,
        prompt_tokens=prompt_tokens,
        truncated=count < natural,
        cached_tokens=cached,
        cache_creation_tokens=min(hints.cache_creation, prompt_tokens - cached),
        reasoning_tokens=hints.reasoning,
    )


def sse(data: Any, event: str | None = None) -> bytes:
    payload = b"data: " + dumps(data) + b"\n\n"
    if event is None:
        return payload
    return b"event: " + event.encode() + b"\n" + payload


# Stands in for the text of a stream event in `piece_events`; orjson escapes it as "\u0000".
PIECE = "\x00piece\x00"
_PIECE_JSON = orjson.dumps(PIECE)


def piece_events(template: Any, pieces: list[str], event: str | None = None) -> list[bytes]:
    """One SSE event per piece, serialising the shared part of the event only once.

    Streams are mostly identical events that differ in a few characters of text; splicing the
    JSON-encoded piece into a pre-serialised template makes a stream about 3x cheaper to build.
    """
    before, after = sse(template, event).split(_PIECE_JSON)
    return [before + orjson.dumps(p) + after for p in pieces]


def openai_error(status: int, message: str, code: str | None = None) -> Reply:
    error = {
        "message": message,
        "type": _OPENAI_ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error"),
        "param": None,
        "code": code if code is not None else _OPENAI_ERROR_CODES.get(status),
    }
    return Reply(status, body=dumps({"error": error}))


def anthropic_error(status: int, message: str) -> Reply:
    kind = _ANTHROPIC_ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return Reply(status, body=dumps({"type": "error", "error": {"type": kind, "message": message}}))
