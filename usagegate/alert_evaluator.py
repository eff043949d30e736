"""The alert evaluator: a task in the gateway process that fires rules and delivers webhooks.

Every `alert_interval` seconds it
1. reads the rules (config.db), asks the store who crossed each `user_cost_over` threshold in
   its rolling window (and, every `anomaly_every` seconds, who `/api/anomalies` flags today),
   and records each firing once per user per window (`alerts.enqueue`);
2. delivers due firings: POST of the stored JSON body with `X-Usagegate-Signature`, no redirects
   followed, destinations re-checked at send time (private/loopback refused unless
   `allow_private_webhooks`; link-local always), and on failure retried with exponential
   backoff (1 s, 2 s, 4 s, ... ≤ 60 s) up to MAX_ATTEMPTS, after which it is marked failed.
config.db writes run on one helper thread, so a busy database never stalls the proxy's loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import time
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import aiohttp

from usagegate import alerts
from usagegate.anomalies import find_anomalies, today
from usagegate.api.params import ch_time, money
from usagegate.config_db import ConfigDB
from usagegate.errors import BadRequest
from usagegate.netguard import AddressGuard, address_refusal
from usagegate.settings import Settings
from usagegate.store import Store

log = logging.getLogger("usagegate.alerts")

MAX_ATTEMPTS = 6
BACKOFF_BASE = 1.0
BACKOFF_MAX = 60.0
LEASE = 60.0
TIMEOUT = aiohttp.ClientTimeout(total=10)
MAX_RESPONSE_BYTES = 64 * 1024

_OVER = """
SELECT user_id, toString(sum(ifNull(cost_usd, 0))) AS cost FROM requests
WHERE org_id = {org:String} AND created_at >= {since:DateTime64(3)}
GROUP BY user_id HAVING sum(ifNull(cost_usd, 0)) > toDecimal128({threshold:String}, 9)
"""


class _CheckedResolver(aiohttp.ThreadedResolver):
    """Refuses names that resolve to forbidden addresses, so DNS cannot be rebound between check and connect."""

    def __init__(self, allow_private: bool) -> None:
        super().__init__()
        self._allow_private = allow_private

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[Any]:
        results = await super().resolve(host, port, family)
        for result in results:
            reason = address_refusal(result["host"], allow_private=self._allow_private)
            if reason is not None:
                raise OSError(f"{host} resolves to a refused address: {reason}")
        return results


class AlertEvaluator:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.interval = settings.alert_interval
        self.anomaly_every = max(self.interval, min(60.0, 10 * self.interval))
        self._allow_private = settings.allow_private_webhooks
        self._store = store
        self._read = ConfigDB(settings.data_dir)  # SELECTs on the loop: WAL readers never wait
        self._write = ConfigDB(settings.data_dir)
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="alerts-db")
        self._guard = AddressGuard()
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_anomaly_run = 0.0

    def start(self) -> None:
        connector = aiohttp.TCPConnector(resolver=_CheckedResolver(self._allow_private), use_dns_cache=False, limit=20)
        self._session = aiohttp.ClientSession(connector=connector, timeout=TIMEOUT, cookie_jar=aiohttp.DummyCookieJar())
        self._task = asyncio.create_task(self._run(), name="alert-evaluator")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._session is not None:
            await self._session.close()
        self._executor.shutdown(wait=True)
        self._read.close()
        self._write.close()

    async def _db(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(self._write.conn, *args, **kwargs))

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store may be down; try again next tick
                log.warning("alert evaluation failed: %s", exc)
            await asyncio.sleep(self.interval)

    async def tick(self) -> None:
        now = time.time()
        rules = alerts.list_rules(self._read.conn)
        if rules and getattr(self._store, "ready", True):
            await self._evaluate(rules, now)
        due = await self._db(alerts.claim_due, now=now, lease=LEASE)
        if due:
            await asyncio.gather(*(self._send(delivery, rule) for delivery, rule in due))

    # -- firing ----------------------------------------------------------------------------------

    async def _evaluate(self, rules: list[alerts.AlertRule], now: float) -> None:
        anomaly_orgs = {r.org_id for r in rules if r.kind == "anomaly"}
        found: dict[str, dict[str, Any]] = {}
        if anomaly_orgs and now - self._last_anomaly_run >= self.anomaly_every:
            self._last_anomaly_run = now
            span = today(datetime.fromtimestamp(now, timezone.utc))
            for org in anomaly_orgs:
                found[org] = await find_anomalies(self._store, self._read.conn, org, span)
        for rule in rules:
            if rule.kind == "user_cost_over":
                await self._cost_rule(rule, now)
            elif rule.org_id in found:
                await self._anomaly_rule(rule, found[rule.org_id], now)

    async def _cost_rule(self, rule: alerts.AlertRule, now: float) -> None:
        assert rule.threshold_usd is not None
        since = now - rule.window_seconds
        rows = await self._store.query(_OVER, {
            "org": rule.org_id, "since": ch_time(datetime.fromtimestamp(since, timezone.utc)),
            "threshold": str(rule.threshold_usd),
        })
        window = alerts.window_text(rule.window_seconds)
        for row in rows:
            cost = Decimal(row["cost"])
            payload = {
                "type": "user_cost_over", "rule_id": rule.rule_id, "user_id": row["user_id"],
                "cost_usd": money(cost), "threshold_usd": money(rule.threshold_usd), "window": window,
                "window_start": alerts.iso_seconds(since), "window_end": alerts.iso_seconds(now),
                "reason": f"user {row['user_id']!r} spent ${cost.quantize(Decimal('0.01'))} in the last {window}, "
                          f"over the ${rule.threshold_usd} threshold",
            }
            await self._db(alerts.enqueue, rule, row["user_id"], f"{alerts.iso_seconds(since)}/{alerts.iso_seconds(now)}", payload,
                           now=now, quiet_seconds=rule.window_seconds)

    async def _anomaly_rule(self, rule: alerts.AlertRule, found: dict[str, Any], now: float) -> None:
        day = found["from"][:10]
        for user in found["anomalies"]:
            payload = {
                "type": "anomaly", "rule_id": rule.rule_id, "user_id": user["user_id"], "plan": user["plan"],
                "date": day, "reasons": user["reasons"], "findings": user["findings"],
            }
            await self._db(alerts.enqueue, rule, user["user_id"], day, payload, now=now, quiet_seconds=0)

    # -- delivery --------------------------------------------------------------------------------

    async def _send(self, delivery: alerts.Delivery, rule: alerts.AlertRule) -> None:
        assert self._session is not None
        headers = {
            "Content-Type": "application/json", "User-Agent": "usagegate-alerts/0.1",
            alerts.SIGNATURE_HEADER: alerts.sign(rule.secret, delivery.payload),
            "X-Usagegate-Delivery": delivery.delivery_id, "X-Usagegate-Attempt": str(delivery.attempts + 1),
        }
        status: int | None = None
        error: str | None = None
        final = False
        try:
            await self._guard.check(rule.webhook_url, allow_private=self._allow_private, param="webhook_url")
            async with self._session.post(rule.webhook_url, data=delivery.payload, headers=headers,
                                          allow_redirects=False) as response:
                status = response.status
                await response.content.read(MAX_RESPONSE_BYTES)
        except BadRequest as exc:
            error, final = exc.message, True  # the destination is forbidden: retrying cannot help
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        if status is not None and not 200 <= status < 300:
            error = f"HTTP {status}" + (": redirects are not followed" if 300 <= status < 400 else "")
            final = 300 <= status < 400
        attempts = delivery.attempts + 1
        now = time.time()
        if error is None:
            outcome, next_at = "delivered", now
        elif final or attempts >= MAX_ATTEMPTS:
            outcome, next_at = "failed", now
            log.warning("alert delivery %s to %s failed for good: %s", delivery.delivery_id, rule.webhook_url, error)
        else:
            outcome, next_at = "pending", now + min(BACKOFF_BASE * 2 ** (attempts - 1), BACKOFF_MAX)
        await self._db(alerts.record_attempt, delivery.delivery_id, status=outcome, response_status=status,
                       error=error, next_attempt_at=next_at, now=now)
