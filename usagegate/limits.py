"""Budgets and rate limits, checked before forwarding (DESIGN §1 policy header, §4 /api/limits).

`Guard.admit` runs on the hot path for every request, so the common case — an org with no
limits and no policy header — is two dict lookups. When limits apply it:
- counts the request against `Helicone-RateLimit-Policy` and `requests_per_minute` windows;
- reserves the request's worst-case cost (prompt ≤ body bytes, output ≤ max_tokens or
  DEFAULT_MAX_OUTPUT) against the user's budget, so concurrent requests cannot overspend;
and `Guard.settle` replaces the reservation by the real cost once the response is logged.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from usagegate.counters import LocalCounters
from usagegate.errors import BadRequest, RateLimited
from usagegate.price_overrides import PriceOverrides
from usagegate.pricing import Pricer
from usagegate.ratelimit_policy import Policy, parse_policy
from usagegate.records import Usage

# Worst-case output when a request names no max_tokens (genai-prices knows no output limits).
DEFAULT_MAX_OUTPUT = 16384
CENTS = Decimal(100)

SpentLoader = Callable[[str, str, datetime, datetime], Awaitable[Decimal]]


@dataclass(frozen=True, slots=True)
class LimitRule:
    budget_usd: Decimal | None = None
    period: str | None = None  # "day" | "month"
    requests_per_minute: int | None = None

    def merged_over(self, base: LimitRule | None) -> LimitRule:
        """These fields, each falling back to `base`'s (a user's limits over its plan's)."""
        if base is None:
            return self
        return LimitRule(
            self.budget_usd if self.budget_usd is not None else base.budget_usd,
            self.period if self.period is not None else base.period,
            self.requests_per_minute if self.requests_per_minute is not None else base.requests_per_minute,
        )


@dataclass(slots=True)
class Ticket:
    """What admit() took, so settle() can give back what was not used."""

    org_id: str
    budget_key: str | None = None
    budget_limit: Decimal = Decimal(0)
    reserved: Decimal = Decimal(0)
    remaining: Decimal | None = None  # budget left after this request's reservation
    cents_keys: list[str] = field(default_factory=list)
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    settled: bool = False


@dataclass
class OrgLimits:
    users: dict[str, LimitRule] = field(default_factory=dict)
    plans: dict[str, LimitRule] = field(default_factory=dict)
    plan_property: str = "plan"


def period_bounds(period: str, now: datetime) -> tuple[datetime, datetime]:
    """The UTC day or calendar month containing `now`: [start, end)."""
    if period == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start, end


def load_limits(conn: sqlite3.Connection) -> dict[str, OrgLimits]:
    table: dict[str, OrgLimits] = {}
    for org_id, scope, name, budget, period, rpm in conn.execute(
        "SELECT org_id, scope, name, budget_usd, period, requests_per_minute FROM limits"
    ):
        rule = LimitRule(Decimal(budget) if budget is not None else None, period, rpm)
        org = table.setdefault(org_id, OrgLimits())
        (org.users if scope == "user" else org.plans)[name] = rule
    for org_id, prop in conn.execute("SELECT org_id, property FROM plans"):
        if org_id in table:
            table[org_id].plan_property = prop
    return table


