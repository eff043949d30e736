"""`python -m tests.quiet_tail_check <dir>`: ranges read on through their quiet tail (the rest of
the end's month holds no record of the org, analytics/quiet_tail.py) answer exactly what the
same ranges read tier by tier answer, and a tail that holds records is never skipped. Rows are
tests/detail_check.py's (several months, users, models, plans; several insert parts) plus one
org whose latest record lies after the range's end. Prints a JSON summary."""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from tests.detail_check import ORG, insert, rows

UTC = timezone.utc
NOW = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)
LATER_ORG = "o-later"  # one record on Nov 28, after every case's end


def t(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


async def answers(store: Any, scope: Any) -> dict[str, Any]:
    """What the users table, its totals, the breakdowns and per-user costs answer for `scope`."""
    from usagegate import analytics

    out: dict[str, Any] = {}
    for sort, order in (("cost_usd", "desc"), ("requests", "asc"), ("user_id", "asc"), ("active_days", "desc"),
                        ("first_seen", "asc"), ("top_model", "asc"), ("p95_latency_ms", "desc")):
        page, _ = await analytics.users(store, scope, analytics.Page(sort=sort, order=order, limit=50), now=NOW)
        out[f"users:{sort}"] = page
    out["totals"] = await analytics.user_totals(store, scope, now=NOW)
    out["by_plan"] = await analytics.breakdown(store, scope, "plan")
    out["by_model"] = await analytics.breakdown(store, scope, None)
    out["costs"] = await analytics.user_costs(store, scope)
    return json.loads(json.dumps(out, default=str))


def main(directory: Path) -> None:
    from usagegate import analytics
    from usagegate.store import QUERY_SETTINGS, Store

    QUERY_SETTINGS["max_threads"] = 1  # a fixed merge order of t-digest states (see detail_check)
    store = Store.open("embedded", directory)
    logged = rows()
    logged.append({**logged[0], "id": "00000000-0000-0000-0000-0000000000aa", "org": LATER_ORG, "at": t("2026-11-28 09:00")})
    logged.append({**logged[0], "id": "00000000-0000-0000-0000-0000000000ab", "org": LATER_ORG, "at": t("2026-11-20 09:00")})
    for i in range(0, len(logged), 400):
        insert(store, logged[i:i + 400])

    base = analytics.Scope(ORG, t("2026-10-20"), t("2026-11-27"))
    cases = {
        # (scope, expect a quiet tail)
        "31 days to tomorrow": (base, True),
        "month so far": (replace(base, start=t("2026-11-01")), True),
        "model filter": (replace(base, model="gpt-4o-mini"), True),
        "property filter": (replace(base, properties=(("plan", "pro"),)), True),
        "user search": (replace(base, q="I"), True),
        "ends at the clock": (replace(base, end=NOW + timedelta(minutes=2)), False),  # records may still come
        "starts mid-month": (replace(base, start=t("2026-11-03")), False),  # no monthly row to gain
        "records after the end": (replace(base, org=LATER_ORG), False),
    }

    async def run() -> dict[str, Any]:
        results: dict[str, Any] = {}
        for name, (scope, expected) in cases.items():
            quiet = await analytics.with_quiet_tail(store, scope, now=NOW)
            parts = analytics.segments(quiet.start, quiet.read_end())
            tiered, widened = await answers(store, scope), await answers(store, quiet)
            results[name] = {
                "quiet": quiet.quiet is not None, "expected": expected,
                "monthly": [str(p[1]) for p in parts if p[0] == "user_monthly"],
                "equal": tiered == widened, "users": len(tiered["users:user_id"]),
                "diff": [k for k in tiered if tiered[k] != widened[k]],
            }
        # What skipping a tail that holds records would do: the Nov 28 record would be counted.
        later = cases["records after the end"][0]
        forced = await answers(store, replace(later, quiet=(later.end, t("2026-12-01"))))
        results["forced"] = {"requests": forced["totals"]["totals"]["requests"],
                             "tiered": (await answers(store, later))["totals"]["totals"]["requests"]}
        return results

    out = asyncio.run(run())
    store.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
