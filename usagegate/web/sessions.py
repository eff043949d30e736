"""Dashboard sessions, kept server-side in config.db (`web_sessions`).

The cookie carries only a random 256-bit token; the table stores its SHA-256, the org, the hash of
the key used to sign in and the session's CSRF token. A session ends at sign-out, at expiry, or
as soon as the key it was opened with is revoked (the lookup joins the live `keys` table).
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import time
from dataclasses import dataclass

from usagegate.config_db import hash_key

LIFETIME_S = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class Session:
    org_id: str
    csrf: str


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def open_session(conn: sqlite3.Connection, key: str, *, now: float | None = None) -> str | None:
    """A new session token for a valid, unrevoked usagegate key; None when the key is not one."""
    key_hash = hash_key(key)
    row = conn.execute("SELECT org_id FROM keys WHERE key_hash = ? AND revoked_at IS NULL", (key_hash,)).fetchone()
    if row is None:
        return None
    now = time.time() if now is None else now
    token = secrets.token_urlsafe(32)
    conn.execute(
        "INSERT INTO web_sessions VALUES (?, ?, ?, ?, ?, ?)",
        (_digest(token), row[0], key_hash, secrets.token_urlsafe(32), now, now + LIFETIME_S),
    )
    # Sweep expired rows here, where a write happens anyway, rather than on every page view.
    conn.execute("DELETE FROM web_sessions WHERE expires_at < ?", (now,))
    return token


def find_session(conn: sqlite3.Connection, token: str, *, now: float | None = None) -> Session | None:
    """The live session for a cookie token, or None (unknown, expired, or its key revoked)."""
    if not token:
        return None
    row = conn.execute(
        "SELECT s.org_id, s.csrf FROM web_sessions s JOIN keys k ON k.key_hash = s.key_hash "
        "WHERE s.token_hash = ? AND s.expires_at > ? AND k.revoked_at IS NULL",
        (_digest(token), time.time() if now is None else now),
    ).fetchone()
    return Session(org_id=row[0], csrf=row[1]) if row else None


def close_session(conn: sqlite3.Connection, token: str) -> None:
    conn.execute("DELETE FROM web_sessions WHERE token_hash = ?", (_digest(token),))
