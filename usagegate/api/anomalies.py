"""`GET /api/anomalies`: users whose usage departs from their own baseline or their plan peers.

`from`/`to` pick the window (default today, UTC; one given → a 24-hour window at that end).
The method and its thresholds are in `usagegate.anomalies` and docs/guardrails.md.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request

# A module import: usagegate.anomalies imports api.params, which loads this package first.
from usagegate import anomalies as detect
from usagegate.api.auth import context, org_of
from usagegate.api.params import TimeRange, bad_param, parse_limit, parse_time

router = APIRouter()


def window(start: str | None, end: str | None) -> TimeRange:
    given_begin = parse_time(start, "from") if start else None
    given_finish = parse_time(end, "to") if end else None
    if given_begin is None and given_finish is None:  # absent or empty: today
        return detect.today()
    if given_begin is None:
        assert given_finish is not None
        finish = given_finish
        begin = finish - detect.DAY
    else:
        begin = given_begin
        finish = given_finish if given_finish is not None else begin + detect.DAY
    if finish <= begin:
        raise bad_param("to", "'to' must be after 'from'.")
    if finish - begin > 92 * detect.DAY:
        raise bad_param("to", "The window can span at most 92 days.")
    return TimeRange(begin, finish)


@router.get("/api/anomalies")
async def anomalies(
    request: Request,
    start: str | None = Query(None, alias="from"), end: str | None = Query(None, alias="to"),
    limit: str | None = None, org: str = Depends(org_of),
) -> dict[str, Any]:
    """Anomalous users, most extreme first, each with findings (metric, value, baseline, ratio, score, reason)."""
    count = parse_limit(limit)
    ctx = context(request)
    result = await detect.find_anomalies(ctx.store, ctx.config.conn, org, window(start, end))
    result["anomalies"] = result["anomalies"][:count]
    return result
