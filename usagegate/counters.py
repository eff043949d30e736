"""Shared limit state behind one interface: sliding-window counters and budget reservations.

`LocalCounters` keeps them in this process (the default, one gateway process). Several
processes need the same state in one place: `redis_counters.RedisCounters` implements the
same methods with atomic Lua scripts (`--redis URL`).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal


@dataclass(slots=True)
class _Window:
    events: deque[tuple[float, Decimal]] = field(default_factory=deque)
    total: Decimal = Decimal(0)

    def expire(self, horizon: float) -> None:
        while self.events and self.events[0][0] <= horizon:
            _, amount = self.events.popleft()
            self.total -= amount


@dataclass(slots=True)
class _Budget:
    spent: Decimal = Decimal(0)
    reserved: Decimal = Decimal(0)


class LocalCounters:
    """In-process counters. All methods are synchronous and O(1) amortised."""

    def __init__(self) -> None:
        self._windows: dict[str, _Window] = {}
        self._budgets: dict[str, _Budget] = {}

    # -- sliding windows (rate limits) ------------------------------------------------------------

    def window_usage(self, key: str, window: float, now: float | None = None) -> tuple[Decimal, float]:
        """(amount used in the last `window` seconds, seconds until the oldest event leaves)."""
        now = time.time() if now is None else now
        slot = self._windows.get(key)
        if slot is None:
            return Decimal(0), 0.0
        slot.expire(now - window)
        reset = (slot.events[0][0] + window - now) if slot.events else 0.0
        return slot.total, max(reset, 0.0)

    def window_add(self, key: str, amount: Decimal, now: float | None = None) -> None:
        slot = self._windows.setdefault(key, _Window())
        slot.events.append((time.time() if now is None else now, amount))
        slot.total += amount

    def window_take(self, key: str, window: float, amount: Decimal, quota: Decimal,
                    now: float | None = None) -> tuple[bool, Decimal, float]:
        """Add `amount` unless that takes the window over `quota` (one atomic step).

        Returns (taken, amount used before, seconds until the oldest event leaves).
        """
        used, reset = self.window_usage(key, window, now)
        if used + amount > quota:
            return False, used, reset
        self.window_add(key, amount, now)
        return True, used, reset

    # -- budgets (reserve before, settle after) ---------------------------------------------------

    def budget_known(self, key: str) -> bool:
        return key in self._budgets

    def budget_init(self, key: str, spent: Decimal) -> None:
        self._budgets.setdefault(key, _Budget(spent=spent))

    def budget_reserve(self, key: str, amount: Decimal, limit: Decimal) -> Decimal | None:
        """Reserve `amount` if spent + reserved + amount ≤ limit; returns what remains, else None."""
        budget = self._budgets.setdefault(key, _Budget())
        if budget.spent + budget.reserved + amount > limit:
            return None
        budget.reserved += amount
        return limit - budget.spent - budget.reserved

    def budget_settle(self, key: str, reserved: Decimal, actual: Decimal) -> Decimal:
        """Release a reservation and record the actual spend; returns the new spent total."""
        budget = self._budgets.setdefault(key, _Budget())
        budget.reserved -= reserved
        budget.spent += actual
        return budget.spent

    def budget_spent(self, key: str) -> Decimal:
        budget = self._budgets.get(key)
        return Decimal(0) if budget is None else budget.spent + budget.reserved
