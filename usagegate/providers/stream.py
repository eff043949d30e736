"""Relay an SSE stream unchanged while reading its usage.

`StreamTracker.feed` is on the hot path (once per upstream chunk). It splits the bytes into
SSE events (an event ends at a blank line; chunks cut events anywhere), and looks at each
complete event with a `bytes in` check first: only events that can carry usage are
json-parsed at once. Events that carry generated text are kept raw and parsed only if the
upstream never reports usage and we must estimate (`usage()`).

Output is the input, byte for byte, except that with `strip_usage_chunk` the OpenAI
usage-only chunk (`"choices":[]` with a usage object), which we asked for on the client's
behalf, is removed. Only in that mode is an incomplete trailing event held back.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from ..records import Usage
from ..tokenizer import count_tokens
from . import anthropic, openai
from ._json import loads_object
from .request import estimate_usage

# Two line terminators in a row (CRLF, lone CR or LF): the end of an event. Only used once a
# stream has shown a CR; LF-only streams use bytes.find(b"\n\n").
_CR_BOUNDARY = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r(?!\n)|\n)")
# An incomplete event this big cannot be the small usage-only chunk: forward it early.
_HOLD_LIMIT = 64 * 1024
# Raw text events kept for estimation are parsed down to text beyond this many bytes.
_PENDING_LIMIT = 1024 * 1024


def event_data(event: bytes) -> bytes:
    """The `data:` payload of one SSE event (multiple data lines joined by newlines)."""
    if event.startswith(b"data: ") and event.find(b"\n", 6, len(event) - 2) < 0 and b"\r" not in event:
        return event[6:]  # the common single-line event
    lines = []
    for line in event.splitlines():
        if line.startswith(b"data:"):
            lines.append(line[6:] if line[5:6] == b" " else line[5:])
    return b"\n".join(lines)


def parse_event(event: bytes) -> dict[str, Any] | None:
    data = event_data(event)
    return loads_object(data) if data else None


def _has_object(event: bytes, key: bytes) -> bool:
    """Whether `key` (e.g. b'"usage":') is followed by an object, not null."""
    at = event.find(key)
    while at >= 0:
        rest = event[at + len(key) : at + len(key) + 8].lstrip()
        if rest[:1] == b"{":
            return True
        at = event.find(key, at + 1)
    return False


class StreamTracker:
    """Tracks one streamed response; see the module docstring. Build with `stream_tracker`."""

    __slots__ = (
        "_strip", "_request", "_buf", "_scan", "_sent", "_cr",
        "_pending", "_pending_size", "_text", "_model",
    )

    def __init__(self, *, strip_usage_chunk: bool = False, request: dict[str, Any] | None = None) -> None:
        self._strip = strip_usage_chunk
        self._request = request
        self._buf = bytearray()  # the incomplete trailing event
        self._scan = 0  # _buf holds no event boundary before this offset
        self._sent = 0  # bytes of _buf already forwarded (strip mode, oversized event)
        self._cr = False
        self._pending: list[bytes] = []  # raw text events, parsed only to estimate
        self._pending_size = 0
        self._text: list[str] = []
        self._model: str | None = None

    # -- hot path -------------------------------------------------------------------------

    def feed(self, chunk: bytes) -> bytes:
        """Take the next upstream chunk; return the bytes to forward to the client now."""
        if not chunk:
            return b""
        if not self._cr and b"\r" in chunk:
            self._cr = True
        buffered = bool(self._buf)
        if buffered:
            self._buf += chunk
            buf: bytes | bytearray = self._buf
        else:
            buf = chunk
        strip = self._strip
        out: list[bytes | bytearray] = []
        dropped = False
        start = 0
        pos = self._scan
        while True:
            end = self._boundary(buf, pos)
            if end < 0:
                break
            event = bytes(buf[start:end]) if buffered else buf[start:end]
            drop = self._on_event(event)  # type: ignore[arg-type]
            if strip:
                if self._sent:
                    out.append(event[self._sent :])
                    self._sent = 0
                    dropped = True  # output differs from the input chunk
                elif drop:
                    dropped = True
                else:
                    out.append(event)
            start = pos = end
        rest = len(buf) - start
        if rest:
            if buffered:
                del self._buf[:start]
            else:
                self._buf = bytearray(memoryview(buf)[start:])
            self._scan = max(0, rest - 3)
            if strip and (self._sent or rest > _HOLD_LIMIT) and rest > self._sent:
                out.append(bytes(self._buf[self._sent :]))
                self._sent = rest
                dropped = True
        else:
            if buffered:
                self._buf = bytearray()
            self._scan = 0
        if not strip:
            return chunk
        if not buffered and not rest and not dropped:
            return chunk  # whole events, nothing removed: forward the chunk as is
        return b"".join(out)

    def _boundary(self, buf: bytes | bytearray, pos: int) -> int:
        """Offset just past the first event boundary at or after `pos`, or -1."""
        if not self._cr:
            at = buf.find(b"\n\n", pos)
            return at + 2 if at >= 0 else -1
        match = _CR_BOUNDARY.search(buf, pos)
        if match is None:
            return -1
        end = match.end()
        if end == len(buf) and buf[end - 1] == 0x0D:
            return -1  # a CR at the very end may be the first half of a CRLF
        return end

    def flush(self) -> bytes:
        """At stream end: the held-back bytes (an unterminated last event), also parsed."""
        if not self._buf:
            return b""
        rest = bytes(self._buf)
        self._buf = bytearray()
        self._scan = 0
        drop = self._on_event(rest)
        sent, self._sent = self._sent, 0
        if not self._strip:
            return b""  # already forwarded by feed()
        if sent:
            return rest[sent:]
        return b"" if drop else rest

    # -- per provider ---------------------------------------------------------------------

    def _on_event(self, event: bytes) -> bool:
        """Look at one complete event; True to remove it from the client's stream."""
        raise NotImplementedError

    def _provider_usage(self) -> Usage | None:
        """The complete usage the upstream reported, else None."""
        raise NotImplementedError

    def _partial_usage(self) -> Usage | None:
        """Input-side usage the upstream reported before the stream was cut, else None."""
        return None

    def _event_text(self, event: dict[str, Any]) -> Iterator[str]:
        raise NotImplementedError

    def _event_model(self, event: dict[str, Any]) -> str | None:
        raise NotImplementedError

    # -- usage ----------------------------------------------------------------------------

    def _keep_text_event(self, event: bytes) -> None:
        self._pending.append(event)
        self._pending_size += len(event)
        if self._pending_size > _PENDING_LIMIT:
            self._parse_pending()

    def _parse_pending(self) -> None:
        for raw in self._pending:
            event = parse_event(raw)
            if event is None:
                continue
            if self._model is None:
                self._model = self._event_model(event)
            self._text.extend(self._event_text(event))
        self._pending = []
        self._pending_size = 0

    @property
    def saw_usage(self) -> bool:
        """Whether the upstream reported the complete usage of this response."""
        return self._provider_usage() is not None

    def usage(self) -> Usage:
        """Usage seen so far: the provider's, or an offline estimate (`source="estimated"`)
        from the request's prompt and the text generated so far."""
        reported = self._provider_usage()
        if reported is not None:
            return reported
        self._parse_pending()
        text = "".join(self._text)
        partial = self._partial_usage()
        if partial is None:
            return estimate_usage(self._request, text, self._model)
        # The provider's input-side counts stand; only the output is estimated.
        request_model = self._request.get("model") if self._request else None
        partial.completion_tokens = max(partial.completion_tokens, count_tokens(text))
        partial.model = partial.model or self._model or (request_model if isinstance(request_model, str) else None)
        partial.source = "estimated"
        return partial


