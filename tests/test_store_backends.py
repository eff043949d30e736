"""Store URLs, the server backend's insert payload, and the cluster DDL (parsed by ClickHouse's parser)."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from usagegate.cluster import created_tables, schema_migrations_ddl, to_cluster
from usagegate.errors import ConfigError
from usagegate.migrations import MIGRATIONS, body_ttl_statements
from usagegate.settings import settings_from
from usagegate.store import backend_for

# A rollup as migrations.py writes them, so the view rewrite is covered whatever MIGRATIONS holds.
ROLLUP = [
    "CREATE TABLE IF NOT EXISTS user_daily (org_id String, user_id String, bucket DateTime('UTC'), "
    "cost SimpleAggregateFunction(sum, Decimal(38, 9))) ENGINE = AggregatingMergeTree "
    "PARTITION BY toYYYYMM(bucket) ORDER BY (org_id, user_id, bucket) SETTINGS non_replicated_deduplication_window = 100",
    "INSERT INTO user_daily SELECT org_id, user_id, toStartOfDay(created_at) AS bucket, sum(cost_usd) FROM requests "
    "GROUP BY org_id, user_id, bucket",
    "CREATE MATERIALIZED VIEW IF NOT EXISTS user_daily_mv TO user_daily AS SELECT org_id, user_id, "
    "toStartOfDay(created_at) AS bucket, sum(ifNull(cost_usd, 0)) AS cost, extract(hour FROM created_at) AS h "
    "FROM requests GROUP BY org_id, user_id, bucket",
]


def _chdb(*args: str, stdin: str = "") -> str:
    done = subprocess.run([sys.executable, "-m", "tests.chdb_check", *args], input=stdin, capture_output=True,
                          text=True, timeout=120, check=True)
    return done.stdout


def test_cluster_ddl_is_valid_clickhouse_sql() -> None:
    schema = [s for _, steps in MIGRATIONS for s in steps] + ROLLUP
    tables = created_tables(schema)
    assert {"requests", "user_daily"} <= tables
    statements = [schema_migrations_ddl("prod")]
    for statement in schema + body_ttl_statements(30) + ["DELETE FROM requests WHERE user_id = {u:String}"]:
        statements += to_cluster(statement, "prod", tables)
    errors = json.loads(_chdb("parse", stdin=json.dumps(statements)))
    assert errors == [None] * len(statements), [(s[:120], e) for s, e in zip(statements, errors) if e]
    text = "\n".join(statements)
    # Every MergeTree is replicated, each table has a Distributed twin, views read the local shard.
    assert " MergeTree" not in text.replace("ReplicatedMergeTree", "")
    assert "ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/requests_local', '{replica}')" in text
    assert "ReplicatedAggregatingMergeTree(" in text and "replicated_deduplication_window" in text
    assert "ENGINE = Distributed(prod, currentDatabase(), requests_local, cityHash64(org_id, user_id))" in text
    assert "TO user_daily_local AS" in text and "FROM requests_local" in text
    assert "extract(hour FROM created_at)" in text  # not a table: untouched
    assert "ALTER TABLE requests_local ON CLUSTER prod MODIFY COLUMN request_body" in text
    # The monthly rollup's rebuild swaps and drops every shard's tables, not only the Distributed ones.
    assert "EXCHANGE TABLES user_monthly_local AND user_monthly_next_local ON CLUSTER prod" in text
    assert "DROP TABLE IF EXISTS user_monthly_next_local ON CLUSTER prod SYNC" in text
    assert "DROP VIEW IF EXISTS user_monthly_mv ON CLUSTER prod SYNC" in text
    assert "index_granularity = 256" in text and "DROP VIEW IF EXISTS user_monthly_mv_local" not in text


def test_a_broken_statement_is_caught_by_the_parser() -> None:
    assert json.loads(_chdb("parse", stdin=json.dumps(["CREATE TABLE t ENGIN = x"])))[0]


def test_monthly_rollup_is_rebuilt_with_small_granules_keeping_its_rows(tmp_path: Path) -> None:
    out = json.loads(_chdb("regranulate", str(tmp_path)))
    for table in ("user_hourly", "user_daily", "user_monthly"):
        before, after, fed = (out[k][table].split("\t") for k in ("before", "after", "fed"))
        granules = "index_granularity = 256" if table == "user_monthly" else "index_granularity = 8192"
        assert before[3] == "index_granularity = 8192" and after[3] == granules, table
        assert after[:3] == before[:3], table  # every row copied once, even when the step runs twice
        assert after[4] == before[4] != "", table  # the forced merges (0007) survive the rebuild
        assert int(before[0]) == 500 and int(fed[0]) == 503, table
    assert out["after"]["user_monthly"].split("\t")[2] == "21"  # active days (500 hours from Jan 1)


def test_hourly_and_daily_rollup_parts_stay_compact_at_any_size(tmp_path: Path) -> None:
    parts = {p["table"]: p for p in json.loads(_chdb("compact", str(tmp_path)))}
    assert set(parts) == {"requests", "user_hourly", "user_daily", "user_monthly"}
    for table, kind in (("user_hourly", "Compact"), ("user_daily", "Compact"), ("user_monthly", "Wide"), ("requests", "Wide")):
        # One part per table, bigger than the size at which a part turns wide by default.
        assert parts[table]["rows"] == 120_000 and int(parts[table]["bytes"]) > 10 << 20, parts[table]
        assert parts[table]["part_type"] == kind, parts[table]


def test_server_insert_payload_lands_in_the_requests_table(tmp_path: Path) -> None:
    out = json.loads(_chdb("server-insert", str(tmp_path)))
    (row,) = out["stored"] if isinstance(out["stored"], list) else [out["stored"]]
    assert row["request_id"] == out["sent"]
    assert Decimal(str(row["cost_usd"])) > 0 and row["properties"] == {"plan": "pro"} and row["ttft_ms"] is None


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("mysql://host/db", "use 'embedded'"),
        ("clickhouse:///db", "no host"),
        ("clickhouse://u:hunter2@host:notaport/db", "port"),
        ("clickhouse://host:8123/db?cluster=bad;name", "cluster name"),
    ],
    ids=["scheme", "no-host", "bad-port", "bad-cluster"],
)
def test_bad_store_urls_name_the_setting(tmp_path: Path, url: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        backend_for(url, tmp_path)
    assert "Setting 'store'" in info.value.message and needle in info.value.message
    assert "hunter2" not in info.value.message


def test_server_url_from_environment(tmp_path: Path) -> None:
    url = "clickhouse://default:pw@ch.internal:8123/usagegate?cluster=prod"
    settings = settings_from({"store": None}, environ={"USAGEGATE_STORE": url})
    assert settings.store == url
    backend = backend_for(settings.store, tmp_path)  # connects lazily: no server needed to build it
    assert backend.cluster == "prod"
