"""`PUT/GET /api/plans` (monthly revenue per plan) and `GET /api/profitability` (margin per user).

A user's plan is the latest value of the plan property on their requests in the range; revenue
is the monthly price × the share of each calendar month the range covers (exact, 9 places).
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from usagegate import analytics
from usagegate.api.auth import context, org_of
from usagegate.api.params import bad_param, parse_money
from usagegate.api.scope import range_out, read_scope, render
from usagegate.api.users import cursor_of, page_of

router = APIRouter(tags=["plans"])

DEFAULT_PROPERTY = "plan"
PLANS_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {
            "type": "object", "required": ["monthly_revenue_usd"],
            "properties": {
                "property": {"type": "string", "default": DEFAULT_PROPERTY, "description": "Property naming the plan."},
                "monthly_revenue_usd": {"type": "object", "additionalProperties": {"type": "string"},
                                        "description": "Plan → monthly price as a decimal string.",
                                        "example": {"free": "0", "pro": "20"}},
            },
        }}},
    }
}


def plans_of(request: Request, org: str) -> tuple[str, dict[str, Decimal]]:
    stored = context(request).config.plans(org)
    if stored is None:
        return DEFAULT_PROPERTY, {}
    return stored[0], {name: Decimal(value) for name, value in stored[1].items()}


def plans_out(prop: str, revenue: dict[str, Decimal]) -> dict[str, Any]:
    return {"property": prop, "monthly_revenue_usd": {name: format(v, "f") for name, v in revenue.items()}}


@router.get("/api/plans")
async def plans_get(request: Request, org: str = Depends(org_of)) -> dict[str, Any]:
    """The plan property and each plan's monthly revenue (empty until set)."""
    return plans_out(*plans_of(request, org))


@router.put("/api/plans", openapi_extra=PLANS_BODY)
async def plans_put(request: Request, org: str = Depends(org_of)) -> dict[str, Any]:
    """Set `{"property": "plan", "monthly_revenue_usd": {"free": "0", "pro": "20"}}` (replaces all)."""
    try:
        # Numbers parse straight to Decimal: money never becomes a float, even when sent unquoted.
        body = json.loads(await request.body() or b"null", parse_float=Decimal)
    except ValueError:
        raise bad_param("body", "The body must be JSON.") from None
    if not isinstance(body, dict):
        raise bad_param("body", 'The body must be an object like {"property": "plan", "monthly_revenue_usd": {...}}.')
    prop = body.get("property", DEFAULT_PROPERTY)
    if not isinstance(prop, str) or not prop.strip():
        raise bad_param("property", "'property' must be a non-empty property name.")
    revenue = body.get("monthly_revenue_usd")
    if not isinstance(revenue, dict):
        raise bad_param("monthly_revenue_usd", "'monthly_revenue_usd' must map plan names to decimal strings.")
    parsed: dict[str, Decimal] = {}
    for name, value in revenue.items():
        amount = parse_money(value, f"monthly_revenue_usd.{name}")
        if amount < 0:
            raise bad_param(f"monthly_revenue_usd.{name}", "Revenue must not be negative.")
        parsed[name] = amount
    prop = prop.strip().lower()  # property names are stored lowercased (DESIGN §1)
    context(request).config.set_plans(org, prop, {name: str(v) for name, v in parsed.items()})
    return plans_out(prop, parsed)


@router.get("/api/profitability")
async def profitability(
    request: Request,
    org: str = Depends(org_of),
    from_: str | None = Query(None, alias="from", description="Inclusive start (default: this UTC month)."),
    to: str | None = Query(None, description="Exclusive end."),
    sort: str = Query("margin_usd", description=f"One of: {', '.join(analytics.PROFIT_SORTS)}."),
    order: str = Query("asc", description="asc (least profitable first, default) or desc."),
    limit: str | None = Query(None, description="Rows per page, 1-1000 (default 100)."),
    cursor: str | None = Query(None, description="next_cursor of the previous page."),
) -> dict[str, Any]:
    """Per user: plan, prorated revenue, cost, margin and margin % (null when revenue is 0);
    least profitable first (`order=desc` for most). `plans` summarises each plan."""
    scope = await read_scope(request, org)
    page = page_of(request, analytics.PROFIT_SORTS, "margin_usd", default_order="asc")
    prop, monthly = plans_of(request, org)
    revenue = {name: analytics.prorated(price, scope.start, scope.end) for name, price in monthly.items()}
    store = context(request).store
    rows, after = await analytics.profitability(store, scope, prop, revenue, page)
    summary = await analytics.plan_summary(store, scope, prop, revenue)
    return {
        **range_out(scope),
        "property": prop,
        "users": render(rows),
        "plans": render(summary),
        "next_cursor": cursor_of(page, after),
    }
