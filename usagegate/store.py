"""The log store: one ClickHouse dialect over chDB (embedded) or clickhouse-connect (server).

Every call runs on one dedicated thread: chDB sessions are not thread-safe, and keeping
queries off the event loop keeps the proxy's latency flat while analytics run.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa

from usagegate.errors import ConfigError, StoreUnavailable
from usagegate.migrations import MIGRATIONS, body_ttl_statements

# Analytics must not starve the proxy of the second core (an unbounded query stalled the loop).
QUERY_SETTINGS = {
    "max_threads": 2,
    # Money leaves the store as exact decimal strings and counts as plain JSON numbers.
    "output_format_json_quote_decimals": 1,
    "output_format_json_quote_64bit_integers": 0,
}


class Store:
    """Open with `Store.open(url, data_dir)`; `url` is "embedded" or clickhouse://user:pass@host:port/db."""

    def __init__(self, backend: _Backend) -> None:
        self._backend = backend
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")

    @classmethod
    def open(cls, url: str, data_dir: Path, *, body_ttl_days: int = 30) -> Store:
        backend: _Backend
        if url in ("", "embedded", "chdb"):
            backend = _ChdbBackend(data_dir / "store")
        elif url.startswith(("clickhouse://", "clickhouses://")):
            backend = _ServerBackend(url)
        else:
            raise ConfigError(f"Setting 'store' has value {url!r}: use 'embedded' or clickhouse://user:pass@host:8123/db.")
        store = cls(backend)
        store.call(store._migrate, body_ttl_days)
        return store

    def _migrate(self, body_ttl_days: int) -> None:
        self._backend.command(
            "CREATE TABLE IF NOT EXISTS schema_migrations (name String, applied_at DateTime) "
            "ENGINE = MergeTree ORDER BY name"
        )
        done = {row["name"] for row in self._backend.select("SELECT name FROM schema_migrations", {})}
        for name, statements in MIGRATIONS:
            if name in done:
                continue
            for statement in statements:
                self._backend.command(statement)
            self._backend.command(
                "INSERT INTO schema_migrations VALUES ({n:String}, now())", {"n": name}
            )
        for statement in body_ttl_statements(body_ttl_days):
            self._backend.command(statement)

    # -- running on the store thread ----------------------------------------------------------

    def call(self, fn: Any, *args: Any) -> Any:
        """Run fn(*args) on the store thread and wait (for non-async callers)."""
        return self._executor.submit(fn, *args).result()

    async def acall(self, fn: Any, *args: Any) -> Any:
        return await asyncio.wrap_future(self._executor.submit(fn, *args))

    def select(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Rows as dicts. Call from the store thread (or through `query`)."""
        return self._backend.select(sql, params or {})

    def command(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        self._backend.command(sql, params or {})

    def insert_arrow(self, table: str, data: pa.Table, token: str) -> None:
        self._backend.insert_arrow(table, data, token)

    async def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        return await self.acall(self.select, sql, params)  # type: ignore[no-any-return]

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._backend.close()


class _Backend:
    def select(self, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        raise NotImplementedError

    def command(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        raise NotImplementedError

    def insert_arrow(self, table: str, data: pa.Table, token: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


INSERT_SETTINGS = "insert_deduplicate = 1, deduplicate_blocks_in_dependent_materialized_views = 1"


class _ChdbBackend(_Backend):
    def __init__(self, path: Path) -> None:
        from chdb.session import Session  # imported here: it costs ~290 MB and is embedded-only

        path.mkdir(parents=True, exist_ok=True)
        self._session = Session(str(path))

    def select(self, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        settings = ", ".join(f"{k} = {v}" for k, v in QUERY_SETTINGS.items())
        result = self._session.query(f"{sql} SETTINGS {settings}" if "SETTINGS" not in sql else sql,
                                     "JSONEachRow", params=dict(params) or None)
        text = result.bytes() if hasattr(result, "bytes") else bytes(result)
        return [json.loads(line) for line in text.splitlines() if line]

    def command(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        self._session.query(sql, "CSV", params=dict(params) if params else None)

    def insert_arrow(self, table: str, data: pa.Table, token: str) -> None:
        columns = ", ".join(data.column_names)
        safe_token = token.replace("'", "")
        # chDB's Python() table function reads the Arrow table from this frame's local `data`.
        self._session.query(
            f"INSERT INTO {table} ({columns}) SETTINGS {INSERT_SETTINGS}, "
            f"insert_deduplication_token = '{safe_token}' SELECT {columns} FROM Python(data)"
        )

    def close(self) -> None:
        self._session.close()


class _ServerBackend(_Backend):
    """A ClickHouse server through clickhouse-connect; the SQL is the same as chDB's."""

    def __init__(self, url: str) -> None:
        import clickhouse_connect

        parsed = urlparse(url)
        self._client = clickhouse_connect.get_client(
            host=parsed.hostname or "127.0.0.1",
            port=parsed.port or 8123,
            username=parsed.username or "default",
            password=parsed.password or "",
            database=(parsed.path or "/default").lstrip("/") or "default",
            secure=parsed.scheme == "clickhouses",
            settings=QUERY_SETTINGS,
        )

    def select(self, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        try:
            result = self._client.query(sql, parameters=dict(params), settings={"output_format_json_quote_64bit_integers": 0})
        except Exception as exc:  # clickhouse-connect raises several unrelated types
            raise StoreUnavailable(f"ClickHouse query failed: {exc}") from exc
        names = result.column_names
        return [dict(zip(names, row)) for row in result.result_rows]

    def command(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        try:
            self._client.command(sql, parameters=dict(params) if params else None)
        except Exception as exc:
            raise StoreUnavailable(f"ClickHouse command failed: {exc}") from exc

    def insert_arrow(self, table: str, data: pa.Table, token: str) -> None:
        try:
            self._client.insert_arrow(
                table, data,
                settings={"insert_deduplicate": 1, "insert_deduplication_token": token,
                          "deduplicate_blocks_in_dependent_materialized_views": 1},
            )
        except Exception as exc:
            raise StoreUnavailable(f"ClickHouse insert failed: {exc}") from exc

    def close(self) -> None:
        self._client.close()


