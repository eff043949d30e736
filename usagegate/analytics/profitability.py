"""Revenue from plan prices (prorated per calendar month) against cost: per user and per plan."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

from usagegate.analytics.facts import MONEY, Scope, Sql, day_start, facts
from usagegate.analytics.users import Page
from usagegate.money import round_money
from usagegate.store import Store


def month_share(start: datetime, end: datetime) -> list[tuple[date, Fraction]]:
    """For each calendar month [start, end) touches: (month start, share of that month covered)."""
    out = []
    month = date(start.year, start.month, 1)
    while day_start(month) < end:
        nxt = date(month.year + (month.month == 12), month.month % 12 + 1, 1)
        m_start, m_end = day_start(month), day_start(nxt)
        covered = min(end, m_end) - max(start, m_start)
        out.append((month, Fraction(int(covered.total_seconds() * 1000), int((m_end - m_start).total_seconds() * 1000))))
        month = nxt
    return out


def prorated(monthly: Decimal, start: datetime, end: datetime) -> Decimal:
    """Revenue of a monthly price over [start, end): price × covered share of each month."""
    return round_money(sum((Fraction(monthly) * share for _, share in month_share(start, end)), Fraction(0)))


PROFIT_SORTS = {"margin_usd": MONEY, "cost_usd": MONEY, "revenue_usd": MONEY, "user_id": "String"}


async def profitability(store: Store, scope: Scope, plan_property: str, revenue: dict[str, Decimal],
                        page: Page) -> tuple[list[dict[str, Any]], tuple[str, str] | None]:
    """Per user: plan (latest value of the plan property), prorated revenue, cost and margin."""
    sql = Sql()
    plans = list(revenue)
    prop = sql.add(plan_property, "String")
    names = sql.add(plans, "Array(String)")
    prices = sql.add([revenue[p] for p in plans], "Array(Decimal(38, 9))")
    # transform() does not take Decimals; an index into parallel arrays does (0 = no such plan).
    revenue_expr = f"if(indexOf({names}, plan) = 0, toDecimal128(0, 9), {prices}[indexOf({names}, plan)])"
    inner = (
        "SELECT user_id, plan, revenue_usd, cost_usd, revenue_usd - cost_usd AS margin_usd FROM ("
        f"SELECT user_id, argMaxIf(props[{prop}], last_at, mapContains(props, {prop})) AS plan, "
        f"sum(cost) AS cost_usd, {revenue_expr} AS revenue_usd FROM ({facts(scope, sql)}) GROUP BY user_id)"
    )
    where = ""
    if page.after is not None:
        op = "<" if page.order == "desc" else ">"
        where = (f"WHERE ({page.sort}, user_id) {op} ({sql.add(page.after[0], PROFIT_SORTS[page.sort])}, "
                 f"{sql.add(page.after[1], 'String')})")
    rows = await store.query(
        "SELECT user_id, plan, toString(revenue_usd) AS _rev, toString(cost_usd) AS _cost, "
        f"toString(margin_usd) AS _margin, toString({page.sort}) AS _k FROM ({inner}) {where} "
        f"ORDER BY {page.sort} {page.order}, user_id {page.order} LIMIT {page.limit + 1}",
        sql.params,
    )
    after = None
    if len(rows) > page.limit:
        rows = rows[: page.limit]
        after = (rows[-1]["_k"], rows[-1]["user_id"])
    out = []
    for row in rows:
        rev, cost, margin = Decimal(row["_rev"]), Decimal(row["_cost"]), Decimal(row["_margin"])
        out.append({
            "user_id": row["user_id"], "plan": row["plan"] or None, "revenue_usd": rev, "cost_usd": cost,
            "margin_usd": margin, "margin_pct": round_money(Fraction(margin) * 100 / Fraction(rev), 2) if rev else None,
        })
    return out, after


async def plan_summary(store: Store, scope: Scope, plan_property: str, revenue: dict[str, Decimal]) -> list[dict[str, Any]]:
    """Per plan: users, cost, revenue, margin and average cost per user (users by latest plan)."""
    sql = Sql()
    prop = sql.add(plan_property, "String")
    rows = await store.query(
        "SELECT plan, count() AS users, toString(sum(u_cost)) AS cost_usd FROM ("
        f"SELECT user_id, argMaxIf(props[{prop}], last_at, mapContains(props, {prop})) AS plan, sum(cost) AS u_cost "
        f"FROM ({facts(scope, sql)}) GROUP BY user_id) GROUP BY plan ORDER BY plan",
        sql.params,
    )
    out = []
    for row in rows:
        users_n, cost = int(row["users"]), Decimal(row["cost_usd"])
        per_user = revenue.get(row["plan"], Decimal(0))
        rev = per_user * users_n
        out.append({
            "plan": row["plan"] or None, "users": users_n, "revenue_usd": rev, "cost_usd": cost,
            "margin_usd": rev - cost, "avg_cost_per_user": round_money(Fraction(cost) / users_n),
        })
    return out
