"""The users table: one page of per-user rows (two phases for cheap sorts), totals and count,
the page's latest properties and forecasts, and every row for the export."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

from usagegate.analytics.facts import MONEY, Scope, Sql, facts, org_days, segments, unfiltered
from usagegate.analytics.forecasts import org_forecast, user_forecasts
from usagegate.money import round_money
from usagegate.store import Store


# Per-user columns computed in SQL, in one aggregation over the facts; ratios are rounded there
# so the sort order is the shown order. The facts' columns are renamed first: an alias equal to
# a facts column inside an aggregate confuses ClickHouse's analyzer. One level, not per model
# then per user: the t-digest states merge straight into the user's p95 (the user detail's p95
# is the same single merge; a second aggregation stage cost the detail ~4 ms), and top_model is
# argMax(model, (requests, model)) over the per-model request sums of `sumMap`.
_FACT_COLUMNS = (
    "SELECT user_id, model AS f_model, requests AS f_requests, errors AS f_errors, limited AS f_limited, "
    "prompt AS f_prompt, completion AS f_completion, cost AS f_cost, unpriced AS f_unpriced, "
    "latency_sum AS f_latency, latency_q AS f_q, days AS f_days, first_at AS f_first, last_at AS f_last FROM ({facts})"
)
_PER_USER = (
    "SELECT user_id, sum(f_requests) AS requests, sum(f_errors) AS errors, sum(f_limited) AS rate_limited, "
    "sum(f_prompt) AS prompt_tokens, sum(f_completion) AS completion_tokens, "
    "prompt_tokens + completion_tokens AS total_tokens, sum(f_cost) AS cost_usd, sum(f_unpriced) AS unpriced_requests, "
    "toDecimal128(cost_usd, 18) / requests AS avg_cost_per_request, "
    "uniqExactMerge(f_days) AS active_days, round(requests / active_days, 3) AS avg_requests_per_day, "
    "round(total_tokens / requests, 3) AS avg_tokens_per_request, round(sum(f_latency) / requests, 1) AS avg_latency_ms, "
    "round(quantileTDigestMerge(0.95)(f_q), 1) AS p95_latency_ms, round(errors / requests, 4) AS error_rate, "
    "min(f_first) AS first_seen, max(f_last) AS last_seen, "
    "arrayReduce('argMax', (sumMap([f_model], [f_requests]) AS per_model).1, "
    "arrayMap((m, n) -> (n, m), per_model.1, per_model.2)) AS top_model "
    "FROM ({facts}) GROUP BY user_id"
)
# sort name → ClickHouse type of its value (for keyset cursors).
USER_SORTS: dict[str, str] = {
    "user_id": "String", "requests": "UInt64", "prompt_tokens": "UInt64", "completion_tokens": "UInt64",
    "total_tokens": "UInt64", "cost_usd": MONEY, "avg_cost_per_request": "Decimal(38, 18)",
    "avg_requests_per_day": "Float64", "avg_tokens_per_request": "Float64", "avg_latency_ms": "Float64",
    "p95_latency_ms": "Float64", "error_rate": "Float64", "rate_limited": "UInt64", "unpriced_requests": "UInt64",
    "first_seen": "DateTime64(3, 'UTC')", "last_seen": "DateTime64(3, 'UTC')", "active_days": "UInt64",
    "top_model": "String",
}
_USER_OUT = (
    "user_id, requests, prompt_tokens, completion_tokens, total_tokens, toString(cost_usd) AS _cost, "
    "unpriced_requests, avg_requests_per_day, avg_tokens_per_request, avg_latency_ms, p95_latency_ms, "
    "error_rate, rate_limited, toString(first_seen) AS _first, toString(last_seen) AS _last, active_days, top_model"
)
# Text forms get other names: an alias equal to a column would also change what WHERE/ORDER BY see.
_RENAMES = {"_cost": "cost_usd", "_first": "first_seen", "_last": "last_seen"}


def users_sql(scope: Scope, sql: Sql) -> str:
    return _PER_USER.format(facts=_FACT_COLUMNS.format(facts=facts(scope, sql, days=True)))


@dataclass(frozen=True, slots=True)
class Page:
    sort: str = "cost_usd"
    order: str = "desc"
    limit: int = 100
    after: tuple[str, str] | None = None  # (sort value as text, user_id) of the previous page's last row


# Phase 1 of a users page: the sort value alone, straight from the facts (no quantile or
# top-model state). Each expression equals its column in _PER_USER exactly (same integer/decimal
# sums, same rounding), so the order and the cursor text are the full query's.
# `v` is the alias: one equal to a facts column inside an aggregate confuses the analyzer.
_LIGHT_SORTS: dict[str, str] = {
    "user_id": "user_id", "requests": "sum(requests)", "prompt_tokens": "sum(prompt)",
    "completion_tokens": "sum(completion)", "total_tokens": "sum(prompt) + sum(completion)",
    "cost_usd": "sum(cost)", "avg_cost_per_request": "toDecimal128(sum(cost), 18) / sum(requests)",
    "avg_tokens_per_request": "round((sum(prompt) + sum(completion)) / sum(requests), 3)",
    "avg_latency_ms": "round(sum(latency_sum) / sum(requests), 1)",
    "error_rate": "round(sum(errors) / sum(requests), 4)", "rate_limited": "sum(limited)",
    "unpriced_requests": "sum(unpriced)", "first_seen": "min(first_at)", "last_seen": "max(last_at)",
    "active_days": "uniqExactMerge(days)", "avg_requests_per_day": "round(sum(requests) / uniqExactMerge(days), 3)",
}


def _keyset(page: Page, sql: Sql, column: str) -> str:
    """WHERE clause for the rows after the cursor (empty on the first page)."""
    if page.after is None:
        return ""
    op = "<" if page.order == "desc" else ">"
    value = sql.add(page.after[0], USER_SORTS[page.sort])
    return f"WHERE ({column}, user_id) {op} ({value}, {sql.add(page.after[1], 'String')})"


def _page_rows(rows: list[dict[str, Any]], page: Page) -> tuple[list[dict[str, Any]], tuple[str, str] | None]:
    if len(rows) > page.limit:
        rows = rows[: page.limit]
        return rows, (rows[-1]["_k"], rows[-1]["user_id"])
    return rows, None


async def users(store: Store, scope: Scope, page: Page, *, now: datetime | None = None) -> tuple[list[dict[str, Any]], tuple[str, str] | None]:
    """One page of the users table and the keyset of its last row when more follow (see
    `_counted_users`)."""
    rows, after, _ = await _counted_users(store, scope, page, now=now)
    return rows, after


async def _counted_users(store: Store, scope: Scope, page: Page, *, now: datetime | None = None
                         ) -> tuple[list[dict[str, Any]], tuple[str, str] | None, int | None]:
    """One page of the users table, the keyset of its last row when more follow, and how many
    users the scope has (a window over the query's per-user groups, computed before the cursor
    skips any: free, where `uniqExact(user_id)` over the facts again cost ~100 ms of CPU at 10M);
    None when the page is empty.

    Two phases when the sort is a cheap column: pick the page's users from a light aggregate of
    the sort value, then compute every column for those users only (`user_id IN ids` reads
    just their slice of each rollup's (org_id, user_id) key). Computing every column (100k
    t-digest merges among them) for every user made the one-query version ~10x slower at 10M
    rows (docs/analytics.md).
    """
    if page.sort not in _LIGHT_SORTS or scope.user_id is not None:
        return await _users_one_query(store, scope, page, now=now)
    sql = Sql()
    days = page.sort in ("active_days", "avg_requests_per_day")
    picked = await store.query(
        f"SELECT user_id, toString(v) AS _k, _n FROM (SELECT user_id, {_LIGHT_SORTS[page.sort]} AS v, "
        f"count() OVER () AS _n FROM ({facts(scope, sql, days=days)}) GROUP BY user_id) {_keyset(page, sql, 'v')} "
        f"ORDER BY v {page.order}, user_id {page.order} LIMIT {page.limit + 1}",
        sql.params,
    )
    count = picked[0]["_n"] if picked else None
    picked, after = _page_rows(picked, page)
    if not picked:
        return [], None, count
    sql = Sql()
    page_scope = replace(scope, user_ids=tuple(r["user_id"] for r in picked), q=None)
    # Phase 2 and the per-page columns only need the ids: concurrent (the store has readers).
    full, (props, forecasts) = await asyncio.gather(
        store.query(f"SELECT {_USER_OUT} FROM ({users_sql(page_scope, sql)})", sql.params),
        _page_extras(store, page_scope, now=now),
    )
    by_id = {row["user_id"]: row for row in full}
    # Phase 1's order; a user erased between the two phases just drops out of the page.
    rows = [{_RENAMES.get(k, k): v for k, v in by_id[r["user_id"]].items()} for r in picked if r["user_id"] in by_id]
    _apply_extras(rows, props, forecasts)
    return rows, after, count


async def _users_one_query(store: Store, scope: Scope, page: Page, *, now: datetime | None,
                           decorate: bool = True) -> tuple[list[dict[str, Any]], tuple[str, str] | None, int | None]:
    """The users page in one query: for heavy sorts (p95, top model) and a single user."""
    sql = Sql()
    inner = users_sql(scope, sql)
    where = _keyset(page, sql, page.sort)
    # _k is the sort value printed by ClickHouse, so the cursor compares exactly what was sorted.
    rows = await store.query(
        f"SELECT {_USER_OUT}, toString({page.sort}) AS _k, _n FROM (SELECT *, count() OVER () AS _n FROM ({inner})) "
        f"{where} ORDER BY {page.sort} {page.order}, user_id {page.order} LIMIT {page.limit + 1}",
        sql.params,
    )
    count = rows[0]["_n"] if rows else None
    rows, after = _page_rows(rows, page)
    rows = [{_RENAMES.get(k, k): v for k, v in row.items() if k not in ("_k", "_n")} for row in rows]
    if decorate:
        await _decorate(store, scope, rows, now=now)
    return rows, after, count


async def user_totals(store: Store, scope: Scope, *, now: datetime | None = None) -> dict[str, Any]:
    """`count` and `totals` of the users table for `scope`, org-wide forecast included."""
    count, sums, forecast = await asyncio.gather(
        user_count(store, scope), scope_sums(store, scope), org_forecast(store, scope, now=now),
    )
    return _summary(count, sums, forecast)


async def user_count(store: Store, scope: Scope) -> int:
    """How many users have requests in `scope`."""
    sql = Sql()
    rows = await store.query(f"SELECT uniqExact(user_id) AS count FROM ({facts(scope, sql)})", sql.params)
    return int(rows[0]["count"]) if rows else 0


async def users_page(store: Store, scope: Scope, page: Page, *, now: datetime | None = None
                     ) -> tuple[list[dict[str, Any]], tuple[str, str] | None, dict[str, Any]]:
    """What `users` and `user_totals` answer together, with less work: the count rides on the
    page's own query and the sums of a whole org come from the org_days projection."""
    (rows, after, count), sums, forecast = await asyncio.gather(
        _counted_users(store, scope, page, now=now), scope_sums(store, scope), org_forecast(store, scope, now=now),
    )
    if count is None:  # an empty page: no users at all, or a cursor past the last one
        count = 0 if page.after is None else await user_count(store, scope)
    return rows, after, _summary(count, sums, forecast)


