"""Limit counters in Redis (`--redis URL`): one budget and one rate window for every process.

Same interface as `counters.LocalCounters`; every check-and-change is one Lua script, so it is
atomic across workers and machines (two gateways cannot both take the last request of a window
or the last dollar of a budget).

Representation: amounts are integers in units of 1e-9 (requests, cents or USD), so sums stay
exact (`INCRBY`); comparisons run in Lua's doubles, exact up to 2^53 units (9,007,199 requests,
cents or dollars per window or budget period — far beyond a per-user limit).
- window: a sorted set of events (score = time, member = "<seq>:<units>") plus a running total;
  expired events are subtracted when a check passes over them (amortised O(1) per event);
- budget: a hash {spent, reserved}, kept 40 days (periods are a day or a calendar month).

The proxy calls these synchronously (one loopback round trip, ~50–100 µs, and only for orgs that
have limits). Redis unreachable: checks before forwarding raise `StoreUnavailable` (503, fail
closed: an unbounded request could overspend); bookkeeping after a response logs and carries on.
"""

from __future__ import annotations

import logging
import time
from decimal import Decimal
from typing import Any

from usagegate.errors import StoreUnavailable

log = logging.getLogger("usagegate.limits")

UNIT = Decimal("1e9")
BUDGET_TTL = 40 * 86400
PREFIX = "ug:"

_EXPIRE = """
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for _, member in ipairs(expired) do
  redis.call('DECRBY', KEYS[2], string.match(member, ':(%-?%d+)$'))
end
if #expired > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1]) end
local total = redis.call('GET', KEYS[2]) or '0'
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local oldest = first[2] or ''
"""

# KEYS: events, total. ARGV: horizon. -> {total, oldest score or ''}
WINDOW_USAGE = _EXPIRE + "return {total, oldest}"

# KEYS: events, total, seq. ARGV: now, units, ttl.
WINDOW_ADD = """
local n = redis.call('INCR', KEYS[3])
redis.call('ZADD', KEYS[1], ARGV[1], n .. ':' .. ARGV[2])
redis.call('INCRBY', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
"""

# KEYS: events, total, seq. ARGV: horizon, now, units, quota units, ttl. -> {taken 0/1, total before, oldest}
WINDOW_TAKE = _EXPIRE + """
if tonumber(total) + tonumber(ARGV[3]) > tonumber(ARGV[4]) then return {0, total, oldest} end
local n = redis.call('INCR', KEYS[3])
redis.call('ZADD', KEYS[1], ARGV[2], n .. ':' .. ARGV[3])
redis.call('INCRBY', KEYS[2], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[5])
return {1, total, oldest}
"""

# KEYS: budget. ARGV: spent units, ttl.
BUDGET_INIT = """
if redis.call('HSETNX', KEYS[1], 'spent', ARGV[1]) == 1 then
  redis.call('HSETNX', KEYS[1], 'reserved', 0)
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return 1
"""

# KEYS: budget. ARGV: amount units, limit units, ttl. -> {spent, reserved after} or nil when over.
BUDGET_RESERVE = """
local spent = redis.call('HGET', KEYS[1], 'spent') or '0'
local reserved = redis.call('HGET', KEYS[1], 'reserved') or '0'
if tonumber(spent) + tonumber(reserved) + tonumber(ARGV[1]) > tonumber(ARGV[2]) then return nil end
reserved = redis.call('HINCRBY', KEYS[1], 'reserved', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {spent, tostring(reserved)}
"""

# KEYS: budget. ARGV: reserved units, actual units, ttl. -> spent after
BUDGET_SETTLE = """
redis.call('HINCRBY', KEYS[1], 'reserved', -tonumber(ARGV[1]))
local spent = redis.call('HINCRBY', KEYS[1], 'spent', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return tostring(spent)
"""


def _units(amount: Decimal) -> int:
    return int((amount * UNIT).to_integral_value())


def _amount(units: Any) -> Decimal:
    return Decimal(int(units)) / UNIT


