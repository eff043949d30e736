"""The same schema on a ClickHouse cluster: ReplicatedMergeTree shards behind Distributed tables.

`to_cluster(statement, cluster)` rewrites one statement of `migrations.py` (or a mutation the
analytics code issues) for a cluster, so there is still one module of DDL and one of queries:

- `CREATE TABLE t (...) ENGINE = XMergeTree ...` becomes `t_local ON CLUSTER` with
  `ReplicatedXMergeTree` (one copy per replica, replicated block deduplication), plus a
  `Distributed` table named `t` over it. The application keeps reading and writing `t`.
- Rows are sharded by `cityHash64(org_id, user_id)`: deterministic, so a replayed batch splits
  the same way and every shard drops its part as a duplicate; and one user's rows live on one
  shard, so per-user aggregates never straddle shards.
- `CREATE MATERIALIZED VIEW v TO r AS SELECT ... FROM requests` attaches to each shard's
  `requests_local` and writes `r_local`: rollups are filled shard by shard, next to their rows.
- `DROP TABLE IF EXISTS t` drops `t` and `t_local` ON CLUSTER; `EXCHANGE TABLES a AND b` swaps
  `a_local` and `b_local` ON CLUSTER (the Distributed tables keep reading their local by name).
- `ALTER TABLE t` / `DELETE FROM t` run `ON CLUSTER` against `t_local` (Distributed tables take
  neither); anything else (INSERT ... SELECT backfills through the Distributed tables) is kept.

docs/scaling.md shows the full output (`usagegate store-ddl --cluster NAME`).
"""

from __future__ import annotations

import re

ZK_PREFIX = "/clickhouse/tables/{shard}/{database}"
SHARDING_KEY = "cityHash64(org_id, user_id)"

_CREATE_TABLE = re.compile(r"^\s*CREATE TABLE IF NOT EXISTS (\w+)\s*\(", re.IGNORECASE)
_ENGINE = re.compile(r"ENGINE\s*=\s*(\w*MergeTree)\b(?:\(\s*\))?", re.IGNORECASE)
_MV = re.compile(r"^\s*CREATE MATERIALIZED VIEW IF NOT EXISTS (\w+) TO (\w+) AS\b", re.IGNORECASE)
_FROM = re.compile(r"\bFROM\s+(\w+)\b", re.IGNORECASE)
_ALTER = re.compile(r"^\s*ALTER TABLE (\w+)\b", re.IGNORECASE)
_ADD_COLUMN = re.compile(r"\bADD COLUMN\b", re.IGNORECASE)
_DELETE = re.compile(r"^\s*DELETE FROM (\w+)\b", re.IGNORECASE)
_DROP = re.compile(r"^\s*DROP (TABLE|VIEW) IF EXISTS (\w+)\b", re.IGNORECASE)
_EXCHANGE = re.compile(r"^\s*EXCHANGE TABLES (\w+) AND (\w+)\s*$", re.IGNORECASE)
_DEDUP = re.compile(r"non_replicated_deduplication_window", re.IGNORECASE)


def local(table: str) -> str:
    return f"{table}_local"


def created_tables(statements: list[str]) -> frozenset[str]:
    """The tables these statements create (the ones that get a `_local` twin)."""
    return frozenset(m.group(1) for s in statements if (m := _CREATE_TABLE.match(s)))


def to_cluster(statement: str, cluster: str, tables: frozenset[str] = frozenset({"requests"})) -> list[str]:
    """The statements that do on `cluster` what `statement` does on one server.

    `tables` are the schema's tables: a view's `FROM t` is pointed at `t_local` only for these
    (so `extract(hour FROM created_at)` inside a view stays untouched).
    """
    on = f"ON CLUSTER {_ident(cluster)}"
    create = _CREATE_TABLE.match(statement)
    if create and _ENGINE.search(statement):
        table = create.group(1)
        replicated = _CREATE_TABLE.sub(f"CREATE TABLE IF NOT EXISTS {local(table)} {on} (", statement, count=1)
        replicated = _ENGINE.sub(
            lambda m: f"ENGINE = Replicated{m.group(1)}('{ZK_PREFIX}/{local(table)}', '{{replica}}')",
            replicated, count=1,
        )
        replicated = _DEDUP.sub("replicated_deduplication_window", replicated)
        distributed = (
            f"CREATE TABLE IF NOT EXISTS {table} {on} AS {local(table)} "
            f"ENGINE = Distributed({_ident(cluster)}, currentDatabase(), {local(table)}, {SHARDING_KEY})"
        )
        return [replicated, distributed]
    view = _MV.match(statement)
    if view:
        name, target = view.groups()
        head = f"CREATE MATERIALIZED VIEW IF NOT EXISTS {name} {on} TO {local(target)} AS"
        body = _FROM.sub(
            lambda m: f"FROM {local(m.group(1))}" if m.group(1) in tables else m.group(0), statement[view.end():]
        )
        return [head + body]
    alter = _ALTER.match(statement)
    if alter:
        statements = [_ALTER.sub(f"ALTER TABLE {local(alter.group(1))} {on}", statement, count=1)]
        if _ADD_COLUMN.search(statement):
            # A Distributed table keeps its own column list: it needs the new column too.
            statements.append(_ALTER.sub(f"ALTER TABLE {alter.group(1)} {on}", statement, count=1))
        return statements
    drop = _DROP.match(statement)
    if drop:
        kind, name = drop.groups()
        rest = statement[drop.end():]
        statements = [f"DROP {kind} IF EXISTS {name} {on}{rest}"]
        if name in tables:  # the Distributed table first, then the shards' tables it reads
            statements.append(f"DROP {kind} IF EXISTS {local(name)} {on}{rest}")
        return statements
    exchange = _EXCHANGE.match(statement)
    if exchange and set(exchange.groups()) <= tables:
        # Swap the shards' tables; each Distributed table reads its local table by name, so it
        # now reads the other one (same columns). A local table keeps its replication path.
        first, second = exchange.groups()
        return [f"EXCHANGE TABLES {local(first)} AND {local(second)} {on}"]
    delete = _DELETE.match(statement)
    if delete:
        return [_DELETE.sub(f"DELETE FROM {local(delete.group(1))} {on}", statement, count=1)]
    return [statement]


def schema_migrations_ddl(cluster: str | None) -> str:
    """The table recording applied migrations: one copy on every node of a cluster."""
    if cluster is None:
        return ("CREATE TABLE IF NOT EXISTS schema_migrations (name String, applied_at DateTime) "
                "ENGINE = MergeTree ORDER BY name")
    # No {shard} in the path: every replica of every shard shares this one small table.
    return (f"CREATE TABLE IF NOT EXISTS schema_migrations ON CLUSTER {_ident(cluster)} "
            "(name String, applied_at DateTime) ENGINE = ReplicatedReplacingMergeTree("
            "'/clickhouse/tables/global/{database}/schema_migrations', '{shard}-{replica}') ORDER BY name")


def valid_cluster_name(name: str) -> bool:
    return re.fullmatch(r"[A-Za-z_][\w-]*", name) is not None


def _ident(name: str) -> str:
    if not valid_cluster_name(name):
        raise ValueError(f"not a cluster name: {name!r}")
    return f"`{name}`" if "-" in name else name
