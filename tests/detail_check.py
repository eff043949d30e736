"""`python -m tests.detail_check <dir>`: analytics.user_detail against the independent queries it
replaced, on logged rows chosen so the answers could differ (run in a fresh process: one chDB
data dir per process). Prints a JSON summary.

user_detail sums one fetch of the user's fact rows in Python and asks the store only for the p95;
the oracle is the SQL it replaced: the users table's one-query row (`_users_one_query` with its
latest properties and forecast), `series`, `cost_by_model`, `cost_by_property`, `user_forecasts`
and `user_exists`. The rows: several months (p95 across monthly states, several insert parts),
tied top models, a plan that changes over time, one request, errors only, ratios that round
on a tie, users first seen days ago, only before the forecast window, or long ago and again days
ago, an odd user id and the anonymous user; compared over month, non-month, hour-aligned and odd ranges, filters, and `now`s early and
late in a month and after the range.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

ORG = "o1"
USERS = ["one", "errs", "tie", "props", "multi", "new", "gap", "old", "ratio", "wé/ird ☃", "", "nobody"]
T = datetime(2026, 11, 25, 18, 0, tzinfo=timezone.utc)


def rows() -> list[dict[str, Any]]:
    rnd = random.Random(7)
    out: list[dict[str, Any]] = []

    def add(user: str, when: datetime, *, model: str = "gpt-4o-mini", status: int = 200, cost: str | None = "0.001",
            latency: int = 500, props: dict[str, str] | None = None, limited: bool = False, org: str = ORG) -> None:
        out.append({"id": str(uuid.UUID(int=rnd.getrandbits(128))), "org": org, "at": when, "user": user,
                    "model": model, "status": status, "limited": limited, "cost": cost, "latency": latency,
                    "props": props if props is not None else {"plan": "free"}})

    add("one", T - timedelta(days=2, hours=3))
    for i in range(3):
        add("errs", T - timedelta(days=i, minutes=7), status=500, cost="0" if i else None)
    for model, n in (("a-model", 2), ("b-model", 2), ("c-model", 1)):  # b wins the (requests, model) tie
        for i in range(n):
            add("tie", T - timedelta(days=i, hours=1), model=model, cost="0.002")
    for i in range(40):  # plan free -> pro; a feature that rotates
        add("props", T - timedelta(days=40 - i, minutes=i), cost=str(Decimal(i + 1) / 10_000),
            props={"plan": "free" if i < 20 else "pro", "feature": ["chat", "search", "x"][i % 3]})
    start = datetime(2026, 9, 1, tzinfo=timezone.utc)
    for _ in range(1500):  # three months, three models, wide latencies, some unpriced, errors, limits
        add("multi", start + timedelta(minutes=rnd.randrange(86 * 24 * 60), milliseconds=rnd.randrange(60_000)),
            model=rnd.choice(["gpt-4o-mini", "gpt-4.1-mini", "claude-3-5-haiku"]),
            latency=rnd.randrange(50, 20_000) if rnd.random() < 0.9 else rnd.randrange(20_000, 90_000),
            cost=None if rnd.random() < 0.01 else str(Decimal(rnd.randrange(1, 10**7)) / 10**9),
            props={"plan": rnd.choice(["free", "pro"]), "feature": rnd.choice("abcd")},
            status=rnd.choice([200] * 20 + [400, 500]), limited=rnd.random() < 0.02)
    for i in range(5):
        add("new", T - timedelta(days=i % 3, hours=i))
    for i in range(4):  # first seen long ago, then again only in the last days
        add("gap", T - timedelta(days=80 if i == 0 else i, hours=2))
    for i in range(160):  # 8 ms over 160 requests, 1 error: ratios on a rounding tie (0.05, 0.00625)
        add("ratio", T - timedelta(hours=i), latency=1 if i < 8 else 0, status=500 if i == 0 else 200,
            props={"plan": "pro"}, limited=i == 1)
    for i in range(5):
        add("old", datetime(2026, 9, 10 + i, 12, tzinfo=timezone.utc))
    for i in range(7):
        add("wé/ird ☃", T - timedelta(days=i * 5, minutes=3), cost="0.000000003")
    for i in range(4):
        add("", T - timedelta(days=i * 9))
    for i in range(20):
        add("one", T - timedelta(days=i), org="o2")  # another org's user of the same name
    rnd.shuffle(out)
    return out


def insert(store: Any, batch: list[dict[str, Any]]) -> None:
    import pyarrow as pa

    table = pa.table({
        "request_id": [r["id"] for r in batch], "org_id": [r["org"] for r in batch],
        "created_at": pa.array([r["at"] for r in batch], pa.timestamp("ms", tz="UTC")),
        "user_id": [r["user"] for r in batch], "provider": ["openai"] * len(batch),
        "model": [r["model"] for r in batch], "request_model": [r["model"] for r in batch],
        "path": ["/v1/chat/completions"] * len(batch), "status": pa.array([r["status"] for r in batch], pa.uint16()),
        "rate_limited": [r["limited"] for r in batch], "prompt_tokens": pa.array([100] * len(batch), pa.uint64()),
        "completion_tokens": pa.array([50] * len(batch), pa.uint64()),
        "cost_usd": pa.array([None if r["cost"] is None else Decimal(r["cost"]) for r in batch], pa.decimal128(38, 9)),
        "latency_ms": pa.array([r["latency"] for r in batch], pa.uint32()),
        "properties": pa.array([list(r["props"].items()) for r in batch], pa.map_(pa.string(), pa.string())),
    })
    store.call(store.insert_arrow, "requests", table, str(uuid.uuid4()))


def money_values(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """SQL rows with their money text as Decimals (the detail sums Decimals in Python)."""
    return [{**item, "cost_usd": Decimal(item["cost_usd"])} for item in items]


def main(directory: Path) -> None:
    from usagegate import analytics
    from usagegate.analytics.users import _users_one_query
    from usagegate.store import QUERY_SETTINGS, Store

    # One thread per query: the order in which t-digest states merge is then fixed, and a p95
    # merged from many states is exactly reproducible (with 2 threads it may vary in the last
    # digits from one run to the next, in the users table as in the detail).
    QUERY_SETTINGS["max_threads"] = 1
    store = Store.open("embedded", directory)
    logged = rows()
    for i in range(0, len(logged), 400):  # several inserts: several parts, unmerged rollup states
        insert(store, logged[i:i + 400])

    queries = [0]
    query = store.query

    async def counted(sql: str, params: Any = None) -> list[dict[str, Any]]:
        queries[0] += 1
        return await query(sql, params)

    utc = timezone.utc
    late, early, after = (datetime(2026, 11, 26, 0, 30, tzinfo=utc), datetime(2026, 11, 5, 10, tzinfo=utc),
                          datetime(2026, 12, 3, 8, tzinfo=utc))
    november = analytics.Scope(ORG, datetime(2026, 11, 1, tzinfo=utc), datetime(2026, 12, 1, tzinfo=utc))
    october = replace(november, start=datetime(2026, 10, 1, tzinfo=utc), end=datetime(2026, 11, 1, tzinfo=utc))
    # (now, range): late in the month (the forecast window inside the range), early (the window
    # starts in the month before), after the range (the window after it), odd and long ranges.
    cases = [
        (late, november), (late, october), (late, replace(november, model="gpt-4o-mini")),
        (late, replace(november, properties=(("plan", "pro"),))),
        (late, replace(november, start=late - timedelta(days=7, minutes=17, milliseconds=3), end=late - timedelta(hours=3, minutes=5))),
        (late, replace(november, start=datetime(2026, 9, 3, 5, tzinfo=utc), end=datetime(2026, 11, 24, 17, tzinfo=utc))),
        (early, replace(november, end=datetime(2026, 12, 1, tzinfo=utc))), (after, november),
    ]

    async def one_case(now: datetime, scope: analytics.Scope, user: str, interval: str) -> dict[str, Any] | None:
        one = replace(scope, user_id=user)
        got, found, (rows_, _, _) = await asyncio.gather(
            analytics.user_detail(store, one, interval, now=now), analytics.user_exists(store, ORG, user),
            _users_one_query(store, one, analytics.Page(limit=1), now=now))
        if rows_:
            row = rows_[0]
        else:
            row = analytics.empty_user_row(user)
            forecasts = await analytics.user_forecasts(store, replace(one, user_ids=(user,)), now=now)
            row["forecast_month_usd"] = forecasts.get(user, Decimal(0))
        series, by_model, by_property = await asyncio.gather(
            analytics.series(store, one, interval), analytics.cost_by_model(store, one),
            analytics.cost_by_property(store, one))
        expected = {
            "exists": found,
            # repr: Decimal text ("1.5" vs "1.50") and int vs float count too.
            "row": repr(sorted(row.items())), "series": money_values(series),
            "cost_by_model": money_values(by_model), "cost_by_property": money_values(by_property),
        }
        actual = {"exists": got.exists, "row": repr(sorted(got.row.items())), "series": got.series,
                  "cost_by_model": got.cost_by_model, "cost_by_property": got.cost_by_property}
        if actual == expected:
            return None
        return {"now": str(now), "scope": str(scope), "user": user, "interval": interval,
                "diff": {k: [expected[k], actual[k]] for k in expected if expected[k] != actual[k]}}

    async def queries_of(now: datetime, scope: analytics.Scope, user: str) -> int:
        store.query = counted  # type: ignore[method-assign]
        queries[0] = 0
        try:
            await analytics.user_detail(store, replace(scope, user_id=user), "day", now=now)
        finally:
            store.query = query  # type: ignore[method-assign]
        return queries[0]

    async def compare() -> dict[str, Any]:
        found = []
        for now, scope in cases:  # the users of a case concurrently, on the store's readers
            found += await asyncio.gather(*(one_case(now, scope, user, "hour" if n % 2 else "day")
                                            for n, user in enumerate(USERS)))
        mismatches = [m for m in found if m is not None]
        samples = {user: (await analytics.user_detail(store, replace(november, user_id=user), "day", now=late)).row
                   for user in ("tie", "errs", "one", "props", "ratio")}
        return {
            "compared": len(found), "mismatches": mismatches[:5], "mismatch_count": len(mismatches),
            # store queries per detail: a user active in the forecast window; one first seen
            # inside it (is there anything earlier?); one without rows in range or window; unknown.
            "queries": {"active": await queries_of(late, november, "multi"), "new": await queries_of(late, november, "new"),
                        "gap": await queries_of(late, november, "gap"),
                        "idle": await queries_of(late, november, "old"), "unknown": await queries_of(late, november, "nobody")},
            "samples": json.loads(json.dumps(samples, default=str)),
        }

    out = asyncio.run(compare())
    store.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
