"""Query parameters shared by the per-user analytics routes → `analytics.Scope`, and rendering.

Filters: `from`/`to` (default the current UTC month), `model`, `property.<name>=<value>`
(repeatable, names case-insensitive), `q` (user id substring, case-insensitive).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from urllib.parse import unquote

from fastapi import Request

from usagegate.analytics import Scope, with_quiet_tail
from usagegate.api.auth import context
from usagegate.api.params import ApiError, bad_param, ch_time, iso, money, time_range

# The anonymous user (requests with no user id) in paths: a NUL, which no real user id can contain.
ANONYMOUS_PATH = "%00"


def scope_of(request: Request, org: str) -> Scope:
    """The Scope named by the request's query string; raises ApiError 400 naming a bad parameter."""
    q = request.query_params
    span = time_range(q.get("from"), q.get("to"))
    properties = []
    for key, value in q.multi_items():
        if key.startswith("property."):
            name = key[len("property."):].strip().lower()
            if not name:
                raise bad_param(key, "Property filters look like property.<name>=<value>.")
            properties.append((name, value))
    model = q.get("model")
    if model is not None and not model:
        raise bad_param("model", "'model' must not be empty.")
    return Scope(org=org, start=span.start, end=span.end, model=model, properties=tuple(properties),
                 q=q.get("q") or None)


async def read_scope(request: Request, org: str) -> Scope:
    """`scope_of`, knowing what the store can tell about the range's quiet tail (same answers,
    fewer rollup rows read: analytics/quiet_tail.py)."""
    return await with_quiet_tail(context(request).store, scope_of(request, org))


def range_out(scope: Scope) -> dict[str, str | None]:
    return {"from": iso(ch_time(scope.start)), "to": iso(ch_time(scope.end))}


def user_from_path(request: Request, prefix: str = "/api/users/") -> tuple[str, str]:
    """(user id, rest) from the *raw* path, so an encoded '/' (%2F) stays part of the id.

    `rest` is "" for /api/users/{id} and "requests" for /api/users/{id}/requests.
    """
    raw = request.scope.get("raw_path") or request.url.path.encode()
    text = raw.decode("latin-1").split("?", 1)[0]
    if not text.startswith(prefix):
        raise ApiError(404, "Not found.")
    parts = text[len(prefix):].split("/")
    if len(parts) > 2 or (len(parts) == 2 and parts[1] != "requests"):
        raise ApiError(404, "Not found.")
    try:
        user_id = unquote(parts[0], errors="strict")
    except UnicodeDecodeError:
        raise bad_param("user_id", "The user id in the path is not valid percent-encoded UTF-8.") from None
    if user_id == "\x00":
        user_id = ""
    return user_id, parts[1] if len(parts) == 2 else ""


def user_path(user_id: str) -> str:
    """The path segment that names `user_id` (the inverse of `user_from_path`)."""
    from urllib.parse import quote

    return quote(user_id, safe="") if user_id else ANONYMOUS_PATH


def render(value: Any) -> Any:
    """Decimals → 9-place money strings, recursively (`margin_pct` is rendered by its producer)."""
    if isinstance(value, Decimal):
        return money(value)
    if isinstance(value, dict):
        return {k: (v if k == "margin_pct" and v is None else
                    format(v, "f") if k == "margin_pct" else render(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v) for v in value]
    return value


def render_user(row: dict[str, Any]) -> dict[str, Any]:
    out = render(row)
    out["first_seen"] = iso(row.get("first_seen"))
    out["last_seen"] = iso(row.get("last_seen"))
    return out  # type: ignore[no-any-return]
