"""Alert rules and their delivery log, in config.db (`alert_rules`, `alert_deliveries`).

Rules need no per-user set-up:
- `user_cost_over`: any user whose cost over the rolling `window` (e.g. "24h") exceeds
  `threshold_usd`; fires at most once per user per window length;
- `anomaly`: any user `/api/anomalies` flags today; fires at most once per user per UTC day.

Each firing is a row in `alert_deliveries` (the dedupe state and the rule's history) holding the
exact JSON body, so every retry sends the same bytes with the same signature. The secret that
signs them (`X-Usagegate-Signature: sha256=<hex HMAC-SHA256 of the raw body>`) is returned once,
when the rule is created, and kept in config.db because signing needs it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from usagegate.errors import BadRequest, NotFound

KINDS = ("user_cost_over", "anomaly")
FIELDS = {"kind", "threshold_usd", "window", "webhook_url"}
ANOMALY_WINDOW = 86400
_WINDOW = re.compile(r"^(\d{1,6})([mhd])$")
_UNIT = {"m": 60, "h": 3600, "d": 86400}
MAX_WINDOW = 31 * 86400
SIGNATURE_HEADER = "X-Usagegate-Signature"


@dataclass(frozen=True, slots=True)
class AlertRule:
    rule_id: str
    org_id: str
    kind: str
    threshold_usd: Decimal | None
    window_seconds: int
    webhook_url: str
    secret: str
    created_at: float

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.rule_id, "kind": self.kind,
            "threshold_usd": format(self.threshold_usd.quantize(Decimal("0.000000001")), "f")
            if self.threshold_usd is not None else None,
            "window": window_text(self.window_seconds), "webhook_url": self.webhook_url,
            "created_at": iso_seconds(self.created_at),
        }


@dataclass(frozen=True, slots=True)
class Delivery:
    delivery_id: str
    rule_id: str
    user_id: str
    payload: bytes
    attempts: int


def sign(secret: str, body: bytes) -> str:
    """The X-Usagegate-Signature value for a raw body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def window_text(seconds: int) -> str:
    """"30m", "24h", "7d": days only from two days up, since people say 24h, not 1d."""
    if seconds >= 2 * 86400 and seconds % 86400 == 0:
        return f"{seconds // 86400}d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    return f"{seconds // 60}m"


def parse_rule(body: Any) -> tuple[str, Decimal | None, int, str]:
    """Validate a POST body → (kind, threshold, window seconds, webhook url); BadRequest names the field.

    The URL's destination is checked separately (it needs DNS); see netguard.
    """
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object with kind, webhook_url and, for user_cost_over, "
                         "threshold_usd and window.", param="body")
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise BadRequest(f"Unknown field {unknown[0]!r}; fields are {', '.join(sorted(FIELDS))}.", param=unknown[0])
    kind = body.get("kind")
    if kind not in KINDS:
        raise BadRequest(f"'kind' must be one of {', '.join(KINDS)}.", param="kind")
    url = body.get("webhook_url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) > 2048:
        raise BadRequest("'webhook_url' must be an http(s) URL of at most 2048 characters.", param="webhook_url")
    if kind == "anomaly":
        for name in ("threshold_usd", "window"):
            if body.get(name) is not None:
                raise BadRequest(f"'{name}' does not apply to anomaly rules (they fire once per user per UTC day).",
                                 param=name)
        return kind, None, ANOMALY_WINDOW, url
    return kind, _threshold(body.get("threshold_usd")), _window(body.get("window", "24h")), url


def _threshold(value: Any) -> Decimal:
    if value is None:
        raise BadRequest("'threshold_usd' is required for user_cost_over rules.", param="threshold_usd")
    if isinstance(value, (float, bool)):
        raise BadRequest("'threshold_usd' must be a decimal string such as \"5.00\", not a float.", param="threshold_usd")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise BadRequest("'threshold_usd' must be a decimal string such as \"5.00\".", param="threshold_usd") from None
    if not amount.is_finite() or amount <= 0 or amount >= Decimal(10) ** 12:
        raise BadRequest("'threshold_usd' must be a positive amount.", param="threshold_usd")
    return amount


def _window(value: Any) -> int:
    match = _WINDOW.match(value) if isinstance(value, str) else None
    seconds = int(match.group(1)) * _UNIT[match.group(2)] if match else 0
    if not 60 <= seconds <= MAX_WINDOW:
        raise BadRequest("'window' must be like \"30m\", \"24h\" or \"7d\", from 1 minute to 31 days.", param="window")
    return seconds


# -- rules -------------------------------------------------------------------------------------


def create_rule(conn: sqlite3.Connection, org_id: str, kind: str, threshold: Decimal | None,
                window_seconds: int, url: str) -> AlertRule:
    rule = AlertRule("alr_" + uuid.uuid4().hex[:12], org_id, kind, threshold, window_seconds, url,
                     "whsec_" + secrets.token_urlsafe(32), time.time())
    conn.execute(
        "INSERT INTO alert_rules VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (rule.rule_id, org_id, kind, str(threshold) if threshold is not None else None, window_seconds, url,
         rule.secret, rule.created_at),
    )
    return rule


def _rule(row: tuple[Any, ...]) -> AlertRule:
    return AlertRule(row[0], row[1], row[2], Decimal(row[3]) if row[3] is not None else None, int(row[4]),
                     row[5], row[6], float(row[7]))


