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


def body_ttl_statements(days: int) -> list[str]:
    """Bodies expire after `days`; usage and metadata stay. Re-applied on every start."""
    return [
        f"ALTER TABLE requests MODIFY COLUMN {column} String CODEC(ZSTD(3)) "
        f"TTL toDateTime(created_at) + INTERVAL {int(days)} DAY"
        for column in ("request_body", "response_body")
    ]


# (name, statements). Append new steps; never edit an applied one.
MIGRATIONS: list[tuple[str, list[str]]] = [
    ("0001_requests", [REQUESTS_DDL]),
    ("0003_requests_ingested_at", [INGESTED_AT_DDL]),
]