class OpenAIChatTracker(StreamTracker):
    """/v1/chat/completions and /v1/completions: usage in the last chunk, when asked for."""

    __slots__ = ("_usage",)

    def __init__(self, *, strip_usage_chunk: bool, request: dict[str, Any] | None) -> None:
        super().__init__(strip_usage_chunk=strip_usage_chunk, request=request)
        self._usage: Usage | None = None

    def _on_event(self, event: bytes) -> bool:
        if b'"usage":' in event and _has_object(event, b'"usage":'):
            obj = parse_event(event) or {}
            usage = obj.get("usage")
            if isinstance(usage, dict):
                self._usage = openai.normalise(usage, openai.chat_event_model(obj))
                self._pending = []
                self._pending_size = 0
                return self._strip and obj.get("choices") == []
        if self._usage is None and b"data:" in event:
            self._keep_text_event(event)
        return False

    def _provider_usage(self) -> Usage | None:
        if self._usage is None:
            return None
        return _copy(self._usage)

    def _event_text(self, event: dict[str, Any]) -> Iterator[str]:
        return openai.chat_event_text(event)

    def _event_model(self, event: dict[str, Any]) -> str | None:
        return openai.chat_event_model(event)


class OpenAIResponsesTracker(StreamTracker):
    """/v1/responses: usage in `response.completed` (or `.incomplete` / `.failed`)."""

    __slots__ = ("_usage", "_first")

    def __init__(self, *, strip_usage_chunk: bool, request: dict[str, Any] | None) -> None:
        # The Responses API has no usage chunk to strip.
        super().__init__(strip_usage_chunk=False, request=request)
        self._usage: Usage | None = None
        self._first: bytes | None = None  # response.created, parsed only for the model

    def _on_event(self, event: bytes) -> bool:
        if (
            b"response.completed" in event
            or b"response.incomplete" in event
            or b"response.failed" in event
        ):
            obj = parse_event(event)
            if obj is not None and obj.get("type") in openai.RESPONSE_FINAL_EVENTS:
                response = obj.get("response")
                usage = response.get("usage") if isinstance(response, dict) else None
                if isinstance(usage, dict):
                    self._usage = openai.normalise(usage, openai.responses_event_model(obj))
                    self._pending = []
                    self._pending_size = 0
                return False
        if self._usage is None:
            if b'.delta"' in event:
                self._keep_text_event(event)
            elif self._first is None and b"response.created" in event:
                self._first = event
        return False

    def _provider_usage(self) -> Usage | None:
        if self._usage is None:
            return None
        return _copy(self._usage)

    def _parse_pending(self) -> None:
        if self._model is None and self._first is not None:
            first = parse_event(self._first)
            self._model = openai.responses_event_model(first) if first else None
        super()._parse_pending()

    def _event_text(self, event: dict[str, Any]) -> Iterator[str]:
        return openai.responses_event_text(event)

    def _event_model(self, event: dict[str, Any]) -> str | None:
        return None