# The sums of the users table's totals, from fact rows (renamed: see _FACT_COLUMNS).
_SUM_COLUMNS = ("requests AS r, prompt AS p, completion AS o, cost AS c, unpriced AS u, errors AS e, "
                "limited AS l, latency_sum AS t")
_SUMS = ("SELECT sum(r) AS requests, sum(p) AS prompt_tokens, sum(o) AS completion_tokens, "
         "prompt_tokens + completion_tokens AS total_tokens, toString(sum(c)) AS cost_usd, "
         "sum(u) AS unpriced_requests, sum(e) AS errors, sum(l) AS rate_limited, "
         "round(sum(t) / requests, 1) AS avg_latency_ms FROM ({parts})")
DAY_SUMS = ("sum(requests) AS r, sum(prompt) AS p, sum(completion) AS o, sum(cost) AS c, sum(unpriced) AS u, "
             "sum(errors) AS e, sum(limited) AS l, sum(latency_sum) AS t")


async def scope_sums(store: Store, scope: Scope) -> dict[str, Any]:
    """Requests, tokens, cost, errors, rate-limited and mean latency of every request in `scope`."""
    sql = Sql()
    if not unfiltered(scope):
        parts = f"SELECT {_SUM_COLUMNS} FROM ({facts(scope, sql)})"
    else:
        pieces = []
        for table, start, end in segments(scope.start, scope.read_end(), coarsest="day"):
            if table == "user_daily":  # whole days: from the org_days projection
                pieces.append(org_days(scope, sql, start, end, DAY_SUMS))
            else:  # the range's partial days and hours
                edge = replace(scope, start=start, end=end, quiet=None)
                pieces.append(f"SELECT {_SUM_COLUMNS} FROM ({facts(edge, sql, coarsest='day')})")
        parts = " UNION ALL ".join(pieces)
    rows = await store.query(_SUMS.format(parts=parts), sql.params)
    return rows[0] if rows else {}


