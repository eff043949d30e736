"""User-scoped tokens: what an app hands its end user so they can read their own usage.

A token maps to exactly one (org, user) pair. Only its SHA-256 is stored (config.db
`user_tokens`); the token itself is returned once, at creation. The prefix `ugu_` differs from
org keys' `ug_`, and the two live in different tables, so a user token is never an org key:
`KeyRing` cannot find it and every org-authenticated route (proxy and /api) refuses it.
"""

from __future__ import annotations

import hmac
import secrets
import sqlite3
import time
import uuid
from dataclasses import dataclass

from usagegate.config_db import hash_key

USER_TOKEN_PREFIX = "ugu_"


@dataclass(frozen=True, slots=True)
class UserToken:
    token_id: str
    org_id: str
    user_id: str
    prefix: str
    created_at: float
    revoked: bool


def create_user_token(conn: sqlite3.Connection, org_id: str, user_id: str) -> tuple[str, UserToken]:
    """Store a new token for the user; returns (the only copy of the token, its info)."""
    token = USER_TOKEN_PREFIX + secrets.token_urlsafe(32)
    info = UserToken("utok_" + uuid.uuid4().hex[:12], org_id, user_id, token[:12], time.time(), False)
    conn.execute(
        "INSERT INTO user_tokens VALUES (?, ?, ?, ?, ?, ?, NULL)",
        (info.token_id, org_id, user_id, hash_key(token), info.prefix, info.created_at),
    )
    return token, info


def user_for_token(conn: sqlite3.Connection, token: str) -> tuple[str, str] | None:
    """(org_id, user_id) of an active token, else None."""
    digest = hash_key(token)
    row = conn.execute(
        "SELECT org_id, user_id, token_hash FROM user_tokens WHERE token_hash = ? AND revoked_at IS NULL", (digest,)
    ).fetchone()
    if row is None or not hmac.compare_digest(row[2], digest):
        return None
    return str(row[0]), str(row[1])


def list_user_tokens(conn: sqlite3.Connection, org_id: str, user_id: str | None = None) -> list[UserToken]:
    sql = "SELECT id, org_id, user_id, prefix, created_at, revoked_at IS NOT NULL FROM user_tokens WHERE org_id = ?"
    args: tuple[str, ...] = (org_id,)
    if user_id is not None:
        sql += " AND user_id = ?"
        args += (user_id,)
    rows = conn.execute(sql + " ORDER BY created_at", args).fetchall()
    return [UserToken(r[0], r[1], r[2], r[3], r[4], bool(r[5])) for r in rows]


def revoke_user_token(conn: sqlite3.Connection, org_id: str, token_id: str) -> bool:
    """Revoke one of the org's tokens by id; False when none matched (or it was revoked already)."""
    cur = conn.execute(
        "UPDATE user_tokens SET revoked_at = ? WHERE org_id = ? AND id = ? AND revoked_at IS NULL",
        (time.time(), org_id, token_id),
    )
    return cur.rowcount > 0