class Guard:
    def __init__(self, data_dir: Path, pricer: Pricer, spent_loader: SpentLoader,
                 counters: LocalCounters | None = None, overrides: PriceOverrides | None = None) -> None:
        self._conn = sqlite3.connect(data_dir / "config.db", isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA busy_timeout=10000")
        self._version = -1
        self._limits: dict[str, OrgLimits] = {}
        self._pricer = pricer
        self._spent_loader = spent_loader
        # An org's own price for a model counts as a price: budgets then use it.
        self._overrides = overrides or PriceOverrides(data_dir)
        self.counters = counters or LocalCounters()
        self.started = datetime.now(timezone.utc)
        self.refresh()

    def refresh(self) -> None:
        version = int(self._conn.execute("PRAGMA data_version").fetchone()[0])
        if version != self._version:
            self._limits = load_limits(self._conn)
            self._version = version
        self._overrides.refresh()

    async def admit(
        self, org_id: str, user_id: str, properties: dict[str, str], provider: str, model: str | None,
        body_len: int, max_tokens: int | None, policy_header: str | None,
    ) -> Ticket | None:
        """Count and reserve for one request; raises RateLimited (429) or BadRequest (400)."""
        org = self._limits.get(org_id)
        if org is None and policy_header is None:
            return None
        ticket = Ticket(org_id)
        now = time.time()
        if policy_header is not None:
            self._check_policy(ticket, parse_policy(policy_header), user_id, properties, now)
        if org is not None:
            rule = self._rule_for(org, user_id, properties)
            if rule is not None:
                await self._check_rule(ticket, rule, user_id, provider, model, body_len, max_tokens, now)
        return ticket

    def _rule_for(self, org: OrgLimits, user_id: str, properties: dict[str, str]) -> LimitRule | None:
        plan = properties.get(org.plan_property)
        plan_rule = org.plans.get(plan) if plan is not None else None
        user_rule = org.users.get(user_id)
        return user_rule.merged_over(plan_rule) if user_rule is not None else plan_rule

    def _check_policy(self, ticket: Ticket, policy: Policy, user_id: str, properties: dict[str, str], now: float) -> None:
        if policy.segment == "user":
            segment = user_id
        elif policy.segment:
            segment = properties.get(policy.segment, "")
        else:
            segment = ""
        key = f"rl\x00{ticket.org_id}\x00{policy.header_value()}\x00{segment}"
        headers = [
            (b"helicone-ratelimit-limit", str(policy.quota).encode()),
            (b"helicone-ratelimit-policy", policy.header_value().encode()),
        ]
        if policy.unit == "request":
            # Check and count in one step: atomic across processes when the counters are shared.
            taken, used, reset = self.counters.window_take(key, policy.window, Decimal(1), Decimal(policy.quota), now)
            over = not taken
        else:
            used, reset = self.counters.window_usage(key, policy.window, now)
            over = used >= policy.quota  # cents are only known after the answer
        if over:
            seconds = max(1, math.ceil(reset))
            raise RateLimited(
                f"Rate limit exceeded: {policy.quota} {policy.unit}s per {policy.window} s"
                + (f" for {policy.segment} {segment!r}" if policy.segment else "")
                + f" (Helicone-RateLimit-Policy). Retry in {seconds} s.",
                param="Helicone-RateLimit-Policy",
                headers=headers + [
                    (b"helicone-ratelimit-remaining", b"0"),
                    (b"helicone-ratelimit-reset", str(seconds).encode()),
                    (b"retry-after", str(seconds).encode()),
                ],
            )
        if policy.unit == "request":
            remaining = policy.quota - int(used) - 1
        else:
            ticket.cents_keys.append(key)
            remaining = policy.quota - math.ceil(used)
        ticket.headers += headers + [
            (b"helicone-ratelimit-remaining", str(max(remaining, 0)).encode()),
            (b"helicone-ratelimit-reset", str(max(1, math.ceil(reset)) if reset else policy.window).encode()),
        ]

    async def _check_rule(
        self, ticket: Ticket, rule: LimitRule, user_id: str, provider: str, model: str | None,
        body_len: int, max_tokens: int | None, now: float,
    ) -> None:
        if rule.requests_per_minute is not None:
            key = f"rpm\x00{ticket.org_id}\x00{user_id}"
            taken, used, reset = self.counters.window_take(key, 60, Decimal(1), Decimal(rule.requests_per_minute), now)
            if not taken:
                seconds = max(1, math.ceil(reset))
                raise RateLimited(
                    f"User {user_id!r} is over its limit of {rule.requests_per_minute} requests per minute; "
                    f"retry in {seconds} s.",
                    param="requests_per_minute",
                    headers=[(b"retry-after", str(seconds).encode())],
                )
        if rule.budget_usd is None:
            return
        override = self._overrides.for_record(ticket.org_id, model or "", model or "")
        if override is None and not self._pricer.has_price(provider, model):
            raise BadRequest(
                f"User {user_id!r} has a cost budget, but model {model!r} has no known price, so its cost "
                "cannot be bounded. Set one with PUT /api/prices/{model}.",
                param="model",
            )
        period = rule.period or "month"
        start, end = period_bounds(period, datetime.fromtimestamp(now, timezone.utc))
        key = f"budget\x00{ticket.org_id}\x00{user_id}\x00{start.isoformat()}"
        if not self.counters.budget_known(key):
            before = await self._spent_loader(ticket.org_id, user_id, start, max(start, self.started))
            self.counters.budget_init(key, before)
        worst = self._pricer.cost(
            provider, model, Usage(prompt_tokens=body_len, completion_tokens=max_tokens or DEFAULT_MAX_OUTPUT),
            status=200, override=override,
        ) or Decimal(0)
        remaining = self.counters.budget_reserve(key, worst, rule.budget_usd)
        if remaining is None:
            seconds = max(1, math.ceil(end.timestamp() - now))
            spent = self.counters.budget_spent(key)
            raise RateLimited(
                f"User {user_id!r} has used ${spent.quantize(Decimal('0.000001'))} of its ${rule.budget_usd} "
                f"{period}ly budget (this request could cost up to ${worst.quantize(Decimal('0.000001'))}); "
                f"it resets at {end.strftime('%Y-%m-%dT%H:%M:%SZ')}.",
                param="budget_usd",
                headers=[(b"retry-after", str(seconds).encode())],
            )
        ticket.budget_key, ticket.budget_limit, ticket.reserved = key, rule.budget_usd, worst
        ticket.remaining = remaining

    def settle(self, ticket: Ticket, record: dict[str, Any]) -> Decimal | None:
        """Replace the reservation with the real cost (once; later calls do nothing); returns the
        budget remaining, if any."""
        if ticket.settled:
            return None
        ticket.settled = True
        cost: Decimal | None = None
        if ticket.budget_key is not None or ticket.cents_keys:
            usage = Usage(
                prompt_tokens=record["prompt_tokens"], completion_tokens=record["completion_tokens"],
                cache_read_tokens=record["cache_read_tokens"], cache_write_tokens=record["cache_write_tokens"],
                cache_write_1h_tokens=record["cache_write_1h_tokens"], reasoning_tokens=record["reasoning_tokens"],
            )
            override = self._overrides.for_record(ticket.org_id, record["model"], record["request_model"])
            cost = self._pricer.cost(
                record["provider"], record["model"], usage, status=record["status"], override=override,
                billed=record.get("billed", False),
            ) or Decimal(0)
        for key in ticket.cents_keys:
            self.counters.window_add(key, (cost or Decimal(0)) * CENTS)
        if ticket.budget_key is None:
            return None
        key, ticket.budget_key = ticket.budget_key, None  # settle once
        self.counters.budget_settle(key, ticket.reserved, cost or Decimal(0))
        return ticket.budget_limit - self.counters.budget_spent(key)
