"""Loopback between the gateway's processes: each listens on a Unix socket in the data dir.

Only process 0 (the store process, "the owner") has the store. The proxy workers send it, over
its socket:
- every non-proxy request (`/api/*`, the dashboard, `/docs`): relayed as is, streamed back, so
  analytics are the same whichever worker a client reaches;
- `GET /_worker/spent`: a user's spend in a period, which budgets need once per period.
And the owner reads each worker's `/_worker/metrics` to serve one `/metrics` for all of them.

`/_worker/*` routes answer only on the Unix socket (the socket file is private to the data dir's
owner), never on the TCP port.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson

from usagegate.errors import StoreUnavailable

Scope = dict[str, Any]

_HOP_BY_HOP = frozenset({b"host", b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade",
                         b"proxy-connection"})
_MAX_SUN_PATH = 100  # sockaddr_un holds 108 bytes on Linux
STORE_PROCESS = 0  # the index of the process that owns the store; proxy workers are 1..N


def socket_path(data_dir: Path, index: int) -> Path:
    path = data_dir.resolve() / "run" / f"w{index}.sock"
    if len(str(path)) <= _MAX_SUN_PATH:
        return path
    # A deep data dir: fall back to a short, per-data-dir directory under the temp dir.
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"usagegate-{digest}" / f"w{index}.sock"


def is_internal(scope: Scope) -> bool:
    """True for a request that came in on a worker's Unix socket (uvicorn reports no port there)."""
    server = scope.get("server")
    return server is not None and server[1] is None


class OwnerLink:
    """A worker's client for the owner's socket (and the owner's for the other workers')."""

    def __init__(self, data_dir: Path, *, owner: int = 0, me: int | None = None) -> None:
        self._data_dir = data_dir
        self._owner = owner
        # Relayed answers say which worker took the request (operators and tests can tell).
        self._via = [(b"x-usagegate-worker", str(me).encode())] if me is not None else []
        self._sessions: dict[int, aiohttp.ClientSession] = {}

    def _session(self, index: int) -> aiohttp.ClientSession:
        session = self._sessions.get(index)
        if session is None or session.closed:
            connector = aiohttp.UnixConnector(path=str(socket_path(self._data_dir, index)), limit=64)
            # No decompression: bodies are relayed byte for byte with their content-encoding.
            # No cookie jar: the relay carries every client's dashboard session cookie; a jar
            # would replay one client's sign-in on the next client's requests.
            session = aiohttp.ClientSession(connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
                                            timeout=aiohttp.ClientTimeout(total=None, connect=5, sock_read=300))
            self._sessions[index] = session
        return session

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()

    async def forward(self, scope: Scope, receive: Any, send: Any) -> None:
        """Relay one HTTP request to the owner and stream its answer back to the client."""
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        target = scope.get("raw_path") or scope["path"].encode()
        url = "http://owner" + target.decode("latin-1")
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"] if k not in _HOP_BY_HOP]
        try:
            async with self._session(self._owner).request(
                scope["method"], url, headers=headers, data=b"".join(chunks), allow_redirects=False
            ) as response:
                out = [(k, v) for k, v in response.raw_headers if k.lower() not in _HOP_BY_HOP] + self._via
                await send({"type": "http.response.start", "status": response.status, "headers": out})
                async for chunk in response.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except (aiohttp.ClientError, OSError) as exc:
            body = orjson.dumps({"error": {"status": 503, "param": None, "message":
                                 f"The worker that serves analytics is not reachable ({exc}); retry shortly."}})
            await send({"type": "http.response.start", "status": 503,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

    async def get(self, index: int, path: str, params: dict[str, str] | None = None) -> bytes:
        """GET an internal route on worker `index`; raises StoreUnavailable when it cannot answer."""
        url = f"http://w{index}{path}" + ("?" + urlencode(params) if params else "")
        try:
            async with self._session(index).get(url) as response:
                data = await response.read()
                if response.status != 200:
                    raise StoreUnavailable(f"worker {index} answered {response.status} on {path}")
                return data
        except (aiohttp.ClientError, OSError) as exc:
            raise StoreUnavailable(f"worker {index} is not reachable: {exc}") from exc

    async def wait_ready(self, timeout: float) -> bool:
        """Wait (bounded) until the store process answers /health; True when it does."""
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            try:
                await self.get(self._owner, "/health")
                return True
            except StoreUnavailable:
                await asyncio.sleep(0.05)
        return False

    async def spent(self, org_id: str, user_id: str, start: datetime, end: datetime) -> Decimal:
        data = await self.get(self._owner, "/_worker/spent", {
            "org": org_id, "user": user_id, "start": start.isoformat(), "end": end.isoformat(),
        })
        return Decimal(orjson.loads(data)["spent"])
