"""The log store: one ClickHouse dialect over chDB (embedded) or clickhouse-connect (server).

Inserts, commands and `call`s run on one dedicated store thread (the batch writer's ordering
relies on it), off the event loop so the proxy's latency stays flat while analytics run. Async
selects (`query`) run on a small reader pool when the backend has one: with chDB each reader
thread has its own session on the same data dir (chDB >= 4 runs queries of different sessions
in parallel and releases the GIL; one shared session serializes them), since a store query
costs ~5-15 ms of mostly single-threaded planning and a page issues several. The backends
themselves are in store_backends.py.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from usagegate.cluster import created_tables, schema_migrations_ddl, to_cluster
from usagegate.errors import StoreUnavailable
from usagegate.migrations import MIGRATIONS, body_ttl_statements
from usagegate.store_backends import QUERY_SETTINGS, Backend, backend_for

__all__ = ["QUERY_SETTINGS", "Store", "backend_for"]

log = logging.getLogger("usagegate.store")


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

    def __init__(self, backend: Backend, *, body_ttl_days: int = 30) -> None:
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
