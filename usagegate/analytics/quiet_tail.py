"""The quiet tail of a range: when nothing of the org was logged between a range's end and the
end of that month, the range may be read on to the month's end, so the month so far comes from
one `user_monthly` row per user instead of a `user_daily` row per user and day (the last 31 days
at 10M requests: ~3.5M daily rows → ~0.4M monthly plus the previous month's tail, docs/analytics.md).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

from usagegate.analytics.facts import Scope, ch_time, month_ceil, month_floor
from usagegate.store import Store

# How far ahead of the clock an end must be. Records are stamped with the time they are
# answered, so none can still arrive stamped at or after such an end; a range ending in the
# past may still be waiting for its last records in the spool. (An import of future-dated
# history running during the query is the one writer this does not cover.)
QUIET_MARGIN = timedelta(minutes=5)


async def with_quiet_tail(store: Store, scope: Scope, *, now: datetime | None = None) -> Scope:
    """`scope`, with `quiet` set when the rest of its end's month holds no records of the org
    and reading on would reach a monthly row (the range covers the month's start)."""
    end = scope.end
    month_start, month_end = month_floor(end), month_ceil(end)
    now = now or datetime.now(timezone.utc)
    if not scope.start <= month_start < end < month_end or end < now + QUIET_MARGIN:
        return scope
    # Parts whose created_at min/max (the partition key's index) miss the tail are not read: ~2.4 ms.
    later = await store.query(
        "SELECT 1 AS x FROM requests WHERE org_id = {org:String} AND created_at >= {a:DateTime64(3)} "
        "AND created_at < {b:DateTime64(3)} LIMIT 1",
        {"org": scope.org, "a": ch_time(end), "b": ch_time(month_end)},
    )
    return scope if later else replace(scope, quiet=(end, month_end))
