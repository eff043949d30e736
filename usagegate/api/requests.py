"""`GET /api/requests` and `GET /api/requests/{id}`: the request log, newest first."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
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
# sort name -> (expression, ClickHouse type of its cursor value)
SORTS = {
    "created_at": ("created_at", "DateTime64(3, 'UTC')"),
    "cost_usd": ("ifNull(cost_usd, toDecimal128(-1, 9))", "Decimal(38, 9)"),
    "latency_ms": ("latency_ms", "UInt64"),
    "prompt_tokens": ("prompt_tokens", "UInt64"),
    "completion_tokens": ("completion_tokens", "UInt64"),
    "total_tokens": ("prompt_tokens + completion_tokens", "UInt64"),
    "status": ("status", "UInt64"),
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
    expr, value_type = SORTS[sort]
    # Keyset pagination over (sort value, request_id), a total order, so no row is repeated or
    # skipped; and every page reads only rows ingested up to the first page's watermark, so rows
    # arriving meanwhile (with any sort value) neither join nor shift a listing in progress.
    base = " AND ".join(where)
    if "cursor" in q:
        c_sort, c_order, last_value, last_id, watermark = decode_cursor(q["cursor"], 5)
        if (c_sort, c_order) != (sort, order):
            raise bad_param("cursor", "This cursor belongs to another sort/order; pass the same 'sort' and 'order'.")
        op = "<" if order == "desc" else ">"
        where.append(f"({expr}, request_id) {op} ({{c_value:{value_type}}}, toUUID({{c_id:String}}))")
        where.append("ingested_at <= {c_w:DateTime64(6, 'UTC')}")
        params["c_value"], params["c_id"], params["c_w"] = _cursor_values(value_type, last_value, last_id, watermark)
        head = "SELECT {c_w:DateTime64(6, 'UTC')} AS _w, "
    else:
        head = f"WITH (SELECT max(ingested_at) FROM requests WHERE {base}) AS _w SELECT "
        where.append("ingested_at <= _w")
    sql = (
        f"{head}{LIST_COLUMNS}, toString({expr}) AS _sort, toString(_w) AS _wm FROM requests "
        f"WHERE {' AND '.join(where)} ORDER BY {expr} {order}, request_id {order} LIMIT {limit + 1}"
    )
    rows = await context(request).store.query(sql, params)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = encode_cursor([sort, order, last["_sort"], last["request_id"], last["_wm"]])
    for row in rows:
        del row["_sort"], row["_wm"]
    return {"requests": [render(row) for row in rows], "next_cursor": next_cursor}


def _cursor_values(value_type: str, value: Any, request_id: Any, watermark: Any) -> tuple[str, str, str]:
    """The cursor's parts, checked here so a tampered cursor is a 400, not a store error."""
    try:
        if value_type.startswith("DateTime"):
            datetime.fromisoformat(str(value))
        elif value_type.startswith("Decimal"):
            if not Decimal(str(value)).is_finite():
                raise ValueError
        elif int(str(value)) < 0:
            raise ValueError
        datetime.fromisoformat(str(watermark))
        return str(value), str(uuid.UUID(str(request_id))), str(watermark)
    except (ValueError, ArithmeticError):
        raise bad_param("cursor", "'cursor' is not a cursor this API returned.") from None


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
