"""Dashboard pages: the Users tab, one user, one request, profitability and the plan-price editor.

Each route checks the session, reads the view (view.py), calls `usagegate.analytics` in-process
and renders a template. Money stays Decimal or decimal strings from the store to the page.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from usagegate import analytics, anomalies
from usagegate.analytics import Page
from usagegate.api.auth import context
from usagegate.api.export import billing_rows, to_csv
from usagegate.api.params import ApiError, decode_cursor, iso, parse_money
from usagegate.api.plans import plans_of
from usagegate.api.requests import request_detail
from usagegate.api.scope import user_from_path
from usagegate.api.users import ASCENDING_BY_DEFAULT, cursor_of, fill_series
from usagegate.config_db import get_limit
from usagegate.web import charts
from usagegate.web.auth import Session, checked_form, signed_in
from usagegate.web.render import page
from usagegate.web.view import PAGE_SIZES, RANGES, BadView, View

router = APIRouter()

# (key, label, kind): kind picks the cell format in users.html; every key is an /api/users column.
USER_COLUMNS = (
    ("user_id", "User", "user"),
    ("cost_usd", "Cost", "cost"),
    ("requests", "Requests", "int"),
    ("avg_cost_per_request", "Cost / req", "money"),
    ("total_tokens", "Tokens", "tokens"),
    ("prompt_tokens", "Prompt", "tokens"),
    ("completion_tokens", "Completion", "tokens"),
    ("avg_tokens_per_request", "Tokens / req", "dec0"),
    ("avg_requests_per_day", "Req / day", "dec1"),
    ("active_days", "Active days", "int"),
    ("avg_latency_ms", "Avg latency", "ms"),
    ("p95_latency_ms", "p95 latency", "ms"),
    ("error_rate", "Errors", "pct"),
    ("rate_limited", "Rate-limited", "int"),
    ("top_model", "Top model", "text"),
    ("forecast_month_usd", "Forecast (month)", "money"),
    ("first_seen", "First seen", "time"),
    ("last_seen", "Last seen", "time"),
    ("properties", "Properties", "props"),
)
TOP_USERS = 10
SCATTER_USERS = 2000
RECENT = 50
ANOMALIES_SHOWN = 6


def _view(request: Request) -> tuple[View, str | None]:
    try:
        return View.from_query(request.query_params), None
    except BadView as exc:
        return View(), str(exc)


def _common(request: Request, session: Session, view: View, tab: str) -> dict[str, Any]:
    return {"session": session, "view": view, "tab": tab, "ranges": RANGES, "path": request.url.path}


@router.get("/")
async def home() -> Response:
    return RedirectResponse("/users", status_code=303)


# -- Users tab ----------------------------------------------------------------------------------


def _page_of(view: View) -> tuple[Page, str | None]:
    sort = view.sort if view.sort in analytics.USER_SORTS else "cost_usd"
    order = view.order or ("asc" if sort in ASCENDING_BY_DEFAULT else "desc")
    after = None
    if view.cursor:
        try:
            c_sort, c_order, value, user_id = decode_cursor(view.cursor, 4)
        except ApiError:
            return Page(sort=sort, order=order, limit=view.limit), "That page link has expired; showing the first page."
        if (c_sort, c_order) == (sort, order):
            after = (str(value), str(user_id))
    return Page(sort=sort, order=order, limit=view.limit, after=after), None


@router.get("/users")
async def users_tab(request: Request) -> Response:
    session = signed_in(request)
    view, error = _view(request)
    query = request.query_params
    if "pf" in query or any(not query[k] for k in ("q", "model") if k in query):
        # The filter form's raw submission (pf=, empty fields) → the canonical, shareable URL.
        return RedirectResponse(view.url("/users"), status_code=303)
    store = context(request).store
    everything = await analytics.with_quiet_tail(store, view.scope(session.org_id, filters=False))
    scope = replace(view.scope(session.org_id), quiet=everything.quiet)  # the quiet tail is the org's
    table_page, page_error = _page_of(view)
    plan_property, _ = plans_of(request, session.org_id)
    interval = view.interval()
    step = timedelta(hours=1) if interval == "hour" else timedelta(days=1)
    ctx = context(request)
    # Seven reads at once; gather() has no typed overload that long, hence the Any.
    gathered: list[Any] = await asyncio.gather(
        analytics.users_page(store, scope, table_page),
        analytics.series(store, scope, interval),
        analytics.breakdown(store, scope, plan_property),
        analytics.user_costs(store, scope),
        analytics.cost_by_property(store, everything),
        analytics.cost_by_model(store, everything),
        anomalies.find_anomalies(store, ctx.config.conn, session.org_id, anomalies.today()),
    )
    (rows, after, summary), points, plan_groups, costs, options, models, flagged = gathered
    if (table_page.sort, table_page.order, table_page.after) == ("cost_usd", "desc", None):
        top = rows[:TOP_USERS]  # the table's first page already is the top of the list
    else:
        top, _ = await analytics.users(store, scope, Page(limit=TOP_USERS))
    begin, finish = view.span()
    figures = {
        "usage": charts.usage_over_time(fill_series(points, begin, finish, step), interval),
        "histogram": charts.cost_histogram(costs),
        "plans": charts.avg_cost_by_plan(plan_groups),
        "top": charts.top_users(top, view.range_query()),
    }
    property_options: dict[str, list[str]] = {}
    for option in options:
        property_options.setdefault(option["property"], []).append(option["value"])
    sort_links = {
        key: view.url("/users", sort=key, order=_next_order(key, table_page))
        for key, _, _ in USER_COLUMNS if key in analytics.USER_SORTS
    }
    export_query = urlencode({"from": iso(analytics.ch_time(begin)), "to": iso(analytics.ch_time(finish)),
                              **({"model": view.model} if view.model else {}),
                              **({"q": view.q} if view.q else {}),
                              **{f"property.{k}": v for k, v in view.properties}})
    return page(request, "users.html", {
        **_common(request, session, view, "users"),
        "error": error or page_error,
        "rows": rows,
        "count": summary["count"],
        "totals": summary["totals"],
        "figures": figures,
        "plan_property": plan_property,
        "plan_groups": plan_groups,
        "columns": USER_COLUMNS,
        "sort_links": sort_links,
        "table_page": table_page,
        "next_url": view.url("/users", cursor=cursor_of(table_page, after), page=view.page + 1) if after else None,
        "first_url": view.url("/users") if view.cursor else None,
        "property_options": property_options,
        "models": [m["model"] for m in models],
        "page_sizes": PAGE_SIZES,
        "export_url": "/export.csv?" + export_query,
        "interval": interval,
        "anomalies": flagged["anomalies"][:ANOMALIES_SHOWN],
        "anomaly_count": flagged["count"],
    })


def _next_order(key: str, current: Page) -> str:
    if key == current.sort:
        return "asc" if current.order == "desc" else "desc"
    return "asc" if key in ASCENDING_BY_DEFAULT else "desc"


@router.get("/export.csv")
async def export_csv(request: Request) -> Response:
    """The billing rows of /api/export (format csv) for the dashboard's range and filters."""
    session = signed_in(request)
    try:
        rows, scope = await billing_rows(request, session.org_id)
    except ApiError as exc:
        return Response(exc.message, status_code=exc.status, media_type="text/plain")
    name = f"usagegate-users-{scope.start:%Y%m%d}-{scope.end:%Y%m%d}.csv"
    return Response(to_csv(rows), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"})


# -- one user -----------------------------------------------------------------------------------


@router.get("/users/{rest:path}")
async def user_page(request: Request) -> Response:
    session = signed_in(request)
    view, error = _view(request)
    try:
        user_id, rest = user_from_path(request, prefix="/users/")
    except ApiError as exc:
        return _not_found(request, session, view, exc.message)
    if rest:
        return _not_found(request, session, view, "There is no such page.")
    store = context(request).store
    one = replace(view.scope(session.org_id, filters=False), user_id=user_id)
    interval = view.interval()
    step = timedelta(hours=1) if interval == "hour" else timedelta(days=1)
    conn = context(request).config.conn
    # The detail is the API's (analytics.user_detail, which also says whether the user exists);
    # recent requests first, the longest query, so it takes one of the store's two readers first.
    recent, detail, flagged = await asyncio.gather(
        analytics.recent_requests(store, one, RECENT),
        analytics.user_detail(store, one, interval),
        anomalies.find_anomalies(store, conn, session.org_id, anomalies.today()),
    )
    if not detail.exists:
        return _not_found(request, session, view, f"No user {user_id[:80]!r} in this organization.")
    row, points, models, props = detail.row, detail.series, detail.cost_by_model, detail.cost_by_property
    for r in recent:
        r["created_at"] = iso(r["created_at"])
    begin, finish = view.span()
    series = fill_series(points, begin, finish, step)
    plan_property, _ = plans_of(request, session.org_id)
    plan = row["properties"].get(plan_property) if row.get("properties") else None
    limits = {
        "user": get_limit(conn, session.org_id, "user", user_id),
        "plan": get_limit(conn, session.org_id, "plan", plan) if plan else None,
    }
    figures = {
        "usage": charts.usage_over_time(series, interval),
        "tokens": charts.tokens_over_time(series, interval),
        "models": charts.model_mix(models),
        "latency": charts.latency_points(recent),
    }
    return page(request, "user.html", {
        **_common(request, session, view, "users"),
        "error": error,
        "user": row,
        "user_id": user_id,
        "figures": figures,
        "models": models,
        "props": props,
        "recent": recent,
        "limits": limits,
        "plan": plan,
        "plan_property": plan_property,
        "interval": interval,
        "has_data": row["first_seen"] is not None,
        "anomaly": next((a for a in flagged["anomalies"] if a["user_id"] == user_id), None),
    })


def _not_found(request: Request, session: Session, view: View, message: str) -> Response:
    return page(request, "not_found.html", {**_common(request, session, view, "users"), "message": message},
                status_code=404)


@router.get("/requests/{request_id}")
async def request_page(request_id: str, request: Request) -> Response:
    session = signed_in(request)
    view, _ = _view(request)
    try:
        record = await request_detail(request_id, request, session.org_id)
    except ApiError as exc:
        return _not_found(request, session, view, exc.message)
    return page(request, "request.html", {**_common(request, session, view, "users"), "r": record})


# -- profitability ------------------------------------------------------------------------------


@router.get("/profitability")
async def profitability_page(request: Request) -> Response:
    session = signed_in(request)
    view, error = _view(request)
    store = context(request).store
    scope = await analytics.with_quiet_tail(store, view.scope(session.org_id, filters=False))
    prop, monthly = plans_of(request, session.org_id)
    revenue = {name: analytics.prorated(price, scope.start, scope.end) for name, price in monthly.items()}
    (everyone, more), summary = await asyncio.gather(
        analytics.profitability(store, scope, prop, revenue, Page(sort="margin_usd", order="asc", limit=SCATTER_USERS)),
        analytics.plan_summary(store, scope, prop, revenue),
    )
    least = everyone[:TOP_USERS]
    if more is None:
        most = list(reversed(everyone[-TOP_USERS:]))
    else:
        most, _ = await analytics.profitability(store, scope, prop, revenue,
                                                Page(sort="margin_usd", order="desc", limit=TOP_USERS))
    total_revenue = sum((p["revenue_usd"] for p in summary), Decimal(0))
    total_cost = sum((p["cost_usd"] for p in summary), Decimal(0))
    seen_plans = [p["plan"] for p in summary if p["plan"] and p["plan"] not in monthly]
    figures = {
        "scatter": charts.revenue_vs_cost(everyone, view.range_query()),
        "plans": charts.margin_by_plan(summary),
    }
    return page(request, "profitability.html", {
        **_common(request, session, view, "profitability"),
        "error": error or request.query_params.get("error"),
        "saved": request.query_params.get("saved") == "1",
        "property": prop,
        "monthly": monthly,
        "seen_plans": seen_plans,
        "summary": summary,
        "least": least,
        "most": most,
        "figures": figures,
        "total_revenue": total_revenue,
        "total_cost": total_cost,
        "total_margin": total_revenue - total_cost,
        "users_count": sum(p["users"] for p in summary),
        "unprofitable": sum(1 for u in everyone if u["margin_usd"] < 0),
        "unprofitable_more": more is not None,
        "unpriced": not monthly,
    })


@router.post("/profitability/plans")
async def save_plans(request: Request) -> Response:
    """The plan-price editor: the semantics of PUT /api/plans (replaces the whole price list)."""
    session = signed_in(request)
    form = await checked_form(request, session)
    back = str(form.get("back") or "")
    back = back if back.startswith("?") or not back else ""
    prop = str(form.get("property") or "plan").strip().lower()
    names = [str(n).strip() for n in form.getlist("plan")]
    prices = [str(p).strip() for p in form.getlist("price")]
    revenue: dict[str, str] = {}
    try:
        if not prop:
            raise ApiError(400, "The plan property must not be empty.", "property")
        for name, price in zip(names, prices):
            if not name and not price:
                continue
            if not name:
                raise ApiError(400, f"A price ({price}) has no plan name.", "plan")
            amount = parse_money(price or "0", f"monthly_revenue_usd.{name}")
            if amount < 0:
                raise ApiError(400, f"The price of plan {name!r} must not be negative.", "price")
            revenue[name] = str(amount)
    except ApiError as exc:
        return RedirectResponse("/profitability?" + urlencode({"error": exc.message}), status_code=303)
    context(request).config.set_plans(session.org_id, prop, revenue)
    sep = "&" if back else "?"
    return RedirectResponse(f"/profitability{back}{sep}saved=1", status_code=303)
