"""`/_worker/*`: what the workers of one `--workers` gateway ask each other over their Unix sockets.

Served by every process on its socket only (`owner_link.is_internal`): `spent` (the store
process only: a user's spend in a period, for budgets), `metrics` (a proxy worker's own
counters, which the store process merges into the one `/metrics`) and `refresh` (a proxy worker
re-reads keys, limits and prices now: the API changed them, and its answer must be true at once).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs

import orjson

from usagegate.errors import UsagegateError

SpentLoader = Callable[[str, str, datetime, datetime], Awaitable[Decimal]]
Renderer = Callable[[], Awaitable[bytes]]
Refresher = Callable[[], None]


async def handle(scope: dict[str, Any], send: Any, *, spent: SpentLoader | None, metrics: Renderer | None,
                 refresh: Refresher | None = None) -> None:
    path = scope["path"]
    query = {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
    try:
        if path == "/_worker/spent" and spent is not None:
            amount = await spent(query["org"], query["user"], datetime.fromisoformat(query["start"]),
                                 datetime.fromisoformat(query["end"]))
            await _reply(send, 200, orjson.dumps({"spent": str(amount)}), b"application/json")
        elif path == "/_worker/metrics" and metrics is not None:
            await _reply(send, 200, await metrics(), b"text/plain; version=0.0.4")
        elif path == "/_worker/refresh" and refresh is not None:
            refresh()
            await _reply(send, 200, b'{"refreshed": true}', b"application/json")
        else:
            await _reply(send, 404, b'{"error": "no such internal route"}', b"application/json")
    except UsagegateError as error:
        await _reply(send, error.status, orjson.dumps({"error": error.message}), b"application/json")
    except (KeyError, ValueError) as exc:
        await _reply(send, 400, orjson.dumps({"error": f"bad internal request: {exc}"}), b"application/json")


async def _reply(send: Any, status: int, body: bytes, content_type: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
