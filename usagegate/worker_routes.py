"""`/_worker/*`: what the workers of one `--workers` gateway ask each other over their Unix sockets.

Served by every worker on its socket only (`owner_link.is_internal`): `spent` (owner only: a
user's spend in a period, for budgets) and `metrics` (this process's own counters, which the
owner merges into the one `/metrics`).
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


async def handle(scope: dict[str, Any], send: Any, *, spent: SpentLoader | None, metrics: Renderer | None) -> None:
    path = scope["path"]
    query = {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
    try:
        if path == "/_worker/spent" and spent is not None:
            amount = await spent(query["org"], query["user"], datetime.fromisoformat(query["start"]),
                                 datetime.fromisoformat(query["end"]))
            await _reply(send, 200, orjson.dumps({"spent": str(amount)}), b"application/json")
        elif path == "/_worker/metrics" and metrics is not None:
            await _reply(send, 200, await metrics(), b"text/plain; version=0.0.4")
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
