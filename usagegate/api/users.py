"""`/api/users`: the users table, one user's detail, their requests, and erasure.

User ids travel percent-encoded in paths (any character, `/` as %2F); the anonymous user
(requests without a user id) is `/api/users/%00`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from usagegate import analytics
from usagegate.analytics import Page, Scope
from usagegate.api.auth import context, org_of
from usagegate.api.params import (
    ApiError,
    bad_param,
    decode_cursor,
    encode_cursor,
    iso,
    money,
    parse_limit,
    parse_order,
)
from usagegate.api.requests import list_requests
from usagegate.api.requests import render as render_request
from usagegate.api.scope import range_out, read_scope, render, render_user, scope_of, user_from_path
from usagegate.store import Store

router = APIRouter(tags=["users"])

ASCENDING_BY_DEFAULT = {"user_id", "top_model"}
MAX_SERIES_POINTS = 10_000
RECENT_REQUESTS = 20


def page_of(request: Request, sorts: dict[str, str], default_sort: str, default_order: str | None = None) -> Page:
    """sort/order/limit/cursor → Page; the cursor carries its sort so it cannot be misapplied."""
    q = request.query_params
    sort = q.get("sort", default_sort)
    if sort not in sorts:
        raise bad_param("sort", f"'sort' must be one of: {', '.join(sorts)}.")
    order = parse_order(q.get("order"), default_order or ("asc" if sort in ASCENDING_BY_DEFAULT else "desc"))
    after = None
    if "cursor" in q:
        c_sort, c_order, value, user_id = decode_cursor(q["cursor"], 4)
        if (c_sort, c_order) != (sort, order):
            raise bad_param("cursor", "'cursor' belongs to another sort or order; start again without it.")
        after = (str(value), str(user_id))
    return Page(sort=sort, order=order, limit=parse_limit(q.get("limit")), after=after)


def cursor_of(page: Page, after: tuple[str, str] | None) -> str | None:
    return encode_cursor([page.sort, page.order, *after]) if after else None


@router.get("/api/users")
async def users_list(
    request: Request,
    org: str = Depends(org_of),
    from_: str | None = Query(None, alias="from", description="Inclusive start, ISO 8601 (default: start of this UTC month)."),
    to: str | None = Query(None, description="Exclusive end, ISO 8601 (default: start of next month)."),
    sort: str = Query("cost_usd", description=f"One of: {', '.join(analytics.USER_SORTS)}."),
    order: str | None = Query(None, description="asc or desc (default desc; asc for user_id and top_model)."),
    limit: str | None = Query(None, description="Rows per page, 1-1000 (default 100)."),
    cursor: str | None = Query(None, description="next_cursor of the previous page."),
    model: str | None = Query(None, description="Only requests answered by this model."),
    q: str | None = Query(None, description="User id substring (case-insensitive)."),
) -> dict[str, Any]:
    """Per-user usage and cost for the range (filters also: `property.<name>=<value>`), with
    `totals` over every matching user and `count` of them. Pages never skip or repeat a user."""
    scope = await read_scope(request, org)
    page = page_of(request, analytics.USER_SORTS, "cost_usd")
    store = context(request).store
    rows, after, summary = await analytics.users_page(store, scope, page)
    return {
        **range_out(scope),
        "users": [render_user(row) for row in rows],
        "count": summary["count"],
        "totals": render(summary["totals"]),
        "next_cursor": cursor_of(page, after),
    }


@router.get("/api/users/{user_id}/requests")
async def user_requests_doc(request: Request, user_id: str, org: str = Depends(org_of)) -> dict[str, Any]:
    """One user's requests, newest first (the filters and paging of /api/requests)."""
    return await user_route(request, org)


@router.get("/api/users/{user_id:path}")
async def user_detail_route(
    request: Request,
    user_id: str,
    org: str = Depends(org_of),
    interval: str = Query("day", description="Series bucket: hour or day."),
    from_: str | None = Query(None, alias="from", description="Inclusive start, ISO 8601 (default: this UTC month)."),
    to: str | None = Query(None, description="Exclusive end, ISO 8601."),
) -> dict[str, Any]:
    """One user (percent-encoded id; the anonymous user is `%00`): the users-table row,
    an hourly or daily series, cost by model and by property, and the 20 newest requests (the
    columns a list shows; each whole record is at `/api/requests/{id}`)."""
    return await user_route(request, org)


async def user_route(request: Request, org: str) -> dict[str, Any]:
    user_id, rest = user_from_path(request)
    store = context(request).store
    if rest == "requests":
        if not await analytics.user_exists(store, org, user_id):
            raise _no_user(user_id)
        return await list_requests(request, org, user_id=user_id)
    return await user_detail(request, org, user_id)


def _no_user(user_id: str) -> ApiError:
    return ApiError(404, f"No user {user_id[:80]!r} in this organization.", "user_id")


