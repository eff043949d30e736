"""One user's own usage and remaining budget: what `GET /api/usage/me` answers.

Every query here is bound to one (org_id, user_id) pair given by the caller's token; no
parameter of the request can widen it.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from usagegate.api.params import TimeRange, ch_time, money
from usagegate.config_db import get_limit
from usagegate.limits import LimitRule, period_bounds
from usagegate.store import Store

_TOTALS = """
SELECT model, count() AS n, sum(prompt_tokens) AS prompt, sum(completion_tokens) AS completion,
       sum(ifNull(cost_usd, 0)) AS cost, toString(cost) AS cost_text
FROM requests
WHERE org_id = {org:String} AND user_id = {user:String}
  AND created_at >= {t_from:DateTime64(3)} AND created_at < {t_to:DateTime64(3)}
GROUP BY model ORDER BY cost DESC, model
"""

_LATEST_PLAN = """
SELECT properties[{prop:String}] AS plan FROM requests
WHERE org_id = {org:String} AND user_id = {user:String} AND mapContains(properties, {prop:String})
ORDER BY created_at DESC LIMIT 1
"""

_SPENT = """
SELECT toString(sum(ifNull(cost_usd, 0))) AS spent FROM requests
WHERE org_id = {org:String} AND user_id = {user:String}
  AND created_at >= {a:DateTime64(3)} AND created_at < {b:DateTime64(3)}
"""


def _rule(row: dict[str, object] | None) -> LimitRule | None:
    if row is None:
        return None
    budget = row["budget_usd"]
    rpm = row["requests_per_minute"]
    return LimitRule(
        Decimal(str(budget)) if budget is not None else None,
        str(row["period"]) if row["period"] is not None else None,
        int(str(rpm)) if rpm is not None else None,
    )


def plan_property(conn: sqlite3.Connection, org_id: str) -> str:
    row = conn.execute("SELECT property FROM plans WHERE org_id = ?", (org_id,)).fetchone()
    return str(row[0]) if row else "plan"


async def own_usage(store: Store, conn: sqlite3.Connection, org_id: str, user_id: str, span: TimeRange) -> dict[str, Any]:
    """Totals and per-model usage for [from, to), and the budget as the gateway enforces it now."""
    params = {"org": org_id, "user": user_id, **span.params()}
    rows = await store.query(_TOTALS, params)
    by_model = [
        {
            "model": r["model"], "requests": int(r["n"]), "prompt_tokens": int(r["prompt"]),
            "completion_tokens": int(r["completion"]),
            "total_tokens": int(r["prompt"]) + int(r["completion"]), "cost_usd": money(r["cost_text"]),
        }
        for r in rows
    ]
    totals = {
        name: sum(int(m[name]) for m in by_model)  # type: ignore[call-overload]
        for name in ("requests", "prompt_tokens", "completion_tokens", "total_tokens")
    }
    return {
        "user_id": user_id,
        "from": span.start.isoformat().replace("+00:00", "Z"),
        "to": span.end.isoformat().replace("+00:00", "Z"),
        **totals,
        "cost_usd": money(sum((Decimal(r["cost_text"]) for r in rows), Decimal(0))),
        "by_model": by_model,
        "budget": await _budget(store, conn, org_id, user_id),
    }


async def _budget(store: Store, conn: sqlite3.Connection, org_id: str, user_id: str) -> dict[str, Any] | None:
    user_rule = _rule(get_limit(conn, org_id, "user", user_id))
    plan_rule = None
    prop = plan_property(conn, org_id)
    plans = await store.query(_LATEST_PLAN, {"org": org_id, "user": user_id, "prop": prop})
    if plans:
        plan_rule = _rule(get_limit(conn, org_id, "plan", plans[0]["plan"]))
    rule = user_rule.merged_over(plan_rule) if user_rule is not None else plan_rule
    if rule is None or rule.budget_usd is None:
        return None
    period = rule.period or "month"
    start, end = period_bounds(period, datetime.now(timezone.utc))
    spent_rows = await store.query(_SPENT, {"org": org_id, "user": user_id, "a": ch_time(start), "b": ch_time(end)})
    spent = Decimal(spent_rows[0]["spent"]) if spent_rows else Decimal(0)
    return {
        "budget_usd": money(rule.budget_usd), "period": period,
        "period_start": start.isoformat().replace("+00:00", "Z"), "resets_at": end.isoformat().replace("+00:00", "Z"),
        "spent_usd": money(spent), "remaining_usd": money(max(rule.budget_usd - spent, Decimal(0))),
    }
