"""The log store: one ClickHouse dialect over chDB (embedded) or clickhouse-connect (server).

Inserts, commands and `call`s run on one dedicated store thread (the batch writer's ordering
relies on it), off the event loop so the proxy's latency stays flat while analytics run. Async
selects (`query`) run on a small reader pool when the backend has one: with chDB each reader
thread has its own session on the same data dir (chDB >= 4 runs queries of different sessions
in parallel and releases the GIL; one shared session serializes them), since a store query
costs ~5-15 ms of mostly single-threaded planning and a page issues several.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import threading
import time

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import pyarrow as pa

from usagegate.cluster import created_tables, schema_migrations_ddl, to_cluster, valid_cluster_name
from usagegate.errors import ConfigError, StoreUnavailable
from usagegate.flock import is_flocked
from usagegate.migrations import MIGRATIONS, body_ttl_statements

log = logging.getLogger("usagegate.store")

# Analytics must not starve the proxy of the second core (an unbounded query stalled the loop).
QUERY_SETTINGS = {
    "max_threads": 2,
    # Money leaves the store as exact decimal strings and counts as plain JSON numbers.
    "output_format_json_quote_decimals": 1,
    "output_format_json_quote_64bit_integers": 0,
}


class Store:
    """Open with `Store.open(url, data_dir)`; `url` is "embedded" or clickhouse://user:pass@host:port/db.

    The store may be down when the gateway starts (a ClickHouse server being restarted, or
    another process holding the embedded store's lock): `open` does not fail then. It keeps
    retrying the connection and the migrations in the background; until they succeed every
    call raises `StoreUnavailable` (analytics answer 503) while the proxy keeps spooling.
    """

    RETRY_SECONDS = 1.0
    # How often freed memory goes back to the OS (chDB keeps what queries, inserts and merges
    # freed: ~570 -> ~360 MB RSS after a burst of users pages at 10M requests, 41 ms a purge).
    RELEASE_MEMORY_SECONDS = 30.0

    def __init__(self, backend: _Backend, *, body_ttl_days: int = 30) -> None:
        self._backend = backend
        self._body_ttl_days = body_ttl_days
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._readers = (concurrent.futures.ThreadPoolExecutor(max_workers=backend.readers, thread_name_prefix="store-read")
                         if backend.readers else None)
        self.ready = False
        self.last_error = ""
        self._last_attempt = 0.0
        self._closing = threading.Event()
        self._retrier: threading.Thread | None = None
        self._reads = 0  # selects running on the readers
        self._reads_lock = threading.Lock()
        self.memory_releases = 0
        self._releaser: threading.Thread | None = None
        if self._readers is not None and backend.releases_memory:
            self._releaser = threading.Thread(target=self._release_loop, name="store-memory", daemon=True)
            self._releaser.start()

    @classmethod
    def open(cls, url: str, data_dir: Path, *, body_ttl_days: int = 30) -> Store:
        """Build the store and try to connect once; on failure keep retrying in the background.

        Raises ConfigError for a URL it cannot use (never for a store that is merely down).
        """
        store = cls(backend_for(url, data_dir), body_ttl_days=body_ttl_days)
        if not store.call(store._connect):
            log.warning("log store unavailable, retrying every %.0f s: %s", cls.RETRY_SECONDS, store.last_error)
            store._retrier = threading.Thread(target=store._retry_loop, name="store-connect", daemon=True)
            store._retrier.start()
        return store

    def _retry_loop(self) -> None:
        while not self.ready and not self._closing.wait(self.RETRY_SECONDS):
            try:
                if self.call(self._connect):
                    log.warning("log store available again")
            except RuntimeError:  # the executor shut down under us: the store is closing
                return

    def _connect(self) -> bool:
        """Connect and migrate (store thread). True when the store is ready."""
        if self.ready:
            return True
        self._last_attempt = time.monotonic()
        try:
            self._backend.connect()
            self._migrate(self._body_ttl_days)
        except Exception as exc:  # chDB and clickhouse-connect raise many unrelated types
            self.last_error = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else type(exc).__name__
            self._backend.disconnect()
            return False
        self.ready, self.last_error = True, ""
        return True

    def _require(self) -> None:
        """Raise StoreUnavailable unless connected (store thread); retries at most once a second."""
        if self.ready:
            return
        if time.monotonic() - self._last_attempt >= self.RETRY_SECONDS and self._connect():
            return
        raise StoreUnavailable(f"The log store is unavailable ({self.last_error}); requests are being spooled "
                               "and will be stored when it is back.")

    def _migrate(self, body_ttl_days: int) -> None:
        cluster = self._backend.cluster
        self._backend.command(schema_migrations_ddl(cluster))
        done = {row["name"] for row in self._backend.select("SELECT DISTINCT name FROM schema_migrations", {})}
        for name, statements in MIGRATIONS:
            if name in done:
                continue
            for statement in statements:
                self._command(statement)
            self._backend.command(
                "INSERT INTO schema_migrations VALUES ({n:String}, now())", {"n": name}
            )
        for statement in body_ttl_statements(body_ttl_days):
            self._command(statement)

    def _command(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        cluster = self._backend.cluster
        if cluster is None:
            self._backend.command(sql, params)
            return
        # On a cluster, DDL and mutations go to every shard's local tables (usagegate/cluster.py).
        tables = created_tables([s for _, steps in MIGRATIONS for s in steps])
        for statement in to_cluster(sql, cluster, tables):
            self._backend.command(statement, params)

    # -- running on the store thread ----------------------------------------------------------

    def call(self, fn: Any, *args: Any) -> Any:
        """Run fn(*args) on the store thread and wait (for non-async callers)."""
        return self._executor.submit(fn, *args).result()

    async def acall(self, fn: Any, *args: Any) -> Any:
        return await asyncio.wrap_future(self._executor.submit(fn, *args))

    def select(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Rows as dicts. Call from the store thread (or through `query`). Raises StoreUnavailable."""
        self._require()
        return self._backend.select(sql, params or {})

    def command(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        self._require()
        self._command(sql, params or {})

    def insert_arrow(self, table: str, data: pa.Table, token: str) -> None:
        """Insert one batch; idempotent per `token` (raw table and every rollup). Raises StoreUnavailable."""
        self._require()
        self._backend.insert_arrow(table, data, token)

    async def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Rows as dicts, on a reader thread when there is a pool (else the store thread)."""
        if self._readers is None:
            return await self.acall(self.select, sql, params)  # type: ignore[no-any-return]
        return await asyncio.wrap_future(self._readers.submit(self._read, sql, params))

    @property
    def reads_in_flight(self) -> int:
        """Selects running on the reader threads right now."""
        return self._reads

    def _read(self, sql: str, params: Mapping[str, Any] | None) -> list[dict[str, Any]]:
        """A select on a reader thread; until the store is ready, on the store thread (which
        owns connecting and its error)."""
        if not self.ready:
            return self.call(self.select, sql, params)  # type: ignore[no-any-return]
        with self._reads_lock:
            self._reads += 1
        try:
            return self._backend.read(sql, params or {})
        finally:
            with self._reads_lock:
                self._reads -= 1

    def _release_loop(self) -> None:
        """Every RELEASE_MEMORY_SECONDS, when no select is running, return freed memory to the
        OS on a reader thread (a purge during a page would hold one reader for ~40 ms)."""
        while not self._closing.wait(self.RELEASE_MEMORY_SECONDS):
            with self._reads_lock:
                busy = self._reads > 0
            if busy or not self.ready or self._readers is None:
                continue
            try:
                self._readers.submit(self._release_memory).result()
            except RuntimeError:  # the readers shut down: the store is closing
                return

    def _release_memory(self) -> None:
        try:
            self._backend.release_memory()
            self.memory_releases += 1
        except Exception as exc:  # never fatal: memory stays with the process until the next try
            log.warning("could not release memory: %s", exc)

    def close(self) -> None:
        self._closing.set()
        if self._retrier is not None:
            self._retrier.join(timeout=10)
        if self._releaser is not None:
            self._releaser.join(timeout=10)
        if self._readers is not None:
            self._readers.shutdown(wait=True)
        self._executor.shutdown(wait=True)
        self._backend.disconnect()


def backend_for(url: str, data_dir: Path) -> _Backend:
    """The backend a store URL names; raises ConfigError for anything else. Connects lazily."""
    if url in ("", "embedded", "chdb"):
        return _ChdbBackend(data_dir / "store")
    if url.startswith(("clickhouse://", "clickhouses://")):
        parsed = urlparse(url)
        if not parsed.hostname:
            raise ConfigError(f"Setting 'store' has value {_redact(url)!r}: the URL names no host.")
        try:
            parsed.port
        except ValueError:
            raise ConfigError(f"Setting 'store' has value {_redact(url)!r}: the port is not a number.") from None
        cluster = parse_qs(parsed.query).get("cluster", [None])[-1]
        if cluster is not None and not valid_cluster_name(cluster):
            raise ConfigError(f"Setting 'store' has value {_redact(url)!r}: {cluster!r} is not a cluster name.")
        return _ServerBackend(url, cluster)
    raise ConfigError(f"Setting 'store' has value {_redact(url)!r}: use 'embedded' or clickhouse://user:pass@host:8123/db.")


def _redact(url: str) -> str:
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@", 1)
    return url


class _Backend:
    """One connection to a store. `connect` may raise anything; `disconnect` never raises."""

    cluster: str | None = None  # a ClickHouse cluster name: DDL goes ON CLUSTER (usagegate/cluster.py)
    readers = 0  # reader threads for concurrent selects (`read`); 0 = every select on the store thread
    releases_memory = False  # `release_memory` returns freed memory to the OS

    def release_memory(self) -> None:
        """From a reader thread: give memory the engine has freed back to the OS."""

    def read(self, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """A select from a reader thread, concurrently with other reads and the store thread."""
        raise NotImplementedError

    def connect(self) -> None:
        raise NotImplementedError

    def disconnect(self) -> None:
        pass

    def select(self, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        raise NotImplementedError

    def command(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        raise NotImplementedError

    def insert_arrow(self, table: str, data: pa.Table, token: str) -> None:
        raise NotImplementedError

INSERT_SETTINGS = "insert_deduplicate = 1, deduplicate_blocks_in_dependent_materialized_views = 1"


class _ChdbBackend(_Backend):
    readers = 2  # one per core here; each query is mostly single-threaded (docs/analytics.md)
    releases_memory = True

    def release_memory(self) -> None:
        self._reader_session().query("SYSTEM JEMALLOC PURGE", "CSV")

    def __init__(self, path: Path) -> None:
        self._path = path
        self._session: Any = None
        self._local = threading.local()  # each reader thread's own session on the same data dir
        self._reader_sessions: list[Any] = []
        self._generation = 0  # bumped by disconnect: a reader's older session is closed
        self._lock = threading.Lock()

    def connect(self) -> None:
        if self._session is not None:
            return
        from chdb.session import Session  # imported here: it costs ~290 MB and is embedded-only

        self._path.mkdir(parents=True, exist_ok=True)
        try:
            self._session = Session(str(self._path))
        except Exception as exc:
            if is_flocked(self._path / "status"):
                raise StoreUnavailable(
                    f"another process holds the embedded store in {self._path} (one process can open it; "
                    "use --workers to serve from several processes)"
                ) from exc
            raise

    def select(self, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        return self._select(self._session, sql, params)

    def read(self, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        return self._select(self._reader_session(), sql, params)

    def _reader_session(self) -> Any:
        """This reader thread's own session (opened on first use)."""
        session = getattr(self._local, "session", None)
        if session is None or self._local.generation != self._generation:
            from chdb.session import Session

            with self._lock:  # opened only after `connect` (Store.ready), so the engine is up
                session = Session(str(self._path))
                self._reader_sessions.append(session)
                self._local.session, self._local.generation = session, self._generation
        return session

    @staticmethod
    def _select(session: Any, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        settings = ", ".join(f"{k} = {v}" for k, v in QUERY_SETTINGS.items())
        result = session.query(f"{sql} SETTINGS {settings}" if "SETTINGS" not in sql else sql,
                               "JSONEachRow", params=_chdb_params(params) or None)
        text = result.bytes() if hasattr(result, "bytes") else bytes(result)
        return [json.loads(line) for line in text.splitlines() if line]

    def command(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        self._session.query(sql, "CSV", params=_chdb_params(params) if params else None)

    def insert_arrow(self, table: str, data: pa.Table, token: str) -> None:
        columns = ", ".join(data.column_names)
        safe_token = token.replace("'", "")
        # chDB's Python() table function reads the Arrow table from this frame's local `data`.
        self._session.query(
            f"INSERT INTO {table} ({columns}) SETTINGS {INSERT_SETTINGS}, "
            f"insert_deduplication_token = '{safe_token}' SELECT {columns} FROM Python(data)"
        )

    def disconnect(self) -> None:
        with self._lock:
            readers, self._reader_sessions = self._reader_sessions, []
            self._generation += 1
        for session in readers:  # the main session last: closing the last one releases the data dir
            with contextlib.suppress(Exception):
                session.close()
        if self._session is not None:
            with contextlib.suppress(Exception):
                self._session.close()
            self._session = None


def _chdb_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """chDB takes parameters as text in ClickHouse's escaped format: a scalar string needs its
    backslashes and control characters escaped (a lone "\\" failed the query), and an array must
    be a ClickHouse literal (clickhouse-connect does both itself)."""
    out: dict[str, Any] = {}
    for name, value in params.items():
        if isinstance(value, (list, tuple)):
            out[name] = _array_literal(value)
        elif isinstance(value, str):
            out[name] = value.translate(_ESCAPES)
        else:
            out[name] = value
    return out


_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0"})


def _array_literal(values: list[Any] | tuple[Any, ...]) -> str:
    items = []
    for value in values:
        if isinstance(value, str):
            items.append("'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'")
        else:
            items.append(str(value))
    return "[" + ",".join(items) + "]"


class _ServerBackend(_Backend):
    """A ClickHouse server through clickhouse-connect; the SQL is the same as chDB's.

    Selects ask the server for JSONEachRow, exactly what the chDB backend parses, so both
    backends hand analytics identical rows (decimals as exact strings, times as text).
    """

    def __init__(self, url: str, cluster: str | None = None) -> None:
        self._url = url
        self.cluster = cluster
        self._client: Any = None
        self._insert_settings: dict[str, Any] = {
            "insert_deduplicate": 1, "deduplicate_blocks_in_dependent_materialized_views": 1,
        }
        if cluster is not None:
            # Insert into every shard before answering, so the dedup token reaches each shard's block.
            self._insert_settings["insert_distributed_sync"] = 1

    def connect(self) -> None:
        if self._client is not None:
            return
        import clickhouse_connect

        parsed = urlparse(self._url)
        try:
            self._client = clickhouse_connect.get_client(
                host=parsed.hostname or "127.0.0.1",
                port=parsed.port or (8443 if parsed.scheme == "clickhouses" else 8123),
                username=unquote(parsed.username or "default"),
                password=unquote(parsed.password or ""),
                database=(parsed.path or "/default").lstrip("/") or "default",
                secure=parsed.scheme == "clickhouses",
                settings=QUERY_SETTINGS,
                connect_timeout=5,
                send_receive_timeout=120,
                autogenerate_session_id=False,  # the store thread is the only user; no session lock
            )
        except Exception as exc:
            raise StoreUnavailable(f"cannot reach ClickHouse at {parsed.hostname}:{parsed.port}: {exc}") from exc

    def select(self, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        try:
            text = self._client.raw_query(sql, parameters=dict(params), fmt="JSONEachRow")
        except Exception as exc:  # clickhouse-connect raises several unrelated types
            raise StoreUnavailable(f"ClickHouse query failed: {exc}") from exc
        return [json.loads(line) for line in text.splitlines() if line]

    def command(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        try:
            self._client.command(sql, parameters=dict(params) if params else None)
        except Exception as exc:
            raise StoreUnavailable(f"ClickHouse command failed: {exc}") from exc

    def insert_arrow(self, table: str, data: pa.Table, token: str) -> None:
        try:
            self._client.insert_arrow(table, data, settings={**self._insert_settings, "insert_deduplication_token": token})
        except Exception as exc:
            raise StoreUnavailable(f"ClickHouse insert failed: {exc}") from exc

    def disconnect(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None