def _summary(count: int, row: dict[str, Any], forecast: Decimal) -> dict[str, Any]:
    requests = int(row.get("requests") or 0)
    totals = {
        "requests": requests,
        "prompt_tokens": int(row.get("prompt_tokens") or 0),
        "completion_tokens": int(row.get("completion_tokens") or 0),
        "total_tokens": int(row.get("total_tokens") or 0),
        "cost_usd": Decimal(row.get("cost_usd") or 0),
        "unpriced_requests": int(row.get("unpriced_requests") or 0),
        "rate_limited": int(row.get("rate_limited") or 0),
        "error_rate": round(int(row.get("errors") or 0) / requests, 4) if requests else None,
        "avg_latency_ms": row.get("avg_latency_ms") if requests else None,
        "avg_cost_per_user": round_money(Fraction(Decimal(row.get("cost_usd") or 0)) / count) if count else None,
        "forecast_month_usd": forecast,
    }  # no org-wide p95: merging every user's digest into one doubled the totals' query time
    return {"count": count, "totals": totals}


async def _decorate(store: Store, scope: Scope, rows: list[dict[str, Any]], *, now: datetime | None) -> None:
    """Add the columns computed per page: Decimal money, latest properties, forecast."""
    if not rows:
        return
    ids = tuple(row["user_id"] for row in rows)
    props, forecasts = await _page_extras(store, replace(scope, user_ids=ids, q=None), now=now)
    _apply_extras(rows, props, forecasts)


