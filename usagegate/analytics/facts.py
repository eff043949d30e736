"""Facts: rollup-shaped rows of an exact [from, to) range, and the time helpers every query uses.

Every analytics query reads *facts*: rows shaped like the rollup tables (`user_daily`,
`user_hourly`, `user_monthly`, see migrations.py) covering an exact [from, to) range — whole
months from the monthly rollup, whole days at the month edges from the daily one, whole hours
at the day edges from the hourly one, and the partial hours at the very edges from the raw
`requests` table (DESIGN §2). Filters (user, model, property, user-id search) apply inside each
part, so they stay request-exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
MONEY = "Decimal(38, 9)"
BUCKET = "DateTime('UTC')"  # the rollups' bucket column, as a query parameter type

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
    # [a, b) in which the org has no records (see `with_quiet_tail`): a range ending inside it
    # may read on to b, which can turn the days of a month so far into its one monthly row.
    quiet: tuple[datetime, datetime] | None = None

    def read_end(self) -> datetime:
        """Where the facts may stop: `end`, or the end of the quiet span `end` falls in."""
        if self.quiet is not None and self.quiet[0] <= self.end < self.quiet[1]:
            return self.quiet[1]
        return self.end


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
    return " UNION ALL ".join(segment_facts(scope, sql, table, start, end, days=days)
                              for table, start, end in segments(scope.start, scope.read_end(), coarsest=coarsest))


def segment_facts(scope: Scope, sql: Sql, table: str, start: datetime, end: datetime, *, days: bool = False,
                  columns: str = _ROLLUP_FACTS) -> str:
    """The facts of one of `segments`: a rollup's rows as `columns` (the rollup's own names),
    or the raw table grouped into rollup rows (always `_ROLLUP_FACTS`)."""
    raw = table == "requests"
    column, kind, props = ("created_at", "DateTime64(3, 'UTC')", "properties") if raw else ("bucket", BUCKET, "props")
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
        return f"SELECT {_RAW_FACTS}{extra} FROM requests WHERE {' AND '.join(where)} GROUP BY {_RAW_GROUP}"
    extra = ""
    if days:
        # Hour and day rows cover one day each; only the monthly rollup stores a days state.
        extra = ", days" if table == "user_monthly" else ", arrayReduce('uniqExactState', [toDate(bucket)]) AS days"
    return f"SELECT {columns}{extra} FROM {table} WHERE {' AND '.join(where)}"


def org_days(scope: Scope, sql: Sql, start: datetime, end: datetime, columns: str) -> str:
    """`columns` per day of the whole org over whole days [start, end): the shape of user_daily's
    org_days projection (migrations.py), which ClickHouse then reads, one row per day instead of
    one per user and day. Only for `unfiltered` scopes."""
    return (f"SELECT {columns} FROM user_daily WHERE org_id = {sql.add(scope.org, 'String')} "
            f"AND bucket >= {sql.add(ch_time(start, False), BUCKET)} AND bucket < {sql.add(ch_time(end, False), BUCKET)} "
            "GROUP BY bucket")


def unfiltered(scope: Scope) -> bool:
    """The whole org: no user, model, property or user-id search narrows `scope`."""
    return (scope.model is None and not scope.properties and not scope.q and scope.user_id is None
            and scope.user_ids is None)


def utc_today(now: datetime | None) -> date:
    """The UTC date of `now` (the current time when None)."""
    return (now or datetime.now(timezone.utc)).astimezone(timezone.utc).date()


def day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
