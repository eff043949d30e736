"""Ordered, named DDL steps for the log store, recorded in `schema_migrations`.

One dialect for chDB and a ClickHouse server. Every table an insert reaches (the raw table and
each materialized-view target) keeps a deduplication window, so replaying a spool batch with the
same `insert_deduplication_token` adds nothing anywhere (DESIGN §3).
"""

from __future__ import annotations

DEDUP_WINDOW = 100_000

REQUESTS_DDL = f"""
CREATE TABLE IF NOT EXISTS requests (
    request_id UUID,
    org_id LowCardinality(String),
    created_at DateTime64(3, 'UTC'),
    user_id String,
    provider LowCardinality(String),
    model LowCardinality(String),
    request_model LowCardinality(String),
    method LowCardinality(String),
    path String,
    status UInt16,
    rate_limited Bool,
    stream Bool,
    prompt_tokens UInt64,
    completion_tokens UInt64,
    cache_read_tokens UInt64,
    cache_write_tokens UInt64,
    cache_write_1h_tokens UInt64,
    reasoning_tokens UInt64,
    cost_usd Nullable(Decimal(38, 9)),
    usage_source LowCardinality(String),
    latency_ms UInt32,
    ttft_ms Nullable(UInt32),
    properties Map(String, String),
    session_id String,
    session_path String,
    session_name String,
    error String,
    request_body String CODEC(ZSTD(3)),
    response_body String CODEC(ZSTD(3))
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(created_at)
ORDER BY (org_id, user_id, created_at)
SETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW}
"""


# When the batch writer inserted the row (one value per batch, increasing): /api/requests pages
# read "rows ingested up to the first page's watermark", so traffic arriving while a client pages
# neither shifts nor joins its pages. Rows from before this column read as the epoch (always in).
INGESTED_AT_DDL = (
    "ALTER TABLE requests ADD COLUMN IF NOT EXISTS ingested_at DateTime64(6, 'UTC') "
    "DEFAULT toDateTime64(0, 6, 'UTC')"
)


def fsync_parts(table: str) -> str:
    """The writer advances its checkpoint once an insert returns, so the part must be on disk by
    then: ClickHouse does not fsync new parts by default, and a power cut would lose batches the
    checkpoint already counts as stored (~3 ms an insert here). Every table an insert reaches."""
    return f"ALTER TABLE {table} MODIFY SETTING fsync_after_insert = 1, fsync_part_directory = 1"


def body_ttl_statements(days: int) -> list[str]:
    """Bodies expire after `days`; usage and metadata stay. Re-applied on every start."""
    return [
        f"ALTER TABLE requests MODIFY COLUMN {column} String CODEC(ZSTD(3)) "
        f"TTL toDateTime(created_at) + INTERVAL {int(days)} DAY"
        for column in ("request_body", "response_body")
    ]


def rollup_ddl(table: str, *, days: bool = False) -> str:
    """A per-org, per-user, per-bucket (hour or day), per-model, per-property-set rollup.

    Keyed by the request's property set (`props_hash`) so property filters and breakdowns stay
    request-exact when read from the rollup. Column names differ from `requests`' on purpose:
    an alias equal to a source column inside an aggregate confuses ClickHouse's analyzer.
    """
    return f"""
CREATE TABLE IF NOT EXISTS {table} (
    org_id LowCardinality(String),
    user_id String,
    bucket DateTime('UTC'),
    model LowCardinality(String),
    props_hash UInt64,
    props SimpleAggregateFunction(any, Map(String, String)),
    requests SimpleAggregateFunction(sum, UInt64),
    errors SimpleAggregateFunction(sum, UInt64),
    limited SimpleAggregateFunction(sum, UInt64),
    prompt SimpleAggregateFunction(sum, UInt64),
    completion SimpleAggregateFunction(sum, UInt64),
    cost SimpleAggregateFunction(sum, Decimal(38, 9)),
    unpriced SimpleAggregateFunction(sum, UInt64),
    latency_sum SimpleAggregateFunction(sum, UInt64),
    latency_q AggregateFunction(quantileTDigest(0.95), UInt32),
    first_at SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_at SimpleAggregateFunction(max, DateTime64(3, 'UTC')){DAYS_COLUMN if days else ""}
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (org_id, user_id, bucket, model, props_hash)
SETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW}
"""


# The monthly rollup also keeps which days had traffic (active days cannot be read off a month).
DAYS_COLUMN = ",\n    days AggregateFunction(uniqExact, Date)"
DAYS_STATE = ",\n    uniqExactState(toDate(created_at)) AS days"