async def user_detail(request: Request, org: str, user_id: str) -> dict[str, Any]:
    store = context(request).store
    try:
        interval = request.query_params.get("interval", "day")
        if interval not in ("hour", "day"):
            raise bad_param("interval", "'interval' must be 'hour' or 'day'.")
        scope = scope_of(request, org)
        step = timedelta(hours=1) if interval == "hour" else timedelta(days=1)
        if (scope.end - scope.start) / step > MAX_SERIES_POINTS:
            raise bad_param("interval", f"The range has more than {MAX_SERIES_POINTS} {interval}s; use a coarser interval.")
    except ApiError:
        if not await analytics.user_exists(store, org, user_id):
            raise _no_user(user_id) from None  # an unknown user is 404 whatever the parameters
        raise
    # Recent requests first: the longest of the route's store queries, so it takes a reader
    # before the detail's (the store has two); the detail says whether the user exists at all.
    recent, detail = await asyncio.gather(
        recent_of(store, org, user_id, scope),
        analytics.user_detail(store, replace(scope, user_id=user_id), interval),
    )
    if not detail.exists:
        raise _no_user(user_id)
    return {
        **range_out(scope),
        "user": render_user(detail.row),
        "interval": interval,
        "series": fill_series(detail.series, scope.start, scope.end, step),
        "cost_by_model": [{**m, "cost_usd": money(m["cost_usd"])} for m in detail.cost_by_model],
        "cost_by_property": [{**p, "cost_usd": money(p["cost_usd"])} for p in detail.cost_by_property],
        "recent_requests": [render_request(r) for r in recent],
    }


# The detail's recent requests: what a list of them shows. Each column read costs the raw read
# its files in every part holding the rows (the API's 27 columns: 16.6 ms wall / 32.5 ms CPU at
# 10M, these: 11.5 / 19.5, docs/analytics.md), so the user id (the path's) and the token total are
# filled in here: 14.3 -> 12.5 ms. The whole record is at /api/requests/{id}.
RECENT_COLUMNS = ("request_id, created_at, provider, model, status, rate_limited, stream, prompt_tokens, "
                  "completion_tokens, cost_usd, latency_ms, ttft_ms, error")
RECENT_FIELDS = ("request_id", "created_at", "user_id", "provider", "model", "status", "rate_limited", "stream",
                 "prompt_tokens", "completion_tokens", "total_tokens", "cost_usd", "latency_ms", "ttft_ms", "error")


async def recent_of(store: Store, org: str, user_id: str, scope: Scope) -> list[dict[str, Any]]:
    """The user's newest requests in the range (the detail's `recent_requests`), unrendered."""
    rows = await store.query(
        f"SELECT {RECENT_COLUMNS} FROM requests WHERE org_id = {{org:String}} AND user_id = {{user:String}} "
        "AND created_at >= {t_from:DateTime64(3)} AND created_at < {t_to:DateTime64(3)} "
        f"ORDER BY created_at DESC, request_id DESC LIMIT {RECENT_REQUESTS}",
        {"org": org, "user": user_id, "t_from": analytics.ch_time(scope.start), "t_to": analytics.ch_time(scope.end)},
    )
    for row in rows:
        row["user_id"], row["total_tokens"] = user_id, row["prompt_tokens"] + row["completion_tokens"]
    return [{name: row[name] for name in RECENT_FIELDS} for row in rows]


def fill_series(points: list[dict[str, Any]], start: datetime, end: datetime, step: timedelta) -> list[dict[str, Any]]:
    """Every bucket of the range, zeros where there was no traffic (charts want a full axis)."""
    by_time = {p["t"]: p for p in points}
    first = analytics.floor_time(start, step)
    out = []
    moment = first
    while moment < end:
        key = moment.strftime("%Y-%m-%d %H:%M:%S")
        p = by_time.get(key)
        out.append({
            "t": iso(key + ".000"),
            "requests": p["requests"] if p else 0,
            "total_tokens": p["total_tokens"] if p else 0,
            "cost_usd": money(p["cost_usd"] if p else 0),
            "errors": p["errors"] if p else 0,
            "rate_limited": p["rate_limited"] if p else 0,
        })
        moment += step
    return out


@router.delete("/api/users/{user_id:path}")
async def user_delete(request: Request, user_id: str, org: str = Depends(org_of)) -> dict[str, Any]:
    """Erase a user's records, bodies and rollups (privacy requests). Requests still in the spool
    are written first, so nothing of the user reappears afterwards."""
    uid, rest = user_from_path(request)
    if rest:
        raise ApiError(405, "Method not allowed.")
    ctx = context(request)
    await wait_for_writer(ctx, timeout=10.0)
    if not await analytics.user_exists(ctx.store, org, uid):
        raise _no_user(uid)
    removed = await analytics.delete_user(ctx.store, org, uid)
    return {"user_id": uid, "deleted_requests": removed}


async def wait_for_writer(ctx: Any, timeout: float) -> None:
    """Wait (bounded) until the batch writers have stored everything spooled so far."""
    deadline = time.monotonic() + timeout
    while (await asyncio.to_thread(ctx.writers.backlog))[0] > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
