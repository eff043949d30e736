"""The SQLite config store (`config.db` in the data dir, WAL): orgs, hashed keys, prices, plans.

The CLI and a running gateway share it safely: SQLite serialises writers, WAL lets readers
go on, and `KeyRing` reloads when `PRAGMA data_version` says another connection committed.
Migrations are named steps recorded in `migrations`; later features append steps.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

MIGRATIONS: tuple[tuple[str, str], ...] = (
    (
        "0001_orgs_keys",
        """
        CREATE TABLE orgs (id TEXT PRIMARY KEY, name TEXT UNIQUE NOT NULL, created_at REAL NOT NULL);
        CREATE TABLE keys (
            id TEXT PRIMARY KEY, org_id TEXT NOT NULL REFERENCES orgs(id), key_hash TEXT UNIQUE NOT NULL,
            prefix TEXT NOT NULL, created_at REAL NOT NULL, revoked_at REAL
        );
        """,
    ),
    (
        "0002_prices_plans",
        """
        CREATE TABLE prices (
            org_id TEXT NOT NULL, model TEXT NOT NULL, input_mtok TEXT NOT NULL, output_mtok TEXT NOT NULL,
            cache_read_mtok TEXT, cache_write_mtok TEXT, updated_at REAL NOT NULL, PRIMARY KEY (org_id, model)
        );
        CREATE TABLE plans (org_id TEXT PRIMARY KEY, property TEXT NOT NULL, revenue_json TEXT NOT NULL);
        """,
    ),
    (
        "0003_limits",
        """
        CREATE TABLE limits (
            org_id TEXT NOT NULL, scope TEXT NOT NULL CHECK (scope IN ('user', 'plan')), name TEXT NOT NULL,
            budget_usd TEXT, period TEXT CHECK (period IN ('day', 'month')), requests_per_minute INTEGER,
            updated_at REAL NOT NULL, PRIMARY KEY (org_id, scope, name)
        );
        """,
    ),
    (
        "0004_alerts_user_tokens",
        """
        CREATE TABLE alert_rules (
            id TEXT PRIMARY KEY, org_id TEXT NOT NULL, kind TEXT NOT NULL CHECK (kind IN ('user_cost_over', 'anomaly')),
            threshold_usd TEXT, window_seconds INTEGER NOT NULL, webhook_url TEXT NOT NULL, secret TEXT NOT NULL,
            created_at REAL NOT NULL
        );
        CREATE INDEX alert_rules_org ON alert_rules (org_id);
        CREATE TABLE alert_deliveries (
            id TEXT PRIMARY KEY, rule_id TEXT NOT NULL, org_id TEXT NOT NULL, user_id TEXT NOT NULL,
            window_key TEXT NOT NULL, payload TEXT NOT NULL, status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL NOT NULL, claimed_until REAL NOT NULL DEFAULT 0,
            response_status INTEGER, last_error TEXT, created_at REAL NOT NULL, delivered_at REAL,
            UNIQUE (rule_id, user_id, window_key)
        );
        CREATE INDEX alert_deliveries_due ON alert_deliveries (status, next_attempt_at);
        CREATE TABLE user_tokens (
            id TEXT PRIMARY KEY, org_id TEXT NOT NULL, user_id TEXT NOT NULL, token_hash TEXT UNIQUE NOT NULL,
            prefix TEXT NOT NULL, created_at REAL NOT NULL, revoked_at REAL
        );
        """,
    ),
    (
        "0005_web_sessions",
        """
        CREATE TABLE web_sessions (
            token_hash TEXT PRIMARY KEY, org_id TEXT NOT NULL, key_hash TEXT NOT NULL, csrf TEXT NOT NULL,
            created_at REAL NOT NULL, expires_at REAL NOT NULL
        );
        """,
    ),
)

KEY_PREFIX = "ug_"


@dataclass(frozen=True, slots=True)
class KeyInfo:
    key_id: str
    org_id: str
    org_name: str
    prefix: str
    created_at: float
    revoked: bool


def hash_key(key: str) -> str:
    # Keys carry 256 random bits, so a fast unsalted hash is as safe as a slow one here.
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class ConfigDB:
    """One connection to config.db; create one per thread (sqlite3 objects are not shared)."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "config.db"
        self.conn = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA busy_timeout=10000")
        self._migrate()

    def _migrate(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at REAL)")
            done = {row[0] for row in self.conn.execute("SELECT name FROM migrations")}
            for name, sql in MIGRATIONS:
                if name not in done:
                    for statement in sql.split(";"):
                        if statement.strip():
                            self.conn.execute(statement)
                    self.conn.execute("INSERT INTO migrations VALUES (?, ?)", (name, time.time()))
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.conn.close()

    def data_version(self) -> int:
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    # -- orgs and keys -------------------------------------------------------------------------

    def org_id(self, name: str, *, create: bool = False) -> str | None:
        row = self.conn.execute("SELECT id FROM orgs WHERE name = ?", (name,)).fetchone()
        if row:
            return str(row[0])
        if not create:
            return None
        org_id = "org_" + uuid.uuid4().hex[:16]
        self.conn.execute("INSERT OR IGNORE INTO orgs VALUES (?, ?, ?)", (org_id, name, time.time()))
        return self.org_id(name)

    def create_key(self, org_name: str) -> str:
        """Create a key for the org (creating the org on first use); returns the only copy of the key."""
        org_id = self.org_id(org_name, create=True)
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        self.conn.execute(
            "INSERT INTO keys VALUES (?, ?, ?, ?, ?, NULL)",
            ("key_" + uuid.uuid4().hex[:12], org_id, hash_key(key), key[:10], time.time()),
        )
        return key

    def list_keys(self, org_name: str | None = None) -> list[KeyInfo]:
        sql = (
            "SELECT k.id, k.org_id, o.name, k.prefix, k.created_at, k.revoked_at IS NOT NULL "
            "FROM keys k JOIN orgs o ON o.id = k.org_id"
        )
        args: tuple[str, ...] = ()
        if org_name is not None:
            sql += " WHERE o.name = ?"
            args = (org_name,)
        rows = self.conn.execute(sql + " ORDER BY k.created_at", args).fetchall()
        return [KeyInfo(r[0], r[1], r[2], r[3], r[4], bool(r[5])) for r in rows]

    def revoke_key(self, key_id_or_key: str) -> bool:
        """Revoke by key id or by the key itself; False when nothing matched."""
        cur = self.conn.execute(
            "UPDATE keys SET revoked_at = ? WHERE revoked_at IS NULL AND (id = ? OR key_hash = ?)",
            (time.time(), key_id_or_key, hash_key(key_id_or_key)),
        )
        return cur.rowcount > 0

    # -- plans ---------------------------------------------------------------------------------

    def plans(self, org_id: str) -> tuple[str, dict[str, str]] | None:
        """(plan property, {plan: monthly revenue as a decimal string}) or None when unset."""
        row = self.conn.execute("SELECT property, revenue_json FROM plans WHERE org_id = ?", (org_id,)).fetchone()
        return (row[0], json.loads(row[1])) if row else None

    def set_plans(self, org_id: str, prop: str, revenue: dict[str, str]) -> None:
        self.conn.execute(
            "INSERT INTO plans VALUES (?, ?, ?) ON CONFLICT(org_id) DO UPDATE SET "
            "property = excluded.property, revenue_json = excluded.revenue_json",
            (org_id, prop, json.dumps(revenue)),
        )

    def active_key_hashes(self) -> dict[str, str]:
        rows = self.conn.execute("SELECT key_hash, org_id FROM keys WHERE revoked_at IS NULL")
        return {r[0]: r[1] for r in rows}


