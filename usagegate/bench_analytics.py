"""Analytics at scale: users-table and user-detail query times over N generated requests.

Rows are generated inside the store (`INSERT ... SELECT FROM numbers()`), so the materialized
views fill exactly as they do from the writer; 100k users over the last 30 days, three plans and
models, ~2% errors. Timings are the median of a few runs of the same calls the API makes, in this
process, with the store's capped `max_threads`. Reported, never asserted (shared machines vary).
"""

from __future__ import annotations

import asyncio
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from usagegate import analytics
from usagegate.api.users import recent_of
from usagegate.migrations import ROLLUPS
from usagegate.store import Store

ORG = "org_bench"
CHUNK = 1_000_000

_GENERATE = """
INSERT INTO requests (request_id, org_id, created_at, user_id, provider, model, request_model, method, path,
    status, rate_limited, stream, prompt_tokens, completion_tokens, cost_usd, usage_source, latency_ms, properties)
SELECT generateUUIDv4(number), {org:String},
    toDateTime64({end:DateTime64(3)}, 3, 'UTC') - toIntervalMillisecond(cityHash64(number, 1) % {span_ms:UInt64}),
    concat('user-', toString(u)), 'openai', m, m, 'POST', '/v1/chat/completions',
    if(cityHash64(number, 2) % 50 = 0, 500, 200), false, false, p, c,
    if(cityHash64(number, 2) % 50 = 0, toDecimal128(0, 9),
       toDecimal128(p * multiIf(m = 'gpt-4o-mini', 150, m = 'gpt-4.1-mini', 400, 800)
                    + c * multiIf(m = 'gpt-4o-mini', 600, m = 'gpt-4.1-mini', 1600, 4000), 9) / 1000000000),
    'provider', toUInt32(200 + cityHash64(number, 3) % 3000),
    map('plan', ['free', 'pro', 'enterprise'][1 + u % 3], 'feature', ['chat', 'search'][1 + number % 2])
FROM (
    SELECT number, (number + {offset:UInt64}) % {users:UInt64} AS u,
           ['gpt-4o-mini', 'gpt-4.1-mini', 'claude-3-5-haiku'][1 + u % 3] AS m,
           toUInt64(50 + cityHash64(number, 4) % 2000) AS p, toUInt64(20 + cityHash64(number, 5) % 600) AS c
    FROM numbers({offset:UInt64}, {count:UInt64})
)
"""


def generate(store: Store, rows: int, users: int, end: datetime, days: int = 30) -> float:
    """Insert `rows` requests for `users` users over `days` days before `end`; returns seconds."""
    started = time.perf_counter()
    for offset in range(0, rows, CHUNK):
        store.call(store.command, _GENERATE, {
            "org": ORG, "end": analytics.ch_time(end), "span_ms": days * 86_400_000, "users": users,
            "offset": offset, "count": min(CHUNK, rows - offset),
        })
    return time.perf_counter() - started


def compact(store: Store) -> float:
    """Merge each rollup to one part per partition; returns seconds. The generator inserts in
    1M-row bursts, and the background merges that `min_age_to_force_merge_seconds` forces
    (migrations.py) would do the same only minutes after the last insert; a running gateway's
    rollups are in this state except for the parts of its last few minutes."""
    started = time.perf_counter()
    for table, _, _ in ROLLUPS:
        store.call(store.command, f"OPTIMIZE TABLE {table} FINAL")
    return time.perf_counter() - started


def rollup_parts(store: Store) -> dict[str, int]:
    """Active parts per rollup (all partitions): each one is read separately."""
    rows = store.call(store.select, "SELECT table, count() AS n FROM system.parts WHERE active AND "
                      "database = currentDatabase() AND table IN ('user_hourly', 'user_daily', 'user_monthly') "
                      "GROUP BY table ORDER BY table")
    return {row["table"]: int(row["n"]) for row in rows}


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _median_ms(fn: Callable[[], Awaitable[Any]], runs: int) -> tuple[float, float]:
    """Median wall time and median CPU time (every thread of this process, chDB's included) in ms.
    On a shared machine the CPU time moves much less with other load than the wall time."""
    times, cpu = [], []
    for _ in range(runs):
        started, cpu_started = time.perf_counter(), _cpu_s()
        asyncio.run(fn())  # type: ignore[arg-type]
        times.append((time.perf_counter() - started) * 1000)
        cpu.append((_cpu_s() - cpu_started) * 1000)
    return round(statistics.median(times), 1), round(statistics.median(cpu), 1)


def measure(rows: int, users: int = 100_000, runs: int = 3, directory: Path | None = None,
            data: Path | None = None) -> dict[str, Any]:
    """Generate `rows` rows in a fresh embedded store and time the users table and user detail.
    With `data`, the store lives there and is generated only once (reused while the row count
    matches), since 10M rows take minutes to generate on a loaded machine."""
    root = data or Path(tempfile.mkdtemp(prefix="ug-bench-analytics-", dir=directory))
    try:
        store = Store.open("embedded", root)
        now = datetime.now(timezone.utc)
        have = store.call(store.select, "SELECT count() AS n FROM requests WHERE org_id = {org:String}", {"org": ORG})
        insert_s = compact_s = None
        if int(have[0]["n"]) != rows:
            if int(have[0]["n"]):
                raise SystemExit(f"{root} holds {have[0]['n']} bench rows, not {rows}: use another --data dir")
            insert_s = round(generate(store, rows, users, now), 1)
            compact_s = round(compact(store), 1)
        month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        scope = analytics.Scope(ORG, month, analytics.month_ceil(now))  # the default range
        one = replace(scope, user_id="user-42")

        async def users_page() -> None:
            await analytics.users_page(store, scope, analytics.Page(limit=100))

        async def user_detail() -> None:  # what GET /api/users/{id} runs
            await asyncio.gather(recent_of(store, ORG, "user-42", scope), analytics.user_detail(store, one, "day"))

        async def breakdown() -> None:
            await analytics.breakdown(store, scope, "plan")

        result: dict[str, Any] = {"rows": rows, "users": users, "insert_s": insert_s, "compact_s": compact_s}
        for name, fn in (("users_table", users_page), ("user_detail", user_detail), ("breakdown", breakdown)):
            result[f"{name}_ms"], result[f"{name}_cpu_ms"] = _median_ms(fn, runs)
        result |= {
            "rollup_rows": store.call(store.select, "SELECT count() AS n FROM user_daily")[0]["n"],
            "rollup_parts": rollup_parts(store),
            "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        }
        store.close()
        return result
    finally:
        if data is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m usagegate.bench_analytics",
                                     description="Time the users table and user detail over N generated requests.")
    parser.add_argument("rows", nargs="?", type=int, default=1_000_000, help="requests to generate (default 1M)")
    parser.add_argument("--users", type=int, default=100_000, help="distinct users (default 100k)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per query; the median is reported")
    parser.add_argument("--data", type=Path, default=None,
                        help="keep the store in this dir and reuse it on the next run (generated once)")
    args = parser.parse_args()
    print(json.dumps(measure(args.rows, args.users, args.runs, data=args.data)))
