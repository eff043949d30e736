"""The mock's router and state (`MockUpstream`), its HTTP/1.1 protocol on raw asyncio + httptools,
and the entry points (`serve`, `main`)."""

from __future__ import annotations

import argparse
import asyncio
import functools
import http
import signal
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, cast

import httptools
import orjson

from usagegate.mock.answers import (
    CACHE_MAX_BYTES,
    CACHE_SIZE,
    NO_HINTS,
    REQUEST_LOG_SIZE,
    BadRequest,
    Hints,
    Reply,
    Request,
    anthropic_error,
    dumps,
    int_value,
    openai_error,
)
from usagegate.mock.anthropic import anthropic_messages
from usagegate.mock.openai import (
    openai_chat,
    openai_completions,
    openai_embeddings,
    openai_models,
    openai_responses,
)

# --------------------------------------------------------------------------- router and state

_Handler = Callable[[dict[str, Any], Hints], Reply]
_ROUTES: dict[tuple[str, str], _Handler] = {
    ("POST", "/v1/chat/completions"): openai_chat,
    ("POST", "/v1/completions"): openai_completions,
    ("POST", "/v1/embeddings"): openai_embeddings,
    ("POST", "/v1/responses"): openai_responses,
    ("POST", "/v1/messages"): anthropic_messages,
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
        error = anthropic_error if anthropic else openai_error
        forced = req.mock.get("status", 0)
        if forced:
            reply = error(forced, f"Mock error {forced} requested by X-Mock-Status")
            if forced == 429:
                reply.headers = ((b"retry-after", b"1"),)
            return reply
        if req.method == "GET" and req.path == "/v1/models":
            return openai_models()
        handler = _ROUTES.get((req.method, req.path))
        if handler is None:
            return openai_error(404, f"Invalid URL ({req.method} {req.path})")
        m = req.mock
        key = (req.path, req.body, m.get("cached-tokens"), m.get("cache-creation-tokens"), m.get("reasoning-tokens"))
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        reply = self._generate(req, handler, error)
        if reply.stamped and len(reply.body) + len(reply.wire or b"") <= CACHE_MAX_BYTES:
            if len(self._cache) >= CACHE_SIZE:
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
        hints = NO_HINTS if not m else Hints(
            cached=m.get("cached-tokens", 0),
            cache_creation=m.get("cache-creation-tokens", 0),
            reasoning=m.get("reasoning-tokens", 0),
        )
        try:
            reply = handler(body, hints)
        except BadRequest as e:
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
            return Reply(200, body=dumps(log))
        if method == "DELETE":
            self.requests.clear()
            return Reply(200, body=b'{"cleared":true}')
        return openai_error(404, f"Invalid URL ({method} {_MOCK_PATH})")

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
                reply = openai_error(400, "Malformed HTTP request")
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
            self._mock_headers[name[7:].decode("latin-1").lower()] = int_value(value)

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
    parser = argparse.ArgumentParser(prog="python -m usagegate.mock_upstream", description="A fast, deterministic OpenAI + Anthropic compatible upstream for tests, the demo and the bench.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100, help="0 picks a free port (printed on start)")
    args = parser.parse_args(argv)
    serve(args.host, args.port)


if __name__ == "__main__":
    main(sys.argv[1:])