def set_limit(
    conn: sqlite3.Connection, org_id: str, scope: str, name: str,
    budget_usd: str | None, period: str | None, requests_per_minute: int | None,
) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO limits VALUES (?, ?, ?, ?, ?, ?, ?)",
        (org_id, scope, name, budget_usd, period, requests_per_minute, time.time()),
    )


def get_limit(conn: sqlite3.Connection, org_id: str, scope: str, name: str) -> dict[str, object] | None:
    row = conn.execute(
        "SELECT budget_usd, period, requests_per_minute FROM limits WHERE org_id = ? AND scope = ? AND name = ?",
        (org_id, scope, name),
    ).fetchone()
    if row is None:
        return None
    return {"budget_usd": row[0], "period": row[1], "requests_per_minute": row[2]}


def delete_limit(conn: sqlite3.Connection, org_id: str, scope: str, name: str) -> bool:
    cur = conn.execute("DELETE FROM limits WHERE org_id = ? AND scope = ? AND name = ?", (org_id, scope, name))
    return cur.rowcount > 0


class KeyRing:
    """In-memory map of active key hashes → org id, refreshed when config.db changes."""

    def __init__(self, db: ConfigDB) -> None:
        self._db = db
        self._version = -1
        self._keys: dict[str, str] = {}
        self._last_check = 0.0
        self.refresh()

    def refresh(self) -> None:
        version = self._db.data_version()
        if version != self._version:
            self._keys = self._db.active_key_hashes()
            self._version = version
        self._last_check = time.monotonic()

    def org_for(self, key: str) -> str | None:
        digest = hash_key(key)
        org = self._keys.get(digest)
        if org is None and time.monotonic() - self._last_check > 0.05:
            # A key created a moment ago by the CLI must work at once.
            self.refresh()
            org = self._keys.get(digest)
        if org is None:
            # Compare against a dummy so a miss costs about what a hit does.
            hmac.compare_digest(digest, "0" * 64)
            return None
        return org
