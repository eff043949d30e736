"""One user: existence, the detail page (row, series, cost by model and property, forecast) and
the dashboard's recent requests."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

from usagegate.analytics.facts import (
    BUCKET,
    DAY,
    EPOCH,
    Scope,
    Sql,
    ch_time,
    day_start,
    facts,
    segment_facts,
    segments,
    utc_today,
)
from usagegate.analytics.users import empty_user_row
from usagegate.forecast import LOOKBACK_DAYS, month_forecast, window_start
from usagegate.money import round_money
from usagegate.store import Store


async def user_exists(store: Store, org: str, user_id: str) -> bool:
    rows = await store.query(
        "SELECT 1 AS x FROM user_daily WHERE org_id = {org:String} AND user_id = {user:String} LIMIT 1",
        {"org": org, "user": user_id},
    )
    return bool(rows)


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


# The fact rows the detail sums in Python, as the rollups name them (user_id is the scope's;
# `w` = 1 marks rows read only for the forecast window). No conversions in SQL: JSON output
# already gives the decimal and time texts, and each layer of subquery or function cost the
# 10M detail ~3 ms (20.4 -> 14.5 ms for one user's month, docs/analytics.md).
_DETAIL_COLUMNS = ("bucket, model, props, requests, prompt, completion, cost, errors, limited, unpriced, "
                   "latency_sum, first_at, last_at")
# p95: every t-digest state of the range's fact rows merged at once (as _PER_USER merges a
# user's states), by a window over the rows this query reads anyway. A second read of the same
# rollup for it cost the 31-day detail ~4 ms wall and ~5 ms CPU at 10M (docs/analytics.md). The
# states are the rows' own (daily or hourly), so for a user whose digests compress the figure can
# differ from the users table's (monthly states) in its last digits, as any t-digest merge order can.
_P95_OF_RANGE = "round(quantileTDigestMergeIf(0.95)(latency_q, w = 0) OVER (), 1) AS p95"


def _detail_facts(scope: Scope, interval: str, pieces: list[tuple[datetime, datetime]], sql: Sql) -> str:
    """One query for the rows `user_detail` sums: the range at `interval` granularity (w = 0)
    and the forecast window's `pieces` outside it by day (w = 1), each row with the range's p95.

    When every part comes from one rollup and they touch (a day-aligned range and the window's
    days before or after it: the default range in the first half of a month, a range from the
    2nd), it is one read of their whole span, `w` telling the window's rows by their bucket: a
    second read in a `UNION ALL` cost the detail ~5-9 ms at 10M (docs/analytics.md)."""
    parts = [(0, scope, segment) for segment in segments(scope.start, scope.read_end(), coarsest=interval)]
    for start, end in pieces:
        piece = replace(scope, start=start, end=end)
        parts += [(1, piece, segment) for segment in segments(piece.start, piece.read_end(), coarsest="day")]
    tables = {table for _, _, (table, _, _) in parts}
    spans = sorted((start, end) for _, _, (_, start, end) in parts)
    if len(tables) == 1 and "requests" not in tables and all(a[1] == b[0] for a, b in zip(spans, spans[1:])):
        inside = [(start, end) for w, _, (_, start, end) in parts if not w]
        outside = (f"bucket < {sql.add(ch_time(min(s for s, _ in inside), False), BUCKET)} "
                   f"OR bucket >= {sql.add(ch_time(max(e for _, e in inside), False), BUCKET)}")
        return segment_facts(scope, sql, tables.pop(), spans[0][0], spans[-1][1],
                             columns=f"{outside} AS w, {_DETAIL_COLUMNS}, {_P95_OF_RANGE}")
    branches = []
    for w, part, (table, start, end) in parts:
        if table == "requests":  # raw rows grouped like a rollup's
            branches.append(f"SELECT {w} AS w, {_DETAIL_COLUMNS}, latency_q FROM ({segment_facts(part, sql, table, start, end)})")
        else:
            branches.append(segment_facts(part, sql, table, start, end, columns=f"{w} AS w, {_DETAIL_COLUMNS}, latency_q"))
    return f"SELECT * EXCEPT latency_q, {_P95_OF_RANGE} FROM ({' UNION ALL '.join(branches)})"


def _bucket_text(bucket: str, interval: str) -> str:
    """The start of the series point holding a fact row's bucket ('YYYY-MM-DD hh:mm:ss')."""
    return bucket[:10] + " 00:00:00" if interval == "day" else bucket[:13] + ":00:00"


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
    `cost_by_model` and `cost_by_property` answer, from one store query:

    - the user's fact rows at `interval` granularity (a few dozen for a month; every read on the
      (org_id, user_id) key prefix) plus the parts of the forecast window outside the range,
      summed here with exact integers and Decimals;
    - and on each row the p95 latency of the range, a window merging the rows' t-digest states
      (it needs the states, so it stays in SQL).

    A store query costs ~4-15 ms here whatever it reads (parsing, planning and pipeline set-up,
    ~0.5 ms for each column of each part read, ~3 ms for each layer of subquery or conversion),
    so the users table's row query (_PER_USER, ~18 ms at 10M when it was two nested aggregations)
    is not run: its columns are exact sums, a distinct-day count and ClickHouse's float
    roundings, all reproduced here (tests/detail_check.py compares them with
    the SQL). The forecast's daily costs come from the same rows. A third, small query runs only
    when the facts cannot tell: whether the user exists at all (no rows in range or window)
    and whether they were seen before the forecast window (when that moves the trend's start).
    """
    user = scope.user_id
    assert user is not None
    today = utc_today(now)
    begin = window_start(today)
    window_begin, window_end = day_start(begin), day_start(today) + DAY
    sql = Sql()
    fact_rows = await store.query(_detail_facts(scope, interval, _window_pieces(scope, window_begin, window_end), sql),
                                  sql.params)
    p95 = next((f["p95"] for f in fact_rows if not f["w"]), None)
    daily: dict[date, Decimal] = {}
    before = False  # seen before the forecast window
    in_range = []
    for f in fact_rows:
        f["t"] = _bucket_text(f["bucket"], interval)
        day = date.fromisoformat(f["bucket"][:10])
        if begin <= day <= today:
            daily[day] = daily.get(day, Decimal(0)) + Decimal(f["cost"])
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
    detail = _sum_detail(user, in_range, p95)
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
        cost = Decimal(f["cost"])
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
            if key not in latest or f["last_at"] > latest[key][0]:
                latest[key] = (f["last_at"], value)
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
        "first_seen": min(f["first_at"] for f in rows), "last_seen": max(f["last_at"] for f in rows),
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
