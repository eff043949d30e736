"""Checks that need chDB in a fresh process (one chDB data dir per process), run by the tests.

`python -m tests.chdb_check parse` reads a JSON list of SQL statements on stdin and prints a JSON
list: for each, null when ClickHouse's parser accepts it, else the parser's message.
`python -m tests.chdb_check server-insert <dir>` inserts one ingest batch into a fresh `requests`
table exactly as clickhouse-connect sends it to a server (its Arrow body, `FORMAT Arrow`), and
prints the stored row as JSON.
`python -m tests.chdb_check regranulate <dir>` builds the schema as it was before the monthly
rollup's granularity step, logs rows, runs the remaining steps (twice: a re-run after a crash) and
prints each rollup's totals and granularity before and after, as JSON.
`python -m tests.chdb_check compact <dir>` logs rows for many users into the whole schema, merges
each table into one part a month and prints each part's format and size as JSON.
`python -m tests.chdb_check readers <dir>` generates bench data in a fresh store, then answers the
same selects and analytics calls concurrently on the store's reader sessions (while the store
thread inserts another org's rows) and one at a time, and prints a JSON summary of both.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path


def parse() -> None:
    import chdb

    errors: list[str | None] = []
    for statement in json.load(sys.stdin):
        try:
            # As a parameter, so the {shard}/{replica} macros are not read as query parameters.
            # Parameter values are read in TSV escaping.
            escaped = statement.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")
            chdb.query("SELECT formatQuery({q:String})", "TSVRaw", params={"q": escaped})
            errors.append(None)
        except Exception as exc:
            errors.append(str(exc))
    print(json.dumps(errors))


def server_insert(directory: Path) -> None:
    from chdb.session import Session
    from clickhouse_connect.driver.client import arrow_buffer

    from usagegate.ingest import to_arrow
    from usagegate.migrations import MIGRATIONS
    from usagegate.pricing import Pricer

    session = Session(str(directory / "store"))
    for _, statements in MIGRATIONS:  # the whole schema: ingest writes columns added by later steps
        for statement in statements:
            session.query(statement)
    record = {
        "request_id": str(uuid.uuid4()), "org_id": "org", "created_at": int(time.time() * 1000), "user_id": "u1",
        "provider": "openai", "model": "gpt-4o-mini", "request_model": "gpt-4o-mini", "path": "/v1/chat/completions",
        "status": 200, "prompt_tokens": 1000, "completion_tokens": 500, "properties": {"plan": "pro"}, "ttft_ms": None,
    }
    names, body = arrow_buffer(to_arrow([record], Pricer(), lambda org, model: None), None)
    path = directory / "batch.arrow"
    path.write_bytes(body)
    # The server parses an HTTP insert body with this same input format.
    session.query(f"INSERT INTO requests ({', '.join(names)}) FROM INFILE '{path}' FORMAT Arrow")
    rows = session.query("SELECT request_id, cost_usd, properties, ttft_ms FROM requests", "JSONEachRow")
    print(json.dumps({"sent": record["request_id"], "stored": json.loads(rows.bytes().decode())}))


def readers(directory: Path) -> None:
    import asyncio
    import threading
    from dataclasses import replace
    from datetime import datetime, timezone

    from usagegate import analytics
    from usagegate.bench_analytics import _GENERATE, ORG, generate
    from usagegate.store import Store

    Store.RELEASE_MEMORY_SECONDS = 0.2  # purge often: answers must not change around purges
    store = Store.open("embedded", directory)
    now = datetime.now(timezone.utc)
    generate(store, 30_000, 300, now)
    users = [f"user-{i}" for i in range(0, 300, 7)]
    queries = [
        (table, "SELECT user_id, toString(sum(cost)) AS c, sum(requests) AS n FROM " + table +
         " WHERE org_id = {org:String} AND user_id = {user:String} GROUP BY user_id", {"org": ORG, "user": user})
        for user in users for table in ("user_daily", "user_hourly")
    ] + [
        ("requests", "SELECT count() AS n, toString(sum(cost_usd)) AS c, max(created_at) AS last FROM requests "
         "WHERE org_id = {org:String} AND user_id IN {ids:Array(String)} AND latency_ms > {lat:UInt32}",
         {"org": ORG, "ids": users[i:i + 5], "lat": 200 + 100 * i}) for i in range(len(users))
    ]
    serial = [store.call(store.select, sql, params) for _, sql, params in queries]
    month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    scope = analytics.Scope(ORG, month, analytics.month_ceil(now))

    def calls() -> list:
        out = [analytics.users(store, scope, analytics.Page(sort=sort, order=order, limit=25), now=now)
               for sort in ("cost_usd", "requests", "p95_latency_ms", "user_id") for order in ("asc", "desc")]
        out += [analytics.user_totals(store, scope, now=now), analytics.breakdown(store, scope, "plan"),
                analytics.breakdown(store, scope, None)]
        out += [analytics.user_detail(store, replace(scope, user_id=user), "day", now=now) for user in users[:8]]
        return out

    async def one_by_one() -> list:
        return [await call for call in calls()]

    async def all_at_once() -> list:
        return list(await asyncio.gather(*calls()))

    inserted = [0]

    def insert_elsewhere() -> None:  # the writer's work on the store thread meanwhile (another org)
        while inserted[0] < 20:
            store.call(store.command, _GENERATE, {
                "org": "org_other", "end": analytics.ch_time(now), "span_ms": 86_400_000, "users": 50,
                "offset": inserted[0] * 200, "count": 200})
            inserted[0] += 1

    expected = asyncio.run(one_by_one())
    writer = threading.Thread(target=insert_elsewhere)
    writer.start()
    mismatches = rounds = 0
    try:
        while rounds < 3 or (writer.is_alive() and rounds < 30):  # at least 3 rounds, and while it inserts
            rounds += 1
            async def both() -> tuple:
                return await asyncio.gather(asyncio.gather(*(store.query(sql, params) for _, sql, params in queries)),
                                            all_at_once())
            got_rows, got_calls = asyncio.run(both())
            mismatches += sum(1 for a, b in zip(got_rows, serial) if a != b)
            mismatches += sum(1 for a, b in zip(got_calls, expected) if a != b)
    finally:
        writer.join()
    deadline = time.monotonic() + 10
    while store.memory_releases < 2 and time.monotonic() < deadline:  # idle now: the releaser runs
        time.sleep(0.05)
    async def reread() -> list:
        return list(await asyncio.gather(*(store.query(sql, params) for _, sql, params in queries[:20])))

    after_release = asyncio.run(reread())
    mismatches += sum(1 for a, b in zip(after_release, serial) if a != b)
    reader_sessions = len(store._backend._reader_sessions)  # type: ignore[attr-defined]
    force_merge = {row["name"]: row["engine_full"].split("min_age_to_force_merge_seconds = ")[1].split(",")[0]
                   for row in store.call(store.select, "SELECT name, engine_full FROM system.tables WHERE "
                                         "database = currentDatabase() AND engine LIKE '%MergeTree' "
                                         "AND engine_full LIKE '%min_age_to_force_merge_seconds%'")}
    other = store.call(store.select, "SELECT count() AS n FROM requests WHERE org_id = 'org_other'")[0]["n"]
    seen = asyncio.run(store.query("SELECT count() AS n FROM requests WHERE org_id = 'org_other'"))[0]["n"]
    count = store.call(store.select, "SELECT count() AS n FROM requests")[0]["n"]
    store.close()
    again = Store.open("embedded", directory)  # close released every session: the dir opens again
    recount = asyncio.run(again.query("SELECT count() AS n FROM requests"))[0]["n"]
    again.close()
    print(json.dumps({
        "queries": len(queries), "calls": len(expected), "rounds": rounds, "mismatches": mismatches,
        "reader_sessions": reader_sessions, "readers": store._backend.readers, "other_inserted": inserted[0] * 200, "other_stored": other,
        "other_seen_by_reader": seen, "count": count, "count_after_reopen": recount,
        "nonempty": sum(1 for rows in serial if rows), "force_merge": force_merge,
        "memory_releases": store.memory_releases,
    }))


def regranulate(directory: Path) -> None:
    from chdb.session import Session

    from usagegate.migrations import MIGRATIONS, ROLLUPS

    session = Session(str(directory / "store"))
    names = [name for name, _ in MIGRATIONS]
    split = names.index("0008_user_monthly_granules")

    def run(steps: list[tuple[str, list[str]]]) -> None:
        for _, statements in steps:
            for statement in statements:
                session.query(statement)

    def state() -> dict[str, object]:
        out: dict[str, object] = {}
        for table, _, days in ROLLUPS:
            sql = (f"SELECT sum(requests), sum(cost), {'uniqExactMerge(days)' if days else '0'}, "
                   f"(SELECT extract(engine_full, 'index_granularity = \\d+') FROM system.tables "
                   f"WHERE database = currentDatabase() AND name = '{table}'), "
                   f"(SELECT extract(engine_full, 'min_age_to_force_merge_seconds = \\d+') FROM system.tables "
                   f"WHERE database = currentDatabase() AND name = '{table}') FROM {table}")
            out[table] = session.query(sql, "TSV").bytes().decode().strip()
        return out

    run(MIGRATIONS[:split])
    insert = ("INSERT INTO requests (request_id, org_id, created_at, user_id, model, status, latency_ms, cost_usd) "
              "SELECT generateUUIDv4(number), 'o', toDateTime64('2026-01-01 00:00:00', 3, 'UTC') + number * 3600, "
              "concat('u', toString(number % 7)), 'm', 200, 100 + number, toDecimal128(number, 9) / 1000 "
              "FROM numbers({n:UInt64})")
    session.query(insert, params={"n": 500})
    before = state()
    run(MIGRATIONS[split:])
    run(MIGRATIONS[split:])  # as after a crash before the step was recorded
    after = state()
    session.query(insert, params={"n": 3})  # the re-pointed view feeds the new table
    fed = state()
    print(json.dumps({"before": before, "after": after, "fed": fed}))


def compact(directory: Path) -> None:
    from chdb.session import Session

    from usagegate.migrations import MIGRATIONS

    session = Session(str(directory / "store"))
    for _, statements in MIGRATIONS:
        for statement in statements:
            session.query(statement)
    # One user per request: rollup parts as big as the raw one (past the 10 MB at which
    # ClickHouse's default makes a part wide).
    session.query("INSERT INTO requests (request_id, org_id, created_at, user_id, model, status, latency_ms, cost_usd, "
                  "properties) SELECT generateUUIDv4(number), 'o', toDateTime64('2026-01-01 00:00:00', 3, 'UTC') + number, "
                  "concat('user-', toString(number)), 'gpt-4o-mini', 200, 100 + number % 900, toDecimal128(number, 9) / 1000, "
                  "map('plan', 'pro') FROM numbers(120000)")
    for table in ("requests", "user_hourly", "user_daily", "user_monthly"):
        session.query(f"OPTIMIZE TABLE {table} FINAL")
    parts = session.query("SELECT table, part_type, rows, data_uncompressed_bytes AS bytes FROM system.parts "
                          "WHERE active AND database = currentDatabase() AND table != 'schema_migrations' ORDER BY table",
                          "JSONEachRow").bytes().decode()
    print(json.dumps([json.loads(line) for line in parts.splitlines()]))


if __name__ == "__main__":
    if sys.argv[1] == "parse":
        parse()
    elif sys.argv[1] == "compact":
        compact(Path(sys.argv[2]))
    elif sys.argv[1] == "regranulate":
        regranulate(Path(sys.argv[2]))
    elif sys.argv[1] == "readers":
        readers(Path(sys.argv[2]))
    else:
        server_insert(Path(sys.argv[2]))