_RULE_COLUMNS = "id, org_id, kind, threshold_usd, window_seconds, webhook_url, secret, created_at"


def list_rules(conn: sqlite3.Connection, org_id: str | None = None) -> list[AlertRule]:
    """The org's rules (all orgs' when org_id is None), oldest first."""
    if org_id is None:
        rows = conn.execute(f"SELECT {_RULE_COLUMNS} FROM alert_rules ORDER BY created_at").fetchall()
    else:
        rows = conn.execute(f"SELECT {_RULE_COLUMNS} FROM alert_rules WHERE org_id = ? ORDER BY created_at",
                            (org_id,)).fetchall()
    return [_rule(r) for r in rows]


def get_rule(conn: sqlite3.Connection, org_id: str, rule_id: str) -> AlertRule:
    row = conn.execute(f"SELECT {_RULE_COLUMNS} FROM alert_rules WHERE org_id = ? AND id = ?",
                       (org_id, rule_id)).fetchone()
    if row is None:
        raise NotFound(f"No alert rule {rule_id!r}.", param="id")
    return _rule(row)


def delete_rule(conn: sqlite3.Connection, org_id: str, rule_id: str) -> None:
    """Delete a rule and its history (pending deliveries stop)."""
    get_rule(conn, org_id, rule_id)
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("DELETE FROM alert_deliveries WHERE rule_id = ?", (rule_id,))
        conn.execute("DELETE FROM alert_rules WHERE id = ?", (rule_id,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def history(conn: sqlite3.Connection, org_id: str, rule_id: str, limit: int) -> list[dict[str, Any]]:
    """The rule's deliveries, newest first."""
    get_rule(conn, org_id, rule_id)
    rows = conn.execute(
        "SELECT id, user_id, window_key, payload, status, attempts, response_status, last_error, created_at, "
        "delivered_at, next_attempt_at FROM alert_deliveries WHERE rule_id = ? ORDER BY created_at DESC LIMIT ?",
        (rule_id, limit),
    ).fetchall()
    return [
        {
            "id": r[0], "user_id": r[1], "window": r[2], "payload": orjson.loads(r[3]), "status": r[4],
            "attempts": r[5], "response_status": r[6], "last_error": r[7], "created_at": iso_seconds(r[8]),
            "delivered_at": iso_seconds(r[9]) if r[9] is not None else None,
            "next_attempt_at": iso_seconds(r[10]) if r[4] == "pending" else None,
        }
        for r in rows
    ]


# -- firing and delivery state -----------------------------------------------------------------


def enqueue(conn: sqlite3.Connection, rule: AlertRule, user_id: str, window_key: str,
            payload: dict[str, Any], *, now: float, quiet_seconds: int) -> bool:
    """Record a firing unless the rule fired for this user within `quiet_seconds` or this window.

    One IMMEDIATE transaction, so two evaluators (two gateway processes) cannot both fire.
    """
    delivery_id = "dlv_" + uuid.uuid4().hex[:16]
    body = orjson.dumps({"delivery_id": delivery_id, **payload})
    conn.execute("BEGIN IMMEDIATE")
    try:
        recent = conn.execute(
            "SELECT 1 FROM alert_deliveries WHERE rule_id = ? AND user_id = ? AND (window_key = ? OR created_at > ?)",
            (rule.rule_id, user_id, window_key, now - quiet_seconds),
        ).fetchone()
        if recent is None:
            conn.execute(
                "INSERT INTO alert_deliveries (id, rule_id, org_id, user_id, window_key, payload, status, attempts, "
                "next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?)",
                (delivery_id, rule.rule_id, rule.org_id, user_id, window_key, body.decode(), now, now),
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return recent is None


def claim_due(conn: sqlite3.Connection, *, now: float, lease: float, limit: int = 50) -> list[tuple[Delivery, AlertRule]]:
    """Pending deliveries whose time has come, leased to this evaluator for `lease` seconds."""
    rows = conn.execute(
        "SELECT d.id, d.rule_id, d.user_id, d.payload, d.attempts, " + ", ".join(f"r.{c.strip()}" for c in _RULE_COLUMNS.split(","))
        + " FROM alert_deliveries d JOIN alert_rules r ON r.id = d.rule_id "
        "WHERE d.status = 'pending' AND d.next_attempt_at <= ? AND d.claimed_until <= ? ORDER BY d.next_attempt_at LIMIT ?",
        (now, now, limit),
    ).fetchall()
    claimed = []
    for r in rows:
        cur = conn.execute("UPDATE alert_deliveries SET claimed_until = ? WHERE id = ? AND claimed_until <= ?",
                           (now + lease, r[0], now))
        if cur.rowcount == 1:
            claimed.append((Delivery(r[0], r[1], r[2], r[3].encode(), int(r[4])), _rule(r[5:])))
    return claimed


def record_attempt(conn: sqlite3.Connection, delivery_id: str, *, status: str, response_status: int | None,
                   error: str | None, next_attempt_at: float, now: float) -> None:
    conn.execute(
        "UPDATE alert_deliveries SET status = ?, attempts = attempts + 1, response_status = ?, last_error = ?, "
        "next_attempt_at = ?, claimed_until = 0, delivered_at = ? WHERE id = ?",
        (status, response_status, error, next_attempt_at, now if status == "delivered" else None, delivery_id),
    )


def iso_seconds(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
