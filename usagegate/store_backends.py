"""The store's two backends behind one interface: chDB in this process (`ChdbBackend`, the
embedded store) and a ClickHouse server through clickhouse-connect (`ServerBackend`). Both speak
the same SQL and hand back identical rows; `backend_for` picks one from the `store` setting.
`Store` (store.py) runs them on its threads.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import pyarrow as pa

from usagegate.cluster import valid_cluster_name
from usagegate.errors import ConfigError, StoreUnavailable
from usagegate.flock import is_flocked

# Analytics must not starve the proxy of the second core (an unbounded query stalled the loop).
QUERY_SETTINGS = {
    "max_threads": 2,
    # Money leaves the store as exact decimal strings and counts as plain JSON numbers.
    "output_format_json_quote_decimals": 1,
    "output_format_json_quote_64bit_integers": 0,
}


def backend_for(url: str, data_dir: Path) -> Backend:
    """The backend a store URL names; raises ConfigError for anything else. Connects lazily."""
    if url in ("", "embedded", "chdb"):
        return ChdbBackend(data_dir / "store")
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
        return ServerBackend(url, cluster)
    raise ConfigError(f"Setting 'store' has value {_redact(url)!r}: use 'embedded' or clickhouse://user:pass@host:8123/db.")


def _redact(url: str) -> str:
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@", 1)
    return url


class Backend:
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


class ChdbBackend(Backend):
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


class ServerBackend(Backend):
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