def rollup_select(bucket_fn: str, *, days: bool = False) -> str:
    # errors: status >= 400 except our own rate-limit refusals (counted apart, DESIGN §4).
    return f"""
SELECT
    org_id, user_id, {bucket_fn}(created_at) AS bucket, model,
    cityHash64(toString(mapSort(properties))) AS props_hash,
    any(properties) AS props,
    count() AS requests,
    countIf(status >= 400 AND NOT rate_limited) AS errors,
    countIf(rate_limited) AS limited,
    sum(prompt_tokens) AS prompt,
    sum(completion_tokens) AS completion,
    sum(ifNull(cost_usd, toDecimal128(0, 9))) AS cost,
    countIf(cost_usd IS NULL) AS unpriced,
    sum(latency_ms) AS latency_sum,
    quantileTDigestState(0.95)(latency_ms) AS latency_q,
    min(created_at) AS first_at,
    max(created_at) AS last_at{DAYS_STATE if days else ""}
FROM requests
GROUP BY org_id, user_id, bucket, model, props_hash
"""


def rollup_steps(table: str, bucket_fn: str, *, days: bool = False) -> list[str]:
    """Create the target, fill it from rows already logged, then attach the view (the writer
    is not running during migrations, so nothing slips between the fill and the view)."""
    select = rollup_select(bucket_fn, days=days)
    return [
        rollup_ddl(table, days=days),
        f"INSERT INTO {table} {select}",
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {table}_mv TO {table} AS {select}",
    ]


# (table, bucket function, has the `days` state)
ROLLUPS = (("user_hourly", "toStartOfHour", False), ("user_daily", "toStartOfDay", False),
           ("user_monthly", "toStartOfMonth", True))


def rollup_rebuild_statements(where: str) -> list[str]:
    """Recompute the rollup rows of the raw rows matching `where` (a condition on org_id and
    user_id, which key both), e.g. after costs were updated in place: an UPDATE mutation does
    not reach materialized views. Block deduplication is off for the re-insert, or a rebuild
    identical to an earlier one would be dropped as a duplicate after its rows were deleted."""
    statements = []
    for table, bucket_fn, days in ROLLUPS:
        statements.append(f"ALTER TABLE {table} DELETE WHERE {where} SETTINGS mutations_sync = 2")
        statements.append(
            f"INSERT INTO {table} SETTINGS insert_deduplicate = 0 "
            f"{rollup_select(bucket_fn, days=days).replace('FROM requests', f'FROM requests WHERE {where}')}"
        )
    return statements


# Seconds after which a rollup's parts are merged regardless of their size ratio. ClickHouse's
# merge selector otherwise leaves ~5-10 similar parts per partition, and an AggregatingMergeTree
# read pays for every unmerged row (10M requests: user_monthly held 5x, user_daily 2x the merged
# rows, docs/analytics.md). Forcing rewrites the partition's old parts each interval, so the
# bigger the table the rarer: the monthly rollup (read by every default-range query) is small.
FORCE_MERGE_SECONDS = {"user_monthly": 600, "user_daily": 3600, "user_hourly": 3 * 3600}


def force_merges(table: str) -> str:
    return f"ALTER TABLE {table} MODIFY SETTING min_age_to_force_merge_seconds = {FORCE_MERGE_SECONDS[table]}"


MONTHLY_GRANULARITY = 256
_COPY_SETTINGS = ("max_threads = 1, max_block_size = 8192, max_insert_block_size = 32768, "
                  "min_insert_block_size_rows = 32768, min_insert_block_size_bytes = 0")