class AnthropicTracker(StreamTracker):
    """/v1/messages: input and cache counts in `message_start`, cumulative output in the
    last `message_delta`."""

    __slots__ = ("_start", "_delta")

    def __init__(self, *, strip_usage_chunk: bool, request: dict[str, Any] | None) -> None:
        super().__init__(strip_usage_chunk=False, request=request)
        self._start: dict[str, Any] | None = None
        self._delta: dict[str, Any] | None = None

    def _on_event(self, event: bytes) -> bool:
        if b'"message_' in event:  # message_start / message_delta / message_stop
            obj = parse_event(event)
            if obj is None:
                return False
            kind = obj.get("type")
            if kind == "message_start":
                message = obj.get("message")
                if isinstance(message, dict):
                    model = message.get("model")
                    if isinstance(model, str):
                        self._model = model
                    usage = message.get("usage")
                    if isinstance(usage, dict):
                        self._start = usage
            elif kind == "message_delta":
                usage = obj.get("usage")
                if isinstance(usage, dict):
                    self._delta = usage
                    self._pending = []
                    self._pending_size = 0
            elif self._delta is None:
                self._text.extend(anthropic.event_text(obj))
        elif self._delta is None and b"content_block_delta" in event:
            self._keep_text_event(event)
        return False

    def _provider_usage(self) -> Usage | None:
        if self._delta is None or (self._start is None and "input_tokens" not in self._delta):
            return None
        return anthropic.normalise(anthropic.merge_stream_usage(self._start, self._delta), self._model)

    def _partial_usage(self) -> Usage | None:
        if self._start is None and self._delta is None:
            return None
        return anthropic.normalise(anthropic.merge_stream_usage(self._start, self._delta), self._model)

    def _event_text(self, event: dict[str, Any]) -> Iterator[str]:
        return anthropic.event_text(event)

    def _event_model(self, event: dict[str, Any]) -> str | None:
        return None


def _copy(usage: Usage) -> Usage:
    return Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        cache_write_1h_tokens=usage.cache_write_1h_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        model=usage.model,
        source=usage.source,
    )


def stream_tracker(
    provider: str, path: str, *, strip_usage_chunk: bool, request: dict[str, Any] | None
) -> StreamTracker:
    """A tracker for one streamed response. `provider` "anthropic" reads Messages events;
    anything else is treated as OpenAI-compatible (Responses events when `path` ends with
    `/responses`, chat/completions chunks otherwise). `request` is the parsed request body,
    used only to estimate the prompt when the upstream reports no usage."""
    if provider == "anthropic":
        return AnthropicTracker(strip_usage_chunk=strip_usage_chunk, request=request)
    if path.rstrip("/").endswith("/responses"):
        return OpenAIResponsesTracker(strip_usage_chunk=strip_usage_chunk, request=request)
    return OpenAIChatTracker(strip_usage_chunk=strip_usage_chunk, request=request)