async def _page_extras(store: Store, page_scope: Scope, *, now: datetime | None) -> tuple[dict[str, dict[str, str]], dict[str, Decimal]]:
    """Latest properties and forecasts of the page's users (`page_scope.user_ids`), concurrently."""
    return await asyncio.gather(latest_properties(store, page_scope), user_forecasts(store, page_scope, now=now))


def _apply_extras(rows: list[dict[str, Any]], props: dict[str, dict[str, str]], forecasts: dict[str, Decimal]) -> None:
    for row in rows:
        _money_columns(row)
        row["forecast_month_usd"] = forecasts.get(row["user_id"], Decimal(0))
        row["properties"] = props.get(row["user_id"], {})


def _money_columns(row: dict[str, Any]) -> None:
    cost = Decimal(row["cost_usd"])
    row["cost_usd"] = cost
    row["avg_cost_per_request"] = round_money(Fraction(cost) / row["requests"]) if row["requests"] else None


async def latest_properties(store: Store, scope: Scope) -> dict[str, dict[str, str]]:
    """Per user, the latest value of each property key (within the scope)."""
    sql = Sql()
    rows = await store.query(
        "SELECT user_id, groupArray(k) AS keys, groupArray(v) AS vals FROM ("
        f"SELECT user_id, k, argMax(props[k], last_at) AS v FROM ({facts(scope, sql)}) "
        "ARRAY JOIN mapKeys(props) AS k GROUP BY user_id, k) GROUP BY user_id",
        sql.params,
    )
    return {row["user_id"]: dict(sorted(zip(row["keys"], row["vals"]))) for row in rows}


def empty_user_row(user_id: str) -> dict[str, Any]:
    return {
        "user_id": user_id, "requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0,
        "cost_usd": Decimal(0), "unpriced_requests": 0, "avg_requests_per_day": None, "avg_tokens_per_request": None,
        "avg_latency_ms": None, "p95_latency_ms": None, "error_rate": None, "rate_limited": 0, "first_seen": None,
        "last_seen": None, "active_days": 0, "top_model": None, "avg_cost_per_request": None,
        "forecast_month_usd": Decimal(0), "properties": {},
    }


async def all_users(store: Store, scope: Scope, columns: Sequence[str]) -> list[dict[str, Any]]:
    """Every user row of `scope` (export), sorted by user id."""
    sql = Sql()
    return await store.query(
        f"SELECT {', '.join(columns)} FROM ({users_sql(scope, sql)}) ORDER BY user_id", sql.params
    )
