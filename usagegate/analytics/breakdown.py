"""Per model or per property value: users, requests, cost and the spread of per-user cost."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from typing import Any

from usagegate.analytics.facts import Scope, Sql, facts
from usagegate.money import round_money
from usagegate.store import Store


async def breakdown(store: Store, scope: Scope, by_property: str | None) -> list[dict[str, Any]]:
    """Per model (by_property None) or per value of a property: users, requests, cost and the
    mean / median / p90 of per-user cost. Requests without the property form the null group."""
    sql = Sql()
    if by_property is None:
        group = "model"
    else:
        name = sql.add(by_property, "String")
        group = f"if(mapContains(props, {name}), props[{name}], NULL)"
    # median: mean of the two middle values; p90: nearest rank, ceil(0.9 n) (docs/analytics.md).
    rows = await store.query(
        "SELECT value, count() AS users, sum(u_requests) AS requests, toString(sum(u_cost)) AS cost_usd, "
        "arraySort(groupArray(u_cost)) AS s, toString(s[intDiv(users + 1, 2)]) AS m1, "
        "toString(s[intDiv(users + 2, 2)]) AS m2, toString(s[intDiv(9 * users + 9, 10)]) AS p90 FROM ("
        f"SELECT {group} AS value, user_id, sum(requests) AS u_requests, sum(cost) AS u_cost "
        f"FROM ({facts(scope, sql)}) GROUP BY value, user_id) GROUP BY value ORDER BY sum(u_cost) DESC, value",
        sql.params,
    )
    out = []
    for row in rows:
        cost = Decimal(row["cost_usd"])
        users_n = int(row["users"])
        out.append({
            "value": row["value"], "users": users_n, "requests": int(row["requests"]), "cost_usd": cost,
            "avg_cost_per_user": round_money(Fraction(cost) / users_n),
            "median_cost_per_user": round_money((Fraction(Decimal(row["m1"])) + Fraction(Decimal(row["m2"]))) / 2),
            "p90_cost_per_user": Decimal(row["p90"]),
        })
    return out


async def user_costs(store: Store, scope: Scope) -> list[Decimal]:
    """Each matching user's cost over the scope (no order), for the cost-per-user distribution."""
    sql = Sql()
    rows = await store.query(
        f"SELECT toString(sum(cost)) AS c FROM ({facts(scope, sql)}) GROUP BY user_id", sql.params
    )
    return [Decimal(row["c"]) for row in rows]