class RedisCounters:
    """`LocalCounters`' methods, backed by Redis. Build with `RedisCounters.connect(url)`."""

    def __init__(self, client: Any) -> None:
        self._redis = client
        self._usage = client.register_script(WINDOW_USAGE)
        self._add = client.register_script(WINDOW_ADD)
        self._take = client.register_script(WINDOW_TAKE)
        self._init = client.register_script(BUDGET_INIT)
        self._reserve = client.register_script(BUDGET_RESERVE)
        self._settle = client.register_script(BUDGET_SETTLE)

    @classmethod
    def connect(cls, url: str) -> RedisCounters:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2, health_check_interval=30)
        return cls(client)

    def close(self) -> None:
        self._redis.close()

    def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        import redis

        try:
            return script(keys=keys, args=args)
        except redis.RedisError as exc:
            raise StoreUnavailable(f"The shared limit counters (Redis) are unreachable: {exc}") from exc

    @staticmethod
    def _window_keys(key: str) -> list[str]:
        return [f"{PREFIX}w:{key}", f"{PREFIX}wt:{key}", f"{PREFIX}seq"]

    # -- sliding windows ----------------------------------------------------------------------

    def window_usage(self, key: str, window: float, now: float | None = None) -> tuple[Decimal, float]:
        now = time.time() if now is None else now
        total, oldest = self._call(self._usage, self._window_keys(key)[:2], [repr(now - window)])
        reset = float(oldest) + window - now if oldest else 0.0
        return _amount(total), max(reset, 0.0)

    def window_add(self, key: str, amount: Decimal, now: float | None = None) -> None:
        now = time.time() if now is None else now
        try:
            self._call(self._add, self._window_keys(key), [repr(now), _units(amount), _ttl(key)])
        except StoreUnavailable as error:  # bookkeeping after the answer: never fail the response
            log.error("could not count a request in Redis: %s", error.message)

    def window_take(self, key: str, window: float, amount: Decimal, quota: Decimal,
                    now: float | None = None) -> tuple[bool, Decimal, float]:
        """Add `amount` unless that takes the window over `quota`, atomically.

        Returns (taken, amount used before, seconds until the oldest event leaves).
        """
        now = time.time() if now is None else now
        taken, total, oldest = self._call(
            self._take, self._window_keys(key),
            [repr(now - window), repr(now), _units(amount), _units(quota), int(window) + 60],
        )
        reset = float(oldest) + window - now if oldest else 0.0
        return bool(taken), _amount(total), max(reset, 0.0)

    # -- budgets ------------------------------------------------------------------------------

    def budget_known(self, key: str) -> bool:
        import redis

        try:
            return bool(self._redis.exists(f"{PREFIX}b:{key}"))
        except redis.RedisError as exc:
            raise StoreUnavailable(f"The shared limit counters (Redis) are unreachable: {exc}") from exc

    def budget_init(self, key: str, spent: Decimal) -> None:
        self._call(self._init, [f"{PREFIX}b:{key}"], [_units(spent), BUDGET_TTL])

    def budget_reserve(self, key: str, amount: Decimal, limit: Decimal) -> Decimal | None:
        result = self._call(self._reserve, [f"{PREFIX}b:{key}"], [_units(amount), _units(limit), BUDGET_TTL])
        if result is None:
            return None
        spent, reserved = result
        return limit - _amount(spent) - _amount(reserved)

    def budget_settle(self, key: str, reserved: Decimal, actual: Decimal) -> Decimal:
        try:
            return _amount(self._call(self._settle, [f"{PREFIX}b:{key}"], [_units(reserved), _units(actual), BUDGET_TTL]))
        except StoreUnavailable as error:
            # The reservation stays counted: conservative until the period ends (or Redis is back).
            log.error("could not settle a budget reservation in Redis: %s", error.message)
            return Decimal(0)

    def budget_spent(self, key: str) -> Decimal:
        import redis

        try:
            spent, reserved = self._redis.hmget(f"{PREFIX}b:{key}", ["spent", "reserved"])
        except redis.RedisError as exc:
            log.error("could not read a budget from Redis: %s", exc)
            return Decimal(0)
        return _amount(spent or 0) + _amount(reserved or 0)


def _ttl(key: str) -> int:
    # Windows are at most a year; the key's own policy decides, but a year is a safe upper bound.
    return 366 * 86400


def counters_for(redis_url: str) -> Any:
    """RedisCounters for a URL, else None (the Guard then keeps its in-process counters)."""
    if not redis_url:
        return None
    return RedisCounters.connect(redis_url)
