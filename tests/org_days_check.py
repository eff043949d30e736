"""`python -m tests.org_days_check <dir>`: a users page's `count`, `totals` and org-wide forecast
(`analytics.users_page`: the count from the page's own query, whole-org sums and the forecast's
daily costs from user_daily's org_days projection) equal an independent computation from the
logged records, over aligned, odd and quiet-tail ranges, later pages, a filter, a projection
materialized on parts written before it existed, and after a user is erased. Rows are
tests/detail_check.py's (several months and users, unpriced and rate-limited requests, several
insert parts, a second org). Prints a JSON summary."""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from tests.detail_check import ORG, insert, rows

UTC = timezone.utc
NOW = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)
PROMPT, COMPLETION = 100, 50  # what detail_check.insert logs for every record


def t(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def expected(records: list[dict[str, Any]], scope: Any) -> dict[str, Any]:
    """count, totals and forecast of `scope` (an org, a range, maybe a model) from the records."""
    from usagegate.analytics.detail import _ch_round
    from usagegate.forecast import month_forecast
    from usagegate.money import round_money

    mine = [r for r in records if r["org"] == scope.org and (scope.model is None or r["model"] == scope.model)]
    inside = [r for r in mine if scope.start <= r["at"] < scope.end]
    n = len(inside)
    cost = sum((Decimal(r["cost"] or 0) for r in inside), Decimal(0))
    users = {r["user"] for r in inside}
    today = NOW.date()
    daily: dict[date, Decimal] = {}
    for r in mine:
        if r["at"].date() <= today:
            daily[r["at"].date()] = daily.get(r["at"].date(), Decimal(0)) + Decimal(r["cost"] or 0)
    first = min((r["at"].date() for r in mine), default=None)
    return {"count": len(users), "totals": {
        "requests": n, "prompt_tokens": PROMPT * n, "completion_tokens": COMPLETION * n,
        "total_tokens": (PROMPT + COMPLETION) * n, "cost_usd": str(cost),
        "unpriced_requests": sum(r["cost"] is None for r in inside),
        "rate_limited": sum(r["limited"] for r in inside),
        "error_rate": round(sum(r["status"] >= 400 and not r["limited"] for r in inside) / n, 4) if n else None,
        "avg_latency_ms": _ch_round(sum(r["latency"] for r in inside) / n, 1) if n else None,
        "avg_cost_per_user": str(round_money(cost / len(users))) if users else None,
        "forecast_month_usd": str(month_forecast(daily, today, first) if first is not None else Decimal(0)),
    }}


def normal(summary: dict[str, Any]) -> dict[str, Any]:
    """Money as normalized text (Decimal("0.010") and "0.01" are the same amount)."""
    money = ("cost_usd", "avg_cost_per_user", "forecast_month_usd")
    totals = {k: str(Decimal(v).normalize()) if k in money and v is not None else v for k, v in summary["totals"].items()}
    return {"count": summary["count"], "totals": totals}


def main(directory: Path) -> None:
    from usagegate import analytics
    from usagegate.analytics.facts import org_days
    from usagegate.analytics.forecasts import DAY_COST
    from usagegate.analytics.users import DAY_SUMS
    from usagegate.migrations import ORG_DAYS_STEPS
    from usagegate.store import QUERY_SETTINGS, Store

    QUERY_SETTINGS["max_threads"] = 1
    store = Store.open("embedded", directory)
    logged = rows()
    for i in range(0, len(logged), 400):
        insert(store, logged[i:i + 400])

    base = analytics.Scope(ORG, t("2026-10-20"), t("2026-11-27"))
    scopes = {
        "31 days to tomorrow": base,
        "month": replace(base, start=t("2026-11-01"), end=t("2026-12-01")),
        "october": replace(base, start=t("2026-10-01"), end=t("2026-11-01")),
        "odd edges": replace(base, start=t("2026-09-14 05:17:03.250"), end=t("2026-11-24 17:42")),
        "inside one day": replace(base, start=t("2026-11-20 03:00"), end=t("2026-11-20 15:30")),
        "nothing": replace(base, start=t("2020-01-01"), end=t("2020-02-01")),
        "a model": replace(base, model="gpt-4.1-mini"),
    }
    out: dict[str, Any] = {"mismatches": [], "compared": 0}

    def check(name: str, got: dict[str, Any], want: dict[str, Any]) -> None:
        out["compared"] += 1
        if normal(got) != normal(want):
            out["mismatches"].append({"case": name, "got": normal(got), "want": normal(want)})

    async def compare_all(tag: str, records: list[dict[str, Any]]) -> None:
        for name, scope in scopes.items():
            quiet = await analytics.with_quiet_tail(store, scope, now=NOW)
            for label, s in ((name, scope), (f"{name} (quiet tail)", quiet)):
                for sort in ("cost_usd", "p95_latency_ms"):  # two phases, and one query
                    page = analytics.Page(sort=sort, limit=3)
                    got_rows, after, summary = await analytics.users_page(store, s, page, now=NOW)
                    check(f"{tag}: {label}, {sort}", summary, expected(records, scope))
                    alone, _ = await analytics.users(store, s, page, now=NOW)
                    if json.dumps(alone, default=str) != json.dumps(got_rows, default=str):
                        out["mismatches"].append({"case": f"{tag}: {label}, {sort}: page rows differ"})
                    if after is not None:  # the next page's count; a cursor past the last row
                        _, _, later = await analytics.users_page(store, s, replace(page, after=after), now=NOW)
                        check(f"{tag}: {label}, {sort}, page 2", later, expected(records, scope))
                        past = replace(page, after=("0" if sort == "cost_usd" else "-1", ""))
                        empty, _, beyond = await analytics.users_page(store, s, past, now=NOW)
                        check(f"{tag}: {label}, {sort}, past the end", beyond, expected(records, scope))
                        out.setdefault("past_rows", []).append(len(empty))
                totals = await analytics.user_totals(store, s, now=NOW)
                check(f"{tag}: {label}, user_totals", totals, expected(records, scope))

    async def projection_read() -> bool:
        """Whether both of our org_days reads (the totals' sums, the forecast's daily cost) read it."""
        read = []
        for columns in (DAY_SUMS, DAY_COST):
            sql = analytics.Sql()
            query = org_days(base, sql, t("2026-09-01"), t("2026-11-27"), columns)
            plan = await store.query(f"EXPLAIN {query}", sql.params)
            read.append(any("ReadFromMergeTree (org_days)" in row["explain"] for row in plan))
        return all(read)

    async def run() -> None:
        out["projection_read"] = await projection_read()
        await compare_all("fresh", logged)
        # A store from before migration 0009: its parts have no projection until the migration
        # materializes it. Dropped, then the migration's statements again.
        await store.acall(store.command, "ALTER TABLE user_daily DROP PROJECTION org_days SETTINGS mutations_sync = 2")
        out["projection_read_after_drop"] = await projection_read()
        await compare_all("no projection", logged)
        for statement in ORG_DAYS_STEPS:
            await store.acall(store.command, statement)
        for _ in range(200):  # MATERIALIZE runs as a background mutation
            pending = await store.query("SELECT count() AS n FROM system.mutations WHERE NOT is_done", {})
            if not pending[0]["n"]:
                break
            await asyncio.sleep(0.05)
        out["projection_read_after_migration"] = await projection_read()
        await compare_all("materialized", logged)
        # Erasing a user: the projection follows the rows the mutation deletes.
        await analytics.delete_user(store, ORG, "multi")
        kept = [r for r in logged if not (r["org"] == ORG and r["user"] == "multi")]
        await compare_all("erased", kept)
        # Re-pricing: costs updated in place, then the user's rollup rows rebuilt (delete, insert).
        await store.acall(store.command, "ALTER TABLE requests UPDATE cost_usd = cost_usd * 3 WHERE org_id = {o:String} "
                          "AND user_id = 'props' SETTINGS mutations_sync = 2", {"o": ORG})
        await store.acall(analytics.rebuild_user_rollups, store, ORG, ["props"])
        repriced = [{**r, "cost": str(Decimal(r["cost"]) * 3)} if r["org"] == ORG and r["user"] == "props" and r["cost"]
                    else r for r in kept]
        await compare_all("re-priced", repriced)

    asyncio.run(run())
    store.close()
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
