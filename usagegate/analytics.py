"""Per-user analytics over the log store: users table, user detail, breakdowns, billing rows.

Every query reads *facts*: rows shaped like the rollup tables (`user_daily`, `user_hourly`,
see migrations.py) covering an exact [from, to) range — whole days from the daily rollup,
whole hours at the day edges from the hourly rollup, and the partial hours at the very edges
from the raw `requests` table (DESIGN §2). Filters (user, model, property, user-id search)
apply inside each part, so they stay request-exact.

Money leaves every query as a decimal string (ClickHouse Decimal(38, 9) sums are exact) and is
turned into `Decimal`s here; derived money (averages, forecasts) is rounded half-even once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from typing import Any

from usagegate.forecast import LOOKBACK_DAYS, month_forecast, window_start
from usagegate.migrations import rollup_rebuild_statements
from usagegate.money import round_money
from usagegate.store import Store

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
MONEY = "Decimal(38, 9)"

# The raw table reshaped like a rollup row (the same expressions as the materialized views).
_RAW_FACTS = (
    "user_id, toDateTime(toStartOfHour(created_at), 'UTC') AS bucket, model, any(properties) AS props, "
    "count() AS requests, countIf(status >= 400 AND NOT rate_limited) AS errors, countIf(rate_limited) AS limited, "
    "sum(prompt_tokens) AS prompt, sum(completion_tokens) AS completion, "
    "sum(ifNull(cost_usd, toDecimal128(0, 9))) AS cost, countIf(cost_usd IS NULL) AS unpriced, "
    "sum(latency_ms) AS latency_sum, quantileTDigestState(0.95)(latency_ms) AS latency_q, "
    "min(created_at) AS first_at, max(created_at) AS last_at"
)
_RAW_GROUP = "user_id, bucket, model, cityHash64(toString(mapSort(properties)))"
_ROLLUP_FACTS = (
    "user_id, bucket, model, props, requests, errors, limited, prompt, completion, cost, unpriced, "
    "latency_sum, latency_q, first_at, last_at"
)


@dataclass(frozen=True, slots=True)
class Scope:
    """Which requests a query covers: one org, a [start, end) range and optional filters."""

    org: str
    start: datetime
    end: datetime
    model: str | None = None
    properties: tuple[tuple[str, str], ...] = ()
    q: str | None = None
    user_id: str | None = None
    user_ids: tuple[str, ...] | None = None


@dataclass
class Sql:
    """Collects query parameters while SQL text is assembled."""

    params: dict[str, Any] = field(default_factory=dict)

    def add(self, value: Any, kind: str) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return f"{{{name}:{kind}}}"


def ch_time(moment: datetime, millis: bool = True) -> str:
    text = moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
    return text[:-3] if millis else text[:-7]


def _ceil(moment: datetime, step: timedelta) -> datetime:
    floor = floor_time(moment, step)
    return floor if floor == moment else floor + step


def floor_time(moment: datetime, step: timedelta) -> datetime:
    return EPOCH + ((moment - EPOCH) // step) * step


def month_floor(moment: datetime) -> datetime:
    return datetime(moment.year, moment.month, 1, tzinfo=timezone.utc)


def month_ceil(moment: datetime) -> datetime:
    floor = month_floor(moment)
    if floor == moment:
        return floor
    return datetime(floor.year + (floor.month == 12), floor.month % 12 + 1, 1, tzinfo=timezone.utc)


TIERS = ("hour", "day", "month")


def segments(start: datetime, end: datetime, *, coarsest: str = "month") -> list[tuple[str, datetime, datetime]]:
    """Disjoint (table, from, to) parts covering [start, end): the coarsest rollup that fits
    exactly (never coarser than `coarsest`), the raw table for partial hours."""
    hs, he = _ceil(start, HOUR), floor_time(end, HOUR)
    if hs >= he:
        return [("requests", start, end)]
    out: list[tuple[str, datetime, datetime]] = []
    if start < hs:
        out.append(("requests", start, hs))
    ds, de = _ceil(hs, DAY), floor_time(he, DAY)
    if coarsest == "hour" or ds >= de:
        out.append(("user_hourly", hs, he))
    else:
        if hs < ds:
            out.append(("user_hourly", hs, ds))
        ms, me = month_ceil(ds), month_floor(de)
        if coarsest == "month" and ms < me:
            if ds < ms:
                out.append(("user_daily", ds, ms))
            out.append(("user_monthly", ms, me))
            if me < de:
                out.append(("user_daily", me, de))
        else:
            out.append(("user_daily", ds, de))
        if de < he:
            out.append(("user_hourly", de, he))
    if he < end:
        out.append(("requests", he, end))
    return out


def facts(scope: Scope, sql: Sql, *, coarsest: str = "month", days: bool = False) -> str:
    """SQL for rollup-shaped rows of `scope` (see the module docstring); with `days`, each row
    also carries a uniqExact state of the days it covers (for active days)."""
    parts = []
    for table, start, end in segments(scope.start, scope.end, coarsest=coarsest):
        raw = table == "requests"
        column, kind, props = ("created_at", "DateTime64(3, 'UTC')", "properties") if raw else ("bucket", "DateTime('UTC')", "props")
        where = [
            f"org_id = {sql.add(scope.org, 'String')}",
            f"{column} >= {sql.add(ch_time(start, raw), kind)}",
            f"{column} < {sql.add(ch_time(end, raw), kind)}",
        ]
        if scope.user_id is not None:
            where.append(f"user_id = {sql.add(scope.user_id, 'String')}")
        if scope.user_ids is not None:
            where.append(f"user_id IN {sql.add(list(scope.user_ids), 'Array(String)')}")
        if scope.q:
            where.append(f"positionCaseInsensitiveUTF8(user_id, {sql.add(scope.q, 'String')}) > 0")
        if scope.model is not None:
            where.append(f"model = {sql.add(scope.model, 'String')}")
        for name, value in scope.properties:
            where.append(f"{props}[{sql.add(name, 'String')}] = {sql.add(value, 'String')}")
        if raw:
            extra = ", uniqExactState(toDate(created_at)) AS days" if days else ""
            parts.append(f"SELECT {_RAW_FACTS}{extra} FROM requests WHERE {' AND '.join(where)} GROUP BY {_RAW_GROUP}")
        else:
            extra = ""
            if days:
                # Hour and day rows cover one day each; only the monthly rollup stores a days state.
                extra = ", days" if table == "user_monthly" else ", arrayReduce('uniqExactState', [toDate(bucket)]) AS days"
            parts.append(f"SELECT {_ROLLUP_FACTS}{extra} FROM {table} WHERE {' AND '.join(where)}")
    return " UNION ALL ".join(parts)


# -- the users table --------------------------------------------------------------------------

# Per-user columns computed in SQL; ratios are rounded there so the sort order is the shown order.
_PER_MODEL = (
    "SELECT user_id, model, sum(requests) AS m_requests, sum(errors) AS m_errors, sum(limited) AS m_limited, "
    "sum(prompt) AS m_prompt, sum(completion) AS m_completion, sum(cost) AS m_cost, sum(unpriced) AS m_unpriced, "
    "sum(latency_sum) AS m_latency, quantileTDigestMergeState(0.95)(latency_q) AS m_q, "
    "uniqExactMergeState(days) AS m_days, min(first_at) AS m_first, max(last_at) AS m_last "
    "FROM ({facts}) GROUP BY user_id, model"
)
_PER_USER = (
    "SELECT user_id, sum(m_requests) AS requests, sum(m_errors) AS errors, sum(m_limited) AS rate_limited, "
    "sum(m_prompt) AS prompt_tokens, sum(m_completion) AS completion_tokens, "
    "prompt_tokens + completion_tokens AS total_tokens, sum(m_cost) AS cost_usd, sum(m_unpriced) AS unpriced_requests, "
    "toDecimal128(cost_usd, 18) / requests AS avg_cost_per_request, "
    "uniqExactMerge(m_days) AS active_days, round(requests / active_days, 3) AS avg_requests_per_day, "
    "round(total_tokens / requests, 3) AS avg_tokens_per_request, round(sum(m_latency) / requests, 1) AS avg_latency_ms, "
    "round(quantileTDigestMerge(0.95)(m_q), 1) AS p95_latency_ms, round(errors / requests, 4) AS error_rate, "
    "min(m_first) AS first_seen, max(m_last) AS last_seen, argMax(model, (m_requests, model)) AS top_model "
    "FROM ({per_model}) GROUP BY user_id"
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
    return _PER_USER.format(per_model=_PER_MODEL.format(facts=facts(scope, sql, days=True)))


@dataclass(frozen=True, slots=True)
class Page:
    sort: str = "cost_usd"
    order: str = "desc"
    limit: int = 100
    after: tuple[str, str] | None = None  # (sort value as text, user_id) of the previous page's last row


# Phase 1 of a users page: the sort value alone, straight from the facts (no per-model stage,
# no quantile or top-model state). Each expression equals its column in _PER_USER exactly (same
# integer/decimal sums, same rounding), so the order and the cursor text are the full query's.
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
    """One page of the users table and the keyset of its last row when more follow.

    Two phases when the sort is a cheap column: pick the page's users from a light aggregate of
    the sort value, then compute every column for those users only (`user_id IN ids` reads
    just their slice of each rollup's (org_id, user_id) key). Merging 100k t-digests and
    grouping per model first made the one-query version ~10x slower at 10M rows (docs/analytics.md).
    """
    if page.sort not in _LIGHT_SORTS or scope.user_id is not None:
        return await _users_one_query(store, scope, page, now=now)
    sql = Sql()
    days = page.sort in ("active_days", "avg_requests_per_day")
    picked = await store.query(
        f"SELECT user_id, toString(v) AS _k FROM (SELECT user_id, {_LIGHT_SORTS[page.sort]} AS v "
        f"FROM ({facts(scope, sql, days=days)}) GROUP BY user_id) {_keyset(page, sql, 'v')} "
        f"ORDER BY v {page.order}, user_id {page.order} LIMIT {page.limit + 1}",
        sql.params,
    )
    picked, after = _page_rows(picked, page)
    if not picked:
        return [], None
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
    return rows, after


async def _users_one_query(store: Store, scope: Scope, page: Page, *, now: datetime | None,
                           decorate: bool = True) -> tuple[list[dict[str, Any]], tuple[str, str] | None]:
    """The users page in one query: for heavy sorts (p95, top model) and a single user."""
    sql = Sql()
    inner = users_sql(scope, sql)
    where = _keyset(page, sql, page.sort)
    # _k is the sort value printed by ClickHouse, so the cursor compares exactly what was sorted.
    rows = await store.query(
        f"SELECT {_USER_OUT}, toString({page.sort}) AS _k FROM ({inner}) {where} "
        f"ORDER BY {page.sort} {page.order}, user_id {page.order} LIMIT {page.limit + 1}",
        sql.params,
    )
    rows, after = _page_rows(rows, page)
    rows = [{_RENAMES.get(k, k): v for k, v in row.items() if k != "_k"} for row in rows]
    if decorate:
        await _decorate(store, scope, rows, now=now)
    return rows, after


async def user_totals(store: Store, scope: Scope, *, now: datetime | None = None) -> dict[str, Any]:
    """`count` and `totals` of the users table for `scope`, org-wide forecast included."""
    sql = Sql()
    rows, forecast = await asyncio.gather(store.query(
        "SELECT uniqExact(user_id) AS count, sum(requests) AS requests, sum(prompt) AS prompt_tokens, "
        "sum(completion) AS completion_tokens, prompt_tokens + completion_tokens AS total_tokens, "
        "toString(sum(cost)) AS cost_usd, sum(unpriced) AS unpriced_requests, sum(errors) AS errors, "
        "sum(limited) AS rate_limited, round(sum(latency_sum) / requests, 1) AS avg_latency_ms "
        # No org-wide p95 here: merging every user's digest into one doubled this query's time.
        f"FROM ({facts(scope, sql)})",
        sql.params,
    ), org_forecast(store, scope, now=now))
    row = rows[0] if rows else {}
    count = int(row.pop("count", 0) or 0)
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
    }
    totals["forecast_month_usd"] = forecast
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


# -- forecasts --------------------------------------------------------------------------------


def _today(now: datetime | None) -> date:
    return (now or datetime.now(timezone.utc)).astimezone(timezone.utc).date()


def _day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)


async def _daily_costs(store: Store, scope: Scope, today: date, *, per_user: bool) -> tuple[dict[str, dict[date, Decimal]], dict[str, date]]:
    """Daily costs in the forecast window and first-seen days, keyed by user (or "" for all).

    A first-seen day before the window only has to say "before the window" (month_forecast
    clamps the trend window to it), so it is reported as the window's eve: that needs one cheap
    "anything earlier?" probe instead of a min(first_at) over every rollup since the epoch."""
    key = "user_id" if per_user else "''"
    begin = window_start(today)
    window = replace(scope, start=_day_start(begin), end=_day_start(today) + DAY)
    earlier = replace(scope, start=EPOCH, end=_day_start(begin))
    # At most one row per key: the probe can stop as soon as it has seen every key.
    stop = 1 if not per_user else len(scope.user_ids) if scope.user_ids is not None else None
    sql = Sql()
    # One query for both parts (each store query costs a few ms even when it reads little).
    rows = await store.query(
        f"SELECT {key} AS k, toString(toDate(bucket)) AS d, toString(sum(cost)) AS c, "
        f"toString(toDate(min(first_at))) AS f, 0 AS before FROM ({facts(window, sql, coarsest='day')}) GROUP BY k, d "
        f"UNION ALL SELECT * FROM (SELECT DISTINCT {key} AS k, '' AS d, '' AS c, '' AS f, 1 AS before "
        f"FROM ({facts(earlier, sql)}){f' LIMIT {stop}' if stop is not None else ''})",
        sql.params,
    )
    daily: dict[str, dict[date, Decimal]] = {}
    first: dict[str, date] = {}
    eve = begin - timedelta(days=1)
    for row in rows:
        if row["before"]:
            first[row["k"]] = eve
            continue
        day = date.fromisoformat(row["d"])
        daily.setdefault(row["k"], {})[day] = Decimal(row["c"])
        seen = date.fromisoformat(row["f"])
        if first.get(row["k"], seen) >= seen:
            first[row["k"]] = seen
    return daily, first


async def user_forecasts(store: Store, scope: Scope, *, now: datetime | None = None) -> dict[str, Decimal]:
    """Month-end forecast (forecast.py) for each user in `scope.user_ids`."""
    today = _today(now)
    daily, first = await _daily_costs(store, scope, today, per_user=True)
    return {user: month_forecast(daily.get(user, {}), today, day) for user, day in first.items()}


async def org_forecast(store: Store, scope: Scope, *, now: datetime | None = None) -> Decimal:
    """Month-end forecast of the whole scope (all matching users together)."""
    today = _today(now)
    daily, first = await _daily_costs(store, scope, today, per_user=False)
    return month_forecast(daily.get("", {}), today, first.get(""))


# -- one user ---------------------------------------------------------------------------------


async def user_exists(store: Store, org: str, user_id: str) -> bool:
    rows = await store.query(
        "SELECT 1 AS x FROM user_daily WHERE org_id = {org:String} AND user_id = {user:String} LIMIT 1",
        {"org": org, "user": user_id},
    )
    return bool(rows)


def empty_user_row(user_id: str) -> dict[str, Any]:
    return {
        "user_id": user_id, "requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0,
        "cost_usd": Decimal(0), "unpriced_requests": 0, "avg_requests_per_day": None, "avg_tokens_per_request": None,
        "avg_latency_ms": None, "p95_latency_ms": None, "error_rate": None, "rate_limited": 0, "first_seen": None,
        "last_seen": None, "active_days": 0, "top_model": None, "avg_cost_per_request": None,
        "forecast_month_usd": Decimal(0), "properties": {},
    }


async def series(store: Store, scope: Scope, interval: str) -> list[dict[str, Any]]:
    """Per hour or day: requests, tokens, cost, errors (only buckets with traffic)."""
    fn = "toStartOfHour" if interval == "hour" else "toStartOfDay"
    sql = Sql()
    return await store.query(
        f"SELECT toString(toDateTime({fn}(bucket), 'UTC')) AS t, sum(requests) AS requests, "
        "sum(prompt) + sum(completion) AS total_tokens, toString(sum(cost)) AS cost_usd, sum(errors) AS errors, "
        f"sum(limited) AS rate_limited FROM ({facts(scope, sql, coarsest=interval)}) GROUP BY t ORDER BY t",
        sql.params,
    )


async def cost_by_model(store: Store, scope: Scope) -> list[dict[str, Any]]:
    sql = Sql()
    return await store.query(
        "SELECT model, sum(requests) AS requests, sum(prompt) + sum(completion) AS total_tokens, "
        f"toString(sum(cost)) AS cost_usd FROM ({facts(scope, sql)}) GROUP BY model ORDER BY sum(cost) DESC, model",
        sql.params,
    )


async def cost_by_property(store: Store, scope: Scope) -> list[dict[str, Any]]:
    sql = Sql()
    return await store.query(
        "SELECT k AS property, props[k] AS value, sum(requests) AS requests, toString(sum(cost)) AS cost_usd "
        f"FROM ({facts(scope, sql)}) ARRAY JOIN mapKeys(props) AS k GROUP BY property, value "
        "ORDER BY property, sum(cost) DESC, value",
        sql.params,
    )


@dataclass
class UserDetail:
    """One user's users-table row and the breakdowns of the detail page (see `user_detail`).
    `exists` is False for a user with no records at all in the org (the API's 404)."""

    row: dict[str, Any]
    series: list[dict[str, Any]]
    cost_by_model: list[dict[str, Any]]
    cost_by_property: list[dict[str, Any]]
    exists: bool = True


# The fact rows the detail sums in Python (`w` = 1 marks rows read only for the forecast window).
_DETAIL_FACTS = (
    "toString(toDateTime({fn}(bucket), 'UTC')) AS t, model, props, requests, prompt, completion, "
    "toString(cost) AS c, errors, limited, unpriced, latency_sum, toString(first_at) AS first, toString(last_at) AS last"
)
# p95 exactly as the users table merges it (_PER_MODEL then _PER_USER): t-digest states merged
# per model, then across models, so the detail shows the users table's figure.
_DETAIL_P95 = (
    "SELECT round(quantileTDigestMerge(0.95)(m_q), 1) AS p95 FROM (SELECT user_id, model, "
    "quantileTDigestMergeState(0.95)(latency_q) AS m_q FROM ({facts}) GROUP BY user_id, model) GROUP BY user_id"
)


def _ch_round(value: float, places: int) -> float | int:
    """ClickHouse's `round(x, places)` on a Float64, as its JSON output reads back: x times the
    scale, rounded half to even, divided by the scale (FloatRoundingComputation), and an integral
    result printed without a fraction (so json.loads gives an int)."""
    scale = 10**places
    out = round(value * scale) / scale
    return int(out) if out.is_integer() else out


def _ch_decimal(value: Decimal) -> Decimal:
    """A Decimal as ClickHouse's toString prints it (no trailing zeros), read back."""
    text = format(value, "f")
    return Decimal(text.rstrip("0").rstrip(".") if "." in text else text)


def _window_pieces(scope: Scope, begin: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """The parts of the forecast window [begin, end) outside [scope.start, scope.end)."""
    pieces = []
    if begin < min(scope.start, end):
        pieces.append((begin, min(scope.start, end)))
    if max(scope.end, begin) < end:
        pieces.append((max(scope.end, begin), end))
    return pieces


async def user_detail(store: Store, scope: Scope, interval: str, *, now: datetime | None = None) -> UserDetail:
    """The users-table row of `scope.user_id`, its month-end forecast and what `series`,
    `cost_by_model` and `cost_by_property` answer, from two concurrent store queries:

    - the user's fact rows at `interval` granularity (a few dozen for a month; every read on the
      (org_id, user_id) key prefix) plus the parts of the forecast window outside the range,
      summed here with exact integers and Decimals;
    - the p95 latency, which needs the t-digest states (merged as the users table merges them).

    Each of these store queries costs ~5-15 ms here whatever it reads (parsing, planning and
    pipeline set-up; each aggregation stage adds a few ms), so the users table's nested row
    query (~18 ms at 10M) is not run: its columns are exact sums, a distinct-day count and
    ClickHouse's float roundings, all reproduced here (tests/detail_check.py compares them with
    the SQL). The forecast's daily costs come from the same rows. A third, small query runs only
    when the facts cannot tell: whether the user exists at all (no rows in range or window)
    and whether they were seen before the forecast window (when that moves the trend's start).
    """
    user = scope.user_id
    assert user is not None
    today = _today(now)
    begin = window_start(today)
    window_begin, window_end = _day_start(begin), _day_start(today) + DAY
    fn = "toStartOfHour" if interval == "hour" else "toStartOfDay"
    columns = _DETAIL_FACTS.format(fn=fn)
    sql = Sql()
    parts = [f"SELECT 0 AS w, {columns} FROM ({facts(scope, sql, coarsest=interval)})"]
    for start, end in _window_pieces(scope, window_begin, window_end):
        parts.append(f"SELECT 1 AS w, {columns} FROM ({facts(replace(scope, start=start, end=end), sql, coarsest='day')})")
    p95_sql = Sql()
    fact_rows, p95_rows = await asyncio.gather(
        store.query(" UNION ALL ".join(parts), sql.params),
        store.query(_DETAIL_P95.format(facts=facts(scope, p95_sql)), p95_sql.params),
    )
    daily: dict[date, Decimal] = {}
    before = False  # seen before the forecast window
    in_range = []
    for f in fact_rows:
        day = date.fromisoformat(f["t"][:10])
        if begin <= day <= today:
            daily[day] = daily.get(day, Decimal(0)) + Decimal(f["c"])
        elif day < begin:
            before = True
        if not f["w"]:
            in_range.append(f)
    first: date | None = min(daily) if daily else None
    exists = bool(fact_rows)
    # The trend's first day matters only when it falls after the usual start (forecast.py).
    need_before = not before and (first is None or first > today - timedelta(days=LOOKBACK_DAYS))
    if need_before or not exists:
        found, before_found = await _user_probe(store, replace(scope, start=EPOCH, end=window_begin),
                                                exists=not exists, before=need_before)
        exists = exists or found or before_found
        before = before or before_found
    if before:
        first = begin - timedelta(days=1)  # "before the window" is all the forecast needs
    detail = _sum_detail(user, in_range, p95_rows[0]["p95"] if p95_rows else None)
    detail.row["forecast_month_usd"] = month_forecast(daily, today, first) if first is not None else Decimal(0)
    detail.exists = exists
    return detail


async def _user_probe(store: Store, earlier: Scope, *, exists: bool, before: bool) -> tuple[bool, bool]:
    """(any record of the user in the org, any record matching `earlier`), asked only as needed."""
    sql = Sql()
    parts = []
    if exists:
        parts.append(f"SELECT 'e' AS k FROM (SELECT 1 FROM user_daily WHERE org_id = {sql.add(earlier.org, 'String')} "
                     f"AND user_id = {sql.add(earlier.user_id, 'String')} LIMIT 1)")
    if before:
        parts.append(f"SELECT 'b' AS k FROM (SELECT 1 FROM ({facts(earlier, sql)}) LIMIT 1)")
    kinds = {row["k"] for row in await store.query(" UNION ALL ".join(parts), sql.params)}
    return "e" in kinds, "b" in kinds


def _sum_detail(user: str, rows: list[dict[str, Any]], p95: float | int | None) -> UserDetail:
    """The row (the users table's columns, each equal to what _PER_USER computes), series and
    breakdowns from the fact rows of the range."""
    if not rows:
        return UserDetail(row=empty_user_row(user), series=[], cost_by_model=[], cost_by_property=[])
    points: dict[str, dict[str, Any]] = {}
    models: dict[str, dict[str, Any]] = {}
    by_prop: dict[tuple[str, str], dict[str, Any]] = {}
    latest: dict[str, tuple[str, str]] = {}
    prompt = completion = errors = limited = unpriced = latency = 0
    days = set()
    for f in rows:
        cost = Decimal(f["c"])
        tokens = f["prompt"] + f["completion"]
        prompt += f["prompt"]
        completion += f["completion"]
        errors += f["errors"]
        limited += f["limited"]
        unpriced += f["unpriced"]
        latency += f["latency_sum"]
        days.add(f["t"][:10])
        point = points.setdefault(f["t"], {"t": f["t"], "requests": 0, "total_tokens": 0, "cost_usd": Decimal(0),
                                           "errors": 0, "rate_limited": 0})
        point["requests"] += f["requests"]
        point["total_tokens"] += tokens
        point["cost_usd"] += cost
        point["errors"] += f["errors"]
        point["rate_limited"] += f["limited"]
        model = models.setdefault(f["model"], {"model": f["model"], "requests": 0, "total_tokens": 0, "cost_usd": Decimal(0)})
        model["requests"] += f["requests"]
        model["total_tokens"] += tokens
        model["cost_usd"] += cost
        for key, value in f["props"].items():
            prop = by_prop.setdefault((key, value), {"property": key, "value": value, "requests": 0, "cost_usd": Decimal(0)})
            prop["requests"] += f["requests"]
            prop["cost_usd"] += cost
            # Fixed-width 'YYYY-MM-DD hh:mm:ss.mmm' text sorts as time.
            if key not in latest or f["last"] > latest[key][0]:
                latest[key] = (f["last"], value)
    requests = sum(m["requests"] for m in models.values())
    cost_usd = _ch_decimal(sum((m["cost_usd"] for m in models.values()), Decimal(0)))
    # Same columns, order and values as _USER_OUT + _money_columns: integer sums are exact, and
    # the ratios are ClickHouse's Float64 division and round() (see _ch_round). top_model is
    # argMax(model, (requests, model)): str order is ClickHouse's byte order for UTF-8.
    row = {
        "user_id": user, "requests": requests, "prompt_tokens": prompt, "completion_tokens": completion,
        "total_tokens": prompt + completion, "cost_usd": cost_usd, "unpriced_requests": unpriced,
        "avg_requests_per_day": _ch_round(requests / len(days), 3),
        "avg_tokens_per_request": _ch_round((prompt + completion) / requests, 3),
        "avg_latency_ms": _ch_round(latency / requests, 1), "p95_latency_ms": p95,
        "error_rate": _ch_round(errors / requests, 4), "rate_limited": limited,
        "first_seen": min(f["first"] for f in rows), "last_seen": max(f["last"] for f in rows),
        "active_days": len(days), "top_model": max(models.values(), key=lambda m: (m["requests"], m["model"]))["model"],
        "avg_cost_per_request": round_money(Fraction(cost_usd) / requests),
        "properties": {key: latest[key][1] for key in sorted(latest)},
    }
    return UserDetail(
        row=row,
        series=[points[t] for t in sorted(points)],
        # The orders of cost_by_model / cost_by_property (str order = ClickHouse's byte order).
        cost_by_model=sorted(models.values(), key=lambda m: (-m["cost_usd"], m["model"])),
        cost_by_property=sorted(by_prop.values(), key=lambda p: (p["property"], -p["cost_usd"], p["value"])),
    )


async def delete_user(store: Store, org: str, user_id: str) -> int:
    """Erase a user's records (bodies included) and rollup rows; returns the records removed."""
    params = {"org": org, "user": user_id}
    rows = await store.query(
        "SELECT count() AS n FROM requests WHERE org_id = {org:String} AND user_id = {user:String}", params
    )
    for table in ("requests", "user_hourly", "user_daily", "user_monthly"):
        # Synchronous mutation: once the API answers, the data is gone from every table.
        await store.acall(
            store.command,
            f"ALTER TABLE {table} DELETE WHERE org_id = {{org:String}} AND user_id = {{user:String}} "
            "SETTINGS mutations_sync = 2",
            params,
        )
    return int(rows[0]["n"]) if rows else 0


def rebuild_user_rollups(store: Store, org: str, user_ids: Sequence[str]) -> None:
    """Recompute `user_ids`' rollup rows from the raw table (after an in-place cost update).
    Call on the store thread, where inserts also run, so no batch lands in between."""
    if user_ids:
        where = "org_id = {org:String} AND user_id IN {users:Array(String)}"
        for statement in rollup_rebuild_statements(where):
            store.command(statement, {"org": org, "users": list(user_ids)})


# -- breakdown --------------------------------------------------------------------------------


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


# -- profitability ----------------------------------------------------------------------------


def month_share(start: datetime, end: datetime) -> list[tuple[date, Fraction]]:
    """For each calendar month [start, end) touches: (month start, share of that month covered)."""
    out = []
    month = date(start.year, start.month, 1)
    while _day_start(month) < end:
        nxt = date(month.year + (month.month == 12), month.month % 12 + 1, 1)
        m_start, m_end = _day_start(month), _day_start(nxt)
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


async def all_users(store: Store, scope: Scope, columns: Sequence[str]) -> list[dict[str, Any]]:
    """Every user row of `scope` (export), sorted by user id."""
    sql = Sql()
    return await store.query(
        f"SELECT {', '.join(columns)} FROM ({users_sql(scope, sql)}) ORDER BY user_id", sql.params
    )
# -- dashboard: recent requests, cost per user ------------------------------------------------

RECENT_COLUMNS = (
    "toString(request_id) AS _rid, toString(created_at) AS _at, user_id, provider, model, path, status, "
    "rate_limited, stream, prompt_tokens, completion_tokens, prompt_tokens + completion_tokens AS total_tokens, "
    "toString(cost_usd) AS _cost, latency_ms, ttft_ms, properties, error, "
    "length(request_body) > 0 OR length(response_body) > 0 AS has_body"
)
# Text forms get other names: an alias equal to a column would also change what WHERE sees.
_RECENT_RENAMES = {"_rid": "request_id", "_at": "created_at", "_cost": "cost_usd"}


async def recent_requests(store: Store, scope: Scope, limit: int = 50) -> list[dict[str, Any]]:
    """The newest `limit` requests of `scope` (one user when `scope.user_id` is set), without
    bodies; `has_body` says whether bodies are stored. `cost_usd` is a decimal string or None."""
    sql = Sql()
    where = [f"org_id = {sql.add(scope.org, 'String')}",
             f"created_at >= {sql.add(ch_time(scope.start), 'DateTime64(3)')}",
             f"created_at < {sql.add(ch_time(scope.end), 'DateTime64(3)')}"]
    if scope.user_id is not None:
        where.append(f"user_id = {sql.add(scope.user_id, 'String')}")
    if scope.model is not None:
        where.append(f"model = {sql.add(scope.model, 'String')}")
    for name, value in scope.properties:
        where.append(f"properties[{sql.add(name, 'String')}] = {sql.add(value, 'String')}")
    rows = await store.query(
        f"SELECT {RECENT_COLUMNS} FROM requests WHERE {' AND '.join(where)} "
        f"ORDER BY created_at DESC, request_id DESC LIMIT {int(limit)}",
        sql.params,
    )
    return [{_RECENT_RENAMES.get(k, k): v for k, v in row.items()} for row in rows]


async def user_costs(store: Store, scope: Scope) -> list[Decimal]:
    """Each matching user's cost over the scope (no order), for the cost-per-user distribution."""
    sql = Sql()
    rows = await store.query(
        f"SELECT toString(sum(cost)) AS c FROM ({facts(scope, sql)}) GROUP BY user_id", sql.params
    )
    return [Decimal(row["c"]) for row in rows]