def regranulate_steps(table: str, bucket_fn: str, granularity: int, *, days: bool = False) -> list[str]:
    """Rebuild a rollup with `index_granularity = granularity` (a table setting that cannot be
    altered). For `user_monthly` (~900 bytes a row, most of it t-digest and uniqExact states):
    a page of 100 scattered users decoded every 8192-row granule's states (phase 2 of the users
    table 123 -> 55 ms at 10M requests with 256, docs/analytics.md). Only the monthly rollup:
    the hourly and daily ones are 20-80x bigger, slower to copy, and read in long ranges.

    Migrations run before the batch writer starts, so nothing is inserted meanwhile. The order is
    safe to re-run from the top after a crash at any point: a leftover `{table}_next` is either a
    partial copy or (after the exchange) the old table, and `{table}` holds every row in both
    cases, so dropping it first and copying again loses nothing. EXCHANGE is atomic: `{table}`
    always exists. The view is re-created by name after the swap, so it writes to the new table.
    """
    scratch = f"{table}_next"
    settings = (f"index_granularity = {granularity}, fsync_after_insert = 1, fsync_part_directory = 1, "
                f"min_age_to_force_merge_seconds = {FORCE_MERGE_SECONDS[table]}, ")
    ddl = rollup_ddl(scratch, days=days).replace("SETTINGS ", f"SETTINGS {settings}", 1)
    return [
        f"DROP TABLE IF EXISTS {scratch} SYNC",
        ddl,
        # Deduplication off: the copy's blocks are not replays. Foreground on a cluster, so the
        # copy is in every shard's table before the exchange (not queued in the Distributed one).
        # Small blocks, one thread: aggregate states take several times their stored size in
        # memory, and the default 1M-row insert block made this copy peak at 1.4 GB RSS at 10M
        # requests (32k rows: ~0.5 GB; the extra parts are merged by the forced merges).
        f"INSERT INTO {scratch} SETTINGS insert_deduplicate = 0, insert_distributed_sync = 1, {_COPY_SETTINGS} "
        f"SELECT * FROM {table}",
        f"DROP VIEW IF EXISTS {table}_mv SYNC",
        f"EXCHANGE TABLES {table} AND {scratch}",
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {table}_mv TO {table} AS {rollup_select(bucket_fn, days=days)}",
        f"DROP TABLE IF EXISTS {scratch} SYNC",
    ]


# Per-org daily sums, kept by ClickHouse inside `user_daily`'s parts: a users page's org-wide
# forecast and totals read ~30 rows of it instead of every user's day (at 10M requests the
# forecast read 2.6M daily rows, ~120 ms of CPU; docs/analytics.md). A projection, not a table of its own, so
# erasing a user or rebuilding their rows (mutations) and merges keep it exact with no code of
# ours ('rebuild' recomputes it from the part); parts not yet materialized are read as before.
ORG_DAYS_STEPS = [
    "ALTER TABLE user_daily MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild', "
    "lightweight_mutation_projection_mode = 'rebuild'",
    "ALTER TABLE user_daily ADD PROJECTION IF NOT EXISTS org_days (SELECT org_id, bucket, sum(requests), "
    "sum(prompt), sum(completion), sum(cost), sum(unpriced), sum(errors), sum(limited), sum(latency_sum) "
    "GROUP BY org_id, bucket)",
    "ALTER TABLE user_daily MATERIALIZE PROJECTION org_days",
]

# Hourly and daily rollup parts of every size in the compact format: one data file a part, not
# one a column. A store query pays a fixed cost for each column of each part it reads, ~0.55 ms
# in a wide part: compact ones cut the user detail's fact read 15.0 -> 11.5 ms at 10M requests
# (docs/analytics.md). These rollups are only ever inserted, merged and deleted from, which
# rewrite a whole part in either format. ClickHouse never merges a wide part into a compact one,
# so an existing store's months keep their wide parts; months begun after this step are compact.
# Not `user_monthly`: the users table scans it whole, and its 256-row granules made compact parts
# slower there (this month's page 97-109 -> 125-128 ms). Not `requests`: re-pricing updates one
# column in place, and bodies stay out of the way.
COMPACT_PART_BYTES = 1 << 40


def compact_parts(table: str) -> str:
    return f"ALTER TABLE {table} MODIFY SETTING min_bytes_for_wide_part = {COMPACT_PART_BYTES}"


# (name, statements). Append new steps; never edit an applied one.
MIGRATIONS: list[tuple[str, list[str]]] = [
    ("0001_requests", [REQUESTS_DDL]),
    ("0003_requests_ingested_at", [INGESTED_AT_DDL]),
    ("0004_user_rollups", rollup_steps("user_hourly", "toStartOfHour") + rollup_steps("user_daily", "toStartOfDay")),
    ("0005_fsync_parts", [fsync_parts(t) for t in ("requests", "user_hourly", "user_daily")]),
    # Whole months (the default range) from ~1 row per user, model and property set.
    ("0006_user_monthly", rollup_steps("user_monthly", "toStartOfMonth", days=True) + [fsync_parts("user_monthly")]),
    ("0007_rollup_force_merges", [force_merges(t) for t, _, _ in ROLLUPS]),
    ("0008_user_monthly_granules", regranulate_steps("user_monthly", "toStartOfMonth", MONTHLY_GRANULARITY, days=True)),
    ("0009_org_days", ORG_DAYS_STEPS),
    ("0010_compact_rollup_parts", [compact_parts("user_hourly"), compact_parts("user_daily")]),
]
