"""`GET /api/requests` and `GET /api/requests/{id}`: the request log, newest first."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request

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
    time_range,
)

router = APIRouter()

LIST_COLUMNS = (
    "request_id, org_id, created_at, user_id, provider, model, "
    "request_model, method, path, status, rate_limited, stream, prompt_tokens, completion_tokens, "
    "prompt_tokens + completion_tokens AS total_tokens, cache_read_tokens, cache_write_tokens, "
    "cache_write_1h_tokens, reasoning_tokens, cost_usd, usage_source, latency_ms, ttft_ms, properties, "
    "session_id, session_path, session_name, error"
)
SORTS = {
    "created_at": "created_at",
    "cost_usd": "ifNull(cost_usd, toDecimal128(-1, 9))",
    "latency_ms": "latency_ms",
    "prompt_tokens": "prompt_tokens",
    "completion_tokens": "completion_tokens",
    "total_tokens": "prompt_tokens + completion_tokens",
    "status": "status",
}


def render(row: dict[str, Any]) -> dict[str, Any]:
    row["created_at"] = iso(row["created_at"])
    row["cost_usd"] = money(row["cost_usd"])
    row["stream"] = bool(row["stream"])
    row["rate_limited"] = bool(row["rate_limited"])
    return row


def filters(request: Request, org: str) -> tuple[list[str], dict[str, Any]]:
    """WHERE clauses and params for the shared filters (time range, user, model, property, status)."""
    q = request.query_params
    span = time_range(q.get("from"), q.get("to"))
    where = ["org_id = {org:String}", "created_at >= {t_from:DateTime64(3)}", "created_at < {t_to:DateTime64(3)}"]
    params: dict[str, Any] = {"org": org, **span.params()}
    if "user_id" in q:
        where.append("user_id = {user_id:String}")
        params["user_id"] = q["user_id"]
    if "model" in q:
        where.append("model = {model:String}")
        params["model"] = q["model"]
    if "status" in q:
        try:
            params["status"] = int(q["status"])
        except ValueError:
            raise bad_param("status", "'status' must be an HTTP status code such as 200.") from None
        where.append("status = {status:UInt16}")
    for n, (key, value) in enumerate((k, v) for k, v in q.multi_items() if k.startswith("property.")):
        name = key[len("property."):].lower()
        if not name:
            raise bad_param(key, "Property filters look like property.<name>=<value>.")
        where.append(f"properties[{{pk{n}:String}}] = {{pv{n}:String}}")
        params[f"pk{n}"], params[f"pv{n}"] = name, value
    return where, params


async def list_requests(request: Request, org: str, *, user_id: str | None = None) -> dict[str, Any]:
    q = request.query_params
    where, params = filters(request, org)
    if user_id is not None:
        where.append("user_id = {path_user:String}")
        params["path_user"] = user_id
    sort = q.get("sort", "created_at")
    if sort not in SORTS:
        raise bad_param("sort", f"'sort' must be one of: {', '.join(SORTS)}.")
    order = parse_order(q.get("order"))
    limit = parse_limit(q.get("limit"))
    expr = SORTS[sort]
    if "cursor" in q:
        last_value, last_id = decode_cursor(q["cursor"], 2)
        op = "<" if order == "desc" else ">"
        where.append(f"({expr}, request_id) {op} ({{c_value:String}}, toUUID({{c_id:String}}))")
        params["c_value"], params["c_id"] = str(last_value), str(last_id)
    sql = (
        f"SELECT {LIST_COLUMNS}, toString({expr}) AS _sort FROM requests WHERE {' AND '.join(where)} "
        f"ORDER BY {expr} {order}, request_id {order} LIMIT {limit + 1}"
    )
    rows = await context(request).store.query(sql, params)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor([rows[-1]["_sort"], rows[-1]["request_id"]])
    for row in rows:
        del row["_sort"]
    return {"requests": [render(row) for row in rows], "next_cursor": next_cursor}


@router.get("/api/requests")
async def requests_list(request: Request, org: str = Depends(org_of)) -> dict[str, Any]:
    """Recorded requests, newest first; filters user_id, model, property.<name>, status."""
    return await list_requests(request, org)


@router.get("/api/requests/{request_id}")
async def request_detail(request_id: str, request: Request, org: str = Depends(org_of)) -> dict[str, Any]:
    """One recorded request with its stored bodies."""
    try:
        rid = str(uuid.UUID(request_id))
    except ValueError:
        raise ApiError(404, f"No request {request_id[:64]!r} in this organization.", "request_id") from None
    rows = await context(request).store.query(
        f"SELECT {LIST_COLUMNS}, request_body, response_body FROM requests "
        "WHERE org_id = {org:String} AND request_id = toUUID({rid:String}) LIMIT 1",
        {"org": org, "rid": rid},
    )
    if not rows:
        raise ApiError(404, f"No request {rid} in this organization.", "request_id")
    return render(rows[0])
