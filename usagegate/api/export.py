"""`GET /api/export?format=csv|parquet`: per-user billing rows for a range, exact decimals."""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from usagegate import analytics
from usagegate.api.auth import context, org_of
from usagegate.api.params import bad_param, iso, money
from usagegate.api.plans import plans_of
from usagegate.api.scope import read_scope

router = APIRouter(tags=["users"])

COLUMNS = ("user_id", "plan", "requests", "prompt_tokens", "completion_tokens", "total_tokens", "cost_usd",
           "unpriced_requests", "revenue_usd", "margin_usd", "first_seen", "last_seen", "period_from", "period_to")
MONEY_COLUMNS = {"cost_usd", "revenue_usd", "margin_usd"}
ARROW_MONEY = pa.decimal128(38, 9)


async def billing_rows(request: Request, org: str) -> tuple[list[dict[str, Any]], Any]:
    scope = await read_scope(request, org)
    store = context(request).store
    usage = await analytics.all_users(store, scope, (
        "user_id", "requests", "prompt_tokens", "completion_tokens", "total_tokens", "toString(cost_usd) AS _cost",
        "unpriced_requests", "toString(first_seen) AS _first", "toString(last_seen) AS _last"))
    prop, monthly = plans_of(request, org)
    revenue = {name: analytics.prorated(price, scope.start, scope.end) for name, price in monthly.items()}
    margins, _ = await analytics.profitability(store, scope, prop, revenue,
                                               analytics.Page(sort="user_id", order="asc", limit=10**9))
    by_user = {m["user_id"]: m for m in margins}
    period = (iso(analytics.ch_time(scope.start)), iso(analytics.ch_time(scope.end)))
    rows = []
    for u in usage:
        m = by_user.get(u["user_id"], {})
        cost = Decimal(u["_cost"])
        rev = m.get("revenue_usd", Decimal(0))
        rows.append({
            "user_id": u["user_id"], "plan": m.get("plan"), "requests": u["requests"],
            "prompt_tokens": u["prompt_tokens"], "completion_tokens": u["completion_tokens"],
            "total_tokens": u["total_tokens"], "cost_usd": cost, "unpriced_requests": u["unpriced_requests"],
            "revenue_usd": rev, "margin_usd": rev - cost, "first_seen": iso(u["_first"]), "last_seen": iso(u["_last"]),
            "period_from": period[0], "period_to": period[1],
        })
    return rows, scope


def to_csv(rows: list[dict[str, Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([money(row[c]) if c in MONEY_COLUMNS else ("" if row[c] is None else row[c]) for c in COLUMNS])
    return buffer.getvalue().encode()


def to_parquet(rows: list[dict[str, Any]]) -> bytes:
    schema = pa.schema([
        ("user_id", pa.string()), ("plan", pa.string()), ("requests", pa.uint64()), ("prompt_tokens", pa.uint64()),
        ("completion_tokens", pa.uint64()), ("total_tokens", pa.uint64()), ("cost_usd", ARROW_MONEY),
        ("unpriced_requests", pa.uint64()), ("revenue_usd", ARROW_MONEY), ("margin_usd", ARROW_MONEY),
        ("first_seen", pa.string()), ("last_seen", pa.string()), ("period_from", pa.string()), ("period_to", pa.string()),
    ])
    table = pa.Table.from_pylist(
        [{c: (Decimal(money(row[c]) or 0) if c in MONEY_COLUMNS else row[c]) for c in COLUMNS} for row in rows],
        schema=schema,
    )
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


@router.get("/api/export")
async def export(
    request: Request,
    org: str = Depends(org_of),
    format: str = Query("csv", description="csv or parquet."),
    from_: str | None = Query(None, alias="from", description="Inclusive start (default: this UTC month)."),
    to: str | None = Query(None, description="Exclusive end."),
) -> Response:
    """Per-user billing rows (usage, exact cost, plan revenue and margin) for the range, as CSV
    (money as 9-place decimal strings) or Parquet (money as decimal128(38, 9))."""
    kind = request.query_params.get("format", "csv")
    if kind not in ("csv", "parquet"):
        raise bad_param("format", "'format' must be 'csv' or 'parquet'.")
    rows, scope = await billing_rows(request, org)
    name = f"usagegate-{scope.start:%Y%m%dT%H%M%S}-{scope.end:%Y%m%dT%H%M%S}.{kind}"
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    if kind == "csv":
        return Response(to_csv(rows), media_type="text/csv; charset=utf-8", headers=headers)
    return Response(to_parquet(rows), media_type="application/vnd.apache.parquet", headers=headers)
