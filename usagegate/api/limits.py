"""`PUT/GET/DELETE /api/limits/users/{id}` and `/api/limits/plans/{plan}`: budgets and request rates.

Fields (any subset): `budget_usd` (decimal string), `period` ("day" | "month", default month),
`requests_per_minute` (integer). A user's fields override its plan's one by one.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Request

from usagegate.api.auth import config_changed, context, org_of
from usagegate.api.params import ApiError, bad_param, money, parse_money
from usagegate.config_db import delete_limit, get_limit, set_limit

router = APIRouter()
SCOPES = {"users": "user", "plans": "plan"}
FIELDS = {"budget_usd", "period", "requests_per_minute"}


def _scope(kind: str) -> str:
    if kind not in SCOPES:
        raise ApiError(404, f"No such limit kind {kind!r}: use /api/limits/users/{{id}} or /api/limits/plans/{{plan}}.")
    return SCOPES[kind]


def _render(kind: str, name: str, row: dict[str, Any]) -> dict[str, Any]:
    budget = row["budget_usd"]
    return {
        "scope": SCOPES[kind], "name": name,
        "budget_usd": money(budget) if budget is not None else None,
        "period": row["period"] or ("month" if budget is not None else None),
        "requests_per_minute": row["requests_per_minute"],
    }


def parse_limit_body(body: Any) -> tuple[str | None, str | None, int | None]:
    if not isinstance(body, dict):
        raise bad_param("body", "The body must be a JSON object with budget_usd, period and/or requests_per_minute.")
    unknown = set(body) - FIELDS
    if unknown:
        raise bad_param(sorted(unknown)[0], f"Unknown field {sorted(unknown)[0]!r}; fields are {', '.join(sorted(FIELDS))}.")
    if not body:
        raise bad_param("body", "Give at least one of budget_usd, period, requests_per_minute.")
    budget = None
    if body.get("budget_usd") is not None:
        amount = parse_money(body["budget_usd"], "budget_usd")
        if amount < 0:
            raise bad_param("budget_usd", "'budget_usd' must not be negative.")
        budget = str(amount)
    period = body.get("period")
    if period is not None and period not in ("day", "month"):
        raise bad_param("period", "'period' must be 'day' or 'month'.")
    rpm = body.get("requests_per_minute")
    if rpm is not None and (isinstance(rpm, bool) or not isinstance(rpm, int) or rpm < 1):
        raise bad_param("requests_per_minute", "'requests_per_minute' must be a positive integer.")
    return budget, period, rpm


@router.put("/api/limits/{kind}/{name:path}")
async def put_limit(kind: str, name: str, request: Request, body: Any = Body(...), org: str = Depends(org_of)) -> dict[str, Any]:
    """Set (replace) the limits of a user or a plan."""
    scope = _scope(kind)
    budget, period, rpm = parse_limit_body(body)
    conn = context(request).config.conn
    set_limit(conn, org, scope, name, budget, period, rpm)
    await config_changed(request)
    return _render(kind, name, {"budget_usd": budget, "period": period, "requests_per_minute": rpm})


@router.get("/api/limits/{kind}/{name:path}")
async def read_limit(kind: str, name: str, request: Request, org: str = Depends(org_of)) -> dict[str, Any]:
    """The limits set for a user or a plan (404 when none)."""
    scope = _scope(kind)
    row = get_limit(context(request).config.conn, org, scope, name)
    if row is None:
        raise ApiError(404, f"No limits set for {scope} {name!r}.", "name")
    return _render(kind, name, row)


@router.delete("/api/limits/{kind}/{name:path}")
async def remove_limit(kind: str, name: str, request: Request, org: str = Depends(org_of)) -> dict[str, Any]:
    """Remove a user's or a plan's limits."""
    scope = _scope(kind)
    if not delete_limit(context(request).config.conn, org, scope, name):
        raise ApiError(404, f"No limits set for {scope} {name!r}.", "name")
    await config_changed(request)
    return {"deleted": True, "scope": scope, "name": name}


