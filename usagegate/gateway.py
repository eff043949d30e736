"""The proxy: forward to the provider, relay the answer as it arrives, log who it was for.

Raw ASGI on purpose: this is the hot path (DESIGN §7), so no framework routing, no pydantic,
one pooled aiohttp session, and no store I/O — a finished record goes to the spool.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from usagegate import providers
from usagegate.config_db import KeyRing
from usagegate.disconnect_watch import WATCH_AFTER_S, DisconnectWatch
from usagegate.errors import (
    BadRequest,
    ClientClosed,
    PayloadTooLarge,
    RateLimited,
    StoreUnavailable,
    Unauthorized,
    UpstreamError,
    UpstreamTimeout,
    UsagegateError,
    provider_error_body,
)
from usagegate.identity import (
    Identity,
    RequestIds,
    clean_user_id,
    parse_helicone_headers,
)
from usagegate.limits import Guard, Ticket
from usagegate.logpipe import Spool
from usagegate.metrics import Histogram
from usagegate.netguard import AddressGuard, literal_or_localhost, normalise_base
from usagegate.records import Usage
from usagegate.settings import Settings

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

# Never forwarded in either direction: hop-by-hop, or recomputed by the HTTP client/server.
_HOP_BY_HOP = frozenset(
    {b"host", b"content-length", b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer",
     b"upgrade", b"proxy-authorization", b"proxy-connection"}
)
_RESPONSE_DROP = frozenset(
    {"content-length", "connection", "keep-alive", "transfer-encoding", "content-encoding", "trailer", "upgrade"}
)
STORED_BODY_LIMIT = 256 * 1024
BUDGET_HEADER = b"x-usagegate-budget-remaining"
NINE_PLACES = Decimal("0.000000001")
CLIENT_CLOSED = 499


@dataclass(frozen=True, slots=True)
class Route:
    provider: str
    base_url: str
    path: str  # upstream path, e.g. /v1/chat/completions


def is_proxy_path(path: str) -> bool:
    return path.startswith(("/v1/", "/openai/v1/", "/anthropic/v1/"))


class Gateway:
    """ASGI app for the proxy routes; `app.py` sends every proxy path (or Target-URL) here."""

    def __init__(self, settings: Settings, keyring: KeyRing, spool: Spool, guard: Guard | None = None) -> None:
        self.settings = settings
        self.guard = guard
        self.keyring = keyring
        self.spool = spool
        self._new_id = RequestIds()
        self._session: aiohttp.ClientSession | None = None
        self._allowed = {normalise_base(url) for url in settings.allowed_targets}
        self._addresses = AddressGuard()
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=min(settings.upstream_timeout, 30.0), sock_read=settings.upstream_timeout
        )
        self.requests_total = 0
        self.errors_total = 0
        self.added_latency = Histogram()  # seconds added to the upstream's time (/metrics)

    async def startup(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=30)
        # No cookie jar: one session serves every client, so a cookie an upstream (or the CDN in
        # front of it) sets for one client must never ride along on another client's request.
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=True, timeout=self._timeout,
                                              cookie_jar=aiohttp.DummyCookieJar())

    async def shutdown(self) -> None:
        if self._session is not None:
            await self._session.close()

    # -- routing ---------------------------------------------------------------------------------

    async def route(self, path: str, ident: Identity) -> Route:
        if ident.target_url is not None:
            try:
                base = normalise_base(ident.target_url)
            except ValueError:
                base = ""
            if base not in self._allowed:
                raise BadRequest(
                    "Helicone-Target-URL is not on this gateway's allow-list (--allow-target).",
                    param="Helicone-Target-URL",
                )
            # An allowed name may still resolve somewhere internal (DNS rebinding, metadata IPs);
            # private addresses pass only when the operator listed them literally.
            await self._addresses.check(
                base, allow_private=literal_or_localhost(urlsplit(base).hostname or ""), param="Helicone-Target-URL"
            )
            provider = "anthropic" if path.endswith("/messages") else "openai"
            return Route(provider, base, path)
        if path.startswith("/anthropic/"):
            return Route("anthropic", self.settings.anthropic_base_url, path[len("/anthropic"):])
        if path.startswith("/openai/"):
            return Route("openai", self.settings.openai_base_url, path[len("/openai"):])
        return Route("openai", self.settings.openai_base_url, path)

    # -- the request -----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.time()
        clock = time.perf_counter()
        self.requests_total += 1
        provider = "anthropic" if scope["path"].startswith("/anthropic/") else "openai"
        request_id = ""
        ident: Identity | None = None
        org_id: str | None = None
        try:
            ident = parse_helicone_headers(scope["headers"])
            request_id = ident.request_id or self._new_id()
            org_id = self.keyring.org_for(ident.auth) if ident.auth else None
            if org_id is None:
                raise Unauthorized(
                    "Missing or invalid usagegate key: send 'Helicone-Auth: Bearer <key>' "
                    "(create one with 'usagegate keys create --org NAME')."
                )
            route = await self.route(scope["path"], ident)
            provider = route.provider
            if not self.spool.healthy:
                # Fail closed: a request we could not record would be cost nobody can bill.
                raise StoreUnavailable("usagegate cannot write its request log; refusing to forward unrecorded traffic.")
            body = await self._read_body(receive)
        except UsagegateError as error:
            request_id = request_id or self._new_id()
            self._log_refusal(scope, provider, error, request_id, org_id, ident, started)
            await self._send_error(send, provider, error, request_id)
            return
        await self._forward(scope, receive, send, route, ident, org_id, request_id, body, started, clock)

    async def _read_body(self, receive: Receive) -> bytes:
        limit = self.settings.max_body_bytes
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientClosed("The client disconnected before sending the whole body.")
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(
                        f"Request body is over the gateway's limit of {self.settings.max_body_mb:g} MB (--max-body-mb)."
                    )
                chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _forward(
        self, scope: Scope, receive: Receive, send: Send, route: Route, ident: Identity, org_id: str,
        request_id: str, body: bytes, started: float, clock: float,
    ) -> None:
        facts = providers.request_facts(route.provider, route.path, body)
        user_id = ident.user_id
        if user_id is None and facts.user:
            try:
                user_id = clean_user_id(facts.user, "body user")
            except BadRequest as error:
                self._log_refusal(scope, route.provider, error, request_id, org_id, ident, started)
                await self._send_error(send, route.provider, error, request_id)
                return
        strip_usage = False
        send_body = body
        if facts.stream and facts.parsed is not None:
            injected = providers.prepare_stream_request(route.provider, route.path, facts.parsed)
            if injected is not None:
                send_body, strip_usage = injected, True

        record: dict[str, Any] = {
            "request_id": request_id,
            "org_id": org_id,
            "created_at": int(started * 1000),
            "user_id": user_id or "",
            "provider": route.provider,
            "model": facts.model or "",
            "request_model": facts.model or "",
            "method": scope["method"],
            "path": route.path,
            "status": 0,
            "rate_limited": False,
            "stream": False,
            "usage_source": "provider",
            "ttft_ms": None,
            "properties": ident.properties,
            "session_id": ident.session_id,
            "session_path": ident.session_path,
            "session_name": ident.session_name,
            "error": "",
            "request_body": "" if ident.omit_request or not self.settings.store_bodies else _stored_text(body),
            "response_body": "",
        }
        ticket: Ticket | None = None
        if self.guard is not None:
            try:
                ticket = await self.guard.admit(
                    org_id, record["user_id"], ident.properties, route.provider, facts.model, len(body),
                    facts.max_tokens, ident.rate_limit_policy,
                )
            except RateLimited as error:
                record["rate_limited"] = True
                await self._fail(send, record, error, clock)
                return
            except UsagegateError as error:
                self._log_refusal(scope, route.provider, error, request_id, org_id, ident, started)
                await self._send_error(send, route.provider, error, request_id)
                return
        url = route.base_url + route.path
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]
                   if k not in _HOP_BY_HOP and not k.startswith(b"helicone-")]
        assert self._session is not None
        # A client that hangs up while the upstream thinks (before its headers, or mid-stream)
        # cancels this task, and with it the upstream request: the provider stops work it would bill.
        watch = DisconnectWatch(receive, WATCH_AFTER_S)
        try:
            pre = time.perf_counter() - clock
            try:
                response = await self._session.request(
                    scope["method"], url, headers=headers, data=send_body, allow_redirects=False
                )
                answered = time.perf_counter()
            except asyncio.CancelledError:
                watch.stop()
                if not watch.fired:
                    raise  # someone else's cancellation (shutdown): not ours to swallow
                watch.task.uncancel()  # type: ignore[union-attr]
                # The provider received the prompt and read it; what it generated is unknown.
                await self._fail(send, record, ClientClosed("The client disconnected before the upstream answered."),
                                 clock, ticket, providers.estimate_usage(facts.parsed))
                return
            except asyncio.TimeoutError:
                watch.stop()
                await self._fail(send, record, UpstreamTimeout(
                    f"The upstream did not answer within {self.settings.upstream_timeout:g} s (--upstream-timeout)."
                ), clock, ticket)
                return
            except (aiohttp.ClientError, OSError) as exc:
                watch.stop()
                await self._fail(send, record, UpstreamError(f"The upstream at {route.base_url} is unreachable: {exc}"), clock, ticket)
                return
            async with response:
                record["status"] = response.status
                out_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()
                               if k.lower() not in _RESPONSE_DROP]
                out_headers.append((b"helicone-id", request_id.encode()))
                if ticket is not None:
                    out_headers += ticket.headers
                if response.content_type == "text/event-stream":
                    if ticket is not None and ticket.remaining is not None:
                        out_headers.append((BUDGET_HEADER, _usd(ticket.remaining)))
                    self.added_latency.observe(pre + time.perf_counter() - answered)
                    await self._relay_stream(watch, send, response, out_headers, record, route, facts, strip_usage, ident, clock, ticket)
                else:
                    # A non-streamed answer is generated before its headers come: read it whole.
                    watch.stop()
                    await self._relay_body(send, response, out_headers, record, route, facts, ident, clock, ticket, pre)
        finally:
            watch.stop()
            # Whatever happened above (a bug, a cancelled task), never leave budget reserved.
            if ticket is not None and not ticket.settled and self.guard is not None:
                self.guard.settle(ticket, record)

    async def _relay_body(
        self, send: Send, response: aiohttp.ClientResponse, headers: list[tuple[bytes, bytes]],
        record: dict[str, Any], route: Route, facts: providers.RequestFacts, ident: Identity, clock: float,
        ticket: Ticket | None, pre: float = 0.0,
    ) -> None:
        # response.read()'s own loop, but keeping the blocks: a body cut mid-way still tells what
        # arrived (the generated text) and may hold the usage.
        content = response.content
        blocks: list[bytes] = []
        try:
            while block := await content.readany():
                blocks.append(block)
        except (asyncio.TimeoutError, aiohttp.ClientError, OSError) as exc:
            error: UsagegateError = (
                UpstreamTimeout("The upstream stopped sending its answer (--upstream-timeout).")
                if isinstance(exc, asyncio.TimeoutError) else UpstreamError(f"The upstream broke off its answer: {exc}")
            )
            usage = None
            if response.status < 400:
                # The answer was generated (and is billed) before it was sent: record what arrived.
                partial = b"".join(blocks)
                usage = providers.usage_from_cut_body(route.provider, route.path, partial, facts.parsed)
                record["billed"] = True
                if self.settings.store_bodies and not ident.omit_response:
                    record["response_body"] = _stored_text(partial)
            await self._fail(send, record, error, clock, ticket, usage)
            return
        payload = blocks[0] if len(blocks) == 1 else b"".join(blocks)
        received = time.perf_counter()
        usage = providers.usage_from_json(route.provider, route.path, payload)
        _apply_usage(record, usage)
        if response.status >= 400:
            record["error"] = _stored_text(payload)[:2000]
        if self.settings.store_bodies and not ident.omit_response:
            record["response_body"] = _stored_text(payload)
        record["latency_ms"] = int((time.perf_counter() - clock) * 1000)
        self._log(record)
        if ticket is not None:
            remaining = self.guard.settle(ticket, record)  # type: ignore[union-attr]
            if remaining is not None and response.status < 400:
                headers.append((BUDGET_HEADER, _usd(remaining)))
        headers.append((b"content-length", str(len(payload)).encode()))
        try:
            await send({"type": "http.response.start", "status": response.status, "headers": headers})
            await send({"type": "http.response.body", "body": payload})
        except OSError:
            pass  # the client left after we logged; nothing more to do
        self.added_latency.observe(pre + time.perf_counter() - received)

    async def _relay_stream(
        self, watch: DisconnectWatch, send: Send, response: aiohttp.ClientResponse, headers: list[tuple[bytes, bytes]],
        record: dict[str, Any], route: Route, facts: providers.RequestFacts, strip_usage: bool,
        ident: Identity, clock: float, ticket: Ticket | None,
    ) -> None:
        record["stream"] = True
        tracker = providers.stream_tracker(route.provider, route.path, strip_usage_chunk=strip_usage, request=facts.parsed)
        keep_body = self.settings.store_bodies and not ident.omit_response
        stored: list[bytes] = []
        stored_size = 0
        client_gone = False
        # The watch cancels the relay at once when the client leaves, even while the upstream is
        # silent (a model thinking), which closes the upstream stream and stops its bill.
        watch.start()
        try:
            await send({"type": "http.response.start", "status": response.status, "headers": headers})
            async for chunk in response.content.iter_any():
                if record["ttft_ms"] is None:
                    record["ttft_ms"] = int((time.perf_counter() - clock) * 1000)
                if keep_body and stored_size < STORED_BODY_LIMIT:
                    stored.append(chunk)
                    stored_size += len(chunk)
                out = tracker.feed(chunk)
                if out:
                    await send({"type": "http.response.body", "body": out, "more_body": True})
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            # The provider bills what it streamed before the cut: keep those tokens, priced.
            record["billed"] = response.status < 400
            record["status"] = 502 if not isinstance(exc, asyncio.TimeoutError) else 504
            record["error"] = f"upstream stream broke off: {exc}"[:2000]
        except OSError:
            client_gone = True
        except asyncio.CancelledError:
            if not watch.fired:
                raise  # someone else's cancellation (shutdown): not ours to swallow
            watch.task.uncancel()  # type: ignore[union-attr]
            client_gone = True
        finally:
            watch.stop()
        tail = tracker.flush()
        usage = tracker.usage()
        if client_gone:
            record["status"] = CLIENT_CLOSED
            record["error"] = "client disconnected mid-stream"
        _apply_usage(record, usage)
        if keep_body:
            record["response_body"] = _stored_text(b"".join(stored))
        record["latency_ms"] = int((time.perf_counter() - clock) * 1000)
        self._log(record)
        if ticket is not None:
            self.guard.settle(ticket, record)  # type: ignore[union-attr]
        if client_gone:
            return
        try:
            await send({"type": "http.response.body", "body": tail, "more_body": False})
        except OSError:
            pass

    async def _fail(
        self, send: Send, record: dict[str, Any], error: UsagegateError, clock: float, ticket: Ticket | None = None,
        usage: Usage | None = None,
    ) -> None:
        """Record the request as failed with `error` (and `usage`, when the provider did some
        work before the failure), settle its budget, answer with the error."""
        record["status"] = error.status
        record["error"] = error.message
        record["latency_ms"] = int((time.perf_counter() - clock) * 1000)
        _apply_usage(record, usage)
        self._log(record)
        if ticket is not None and self.guard is not None:
            self.guard.settle(ticket, record)
        await self._send_error(send, record["provider"], error, record["request_id"])

    def _log_refusal(
        self, scope: Scope, provider: str, error: UsagegateError, request_id: str, org_id: str | None,
        ident: Identity | None, started: float,
    ) -> None:
        """Record a request the gateway answered itself (400, 413, 499) when we know its org.

        Not recorded: 401 (no org to file it under) and 503 for an unwritable spool (nowhere to
        write it). A bad Helicone header stops parsing before the key is read, so look it up here.
        """
        if isinstance(error, StoreUnavailable):
            return
        if org_id is None:
            auth = next((v for k, v in scope["headers"] if k == b"helicone-auth"), None)
            if auth is None:
                return
            token = auth.decode("latin-1").strip()
            org_id = self.keyring.org_for(token[7:].strip() if token[:7].lower() == "bearer " else token)
            if org_id is None:
                return
        record: dict[str, Any] = {
            "request_id": request_id,
            "org_id": org_id,
            "created_at": int(started * 1000),
            "user_id": (ident.user_id or "") if ident is not None else "",
            "provider": provider,
            "model": "",
            "request_model": "",
            "method": scope["method"],
            "path": _upstream_path(scope["path"]),
            "status": error.status,
            "properties": ident.properties if ident is not None else {},
            "error": error.message[:2000],
            "latency_ms": int((time.time() - started) * 1000),
        }
        self._log(record)

    def _log(self, record: dict[str, Any]) -> None:
        if record["status"] >= 400:
            self.errors_total += 1
        self.spool.append(record)

    async def _send_error(self, send: Send, provider: str, error: UsagegateError, request_id: str) -> None:
        body = provider_error_body(provider, error)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"helicone-id", request_id.encode()),
            *error.headers,
        ]
        try:
            await send({"type": "http.response.start", "status": error.status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        except OSError:
            pass


def _apply_usage(record: dict[str, Any], usage: Usage | None) -> None:
    if usage is None:
        usage = Usage()
    record["prompt_tokens"] = usage.prompt_tokens
    record["completion_tokens"] = usage.completion_tokens
    record["cache_read_tokens"] = usage.cache_read_tokens
    record["cache_write_tokens"] = usage.cache_write_tokens
    record["cache_write_1h_tokens"] = usage.cache_write_1h_tokens
    record["reasoning_tokens"] = usage.reasoning_tokens
    record["usage_source"] = usage.source
    if usage.model:
        record["model"] = usage.model


def _usd(amount: Decimal) -> bytes:
    return format(amount.quantize(NINE_PLACES), "f").encode()


def _upstream_path(path: str) -> str:
    for prefix in ("/anthropic/", "/openai/"):
        if path.startswith(prefix):
            return path[len(prefix) - 1:]
    return path


def _stored_text(body: bytes) -> str:
    if len(body) > STORED_BODY_LIMIT:
        return body[:STORED_BODY_LIMIT].decode("utf-8", "replace") + f"\n[... truncated, {len(body)} bytes in all]"
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return f"[binary body, {len(body)} bytes]"
