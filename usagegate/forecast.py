"""Month-end cost forecast from a recent daily trend (pure arithmetic, exact; docs/analytics.md).

Method, per user (or for the whole org):
- the *window* is the last `LOOKBACK_DAYS` complete UTC days before today, but never before the
  day the user was first seen (days without traffic inside it count as 0);
- with ≥ 2 window days a least-squares line `cost(t) = a + b·t` is fitted (t = day offset from
  today), with 1 day the rate is that day's cost, with 0 days (first seen today) it is today's
  cost so far;
- forecast = cost this month before today + max(today's cost so far, predicted(today))
  + Σ predicted(t) over the remaining days of the month, each prediction floored at 0.

All arithmetic is on `Fraction`s (money never passes through a float); the result is rounded
half-even to 9 places once, at the end.
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from datetime import date, timedelta
from decimal import Decimal
from fractions import Fraction

from usagegate.money import round_money

LOOKBACK_DAYS = 14


def window_start(today: date) -> date:
    """The earliest day a forecast for `today` reads (month start or the trend window)."""
    return min(today.replace(day=1), today - timedelta(days=LOOKBACK_DAYS))


def month_forecast(daily_cost: Mapping[date, Decimal], today: date, first_day: date | None) -> Decimal:
    """Projected cost for today's whole calendar month; see the module docstring."""
    # Costs are 9-place decimals: as integer nano-dollars the fit needs only integer sums and
    # two exact divisions (Fractions of big sums were ~1 ms per user).
    nanos = {d: int(v.scaleb(9)) for d, v in daily_cost.items()}
    month_start = today.replace(day=1)
    last_day = calendar.monthrange(today.year, today.month)[1]
    actual_before = sum(v for d, v in nanos.items() if month_start <= d < today)
    actual_today = nanos.get(today, 0)
    start = today - timedelta(days=LOOKBACK_DAYS)
    if first_day is not None and first_day > start:
        start = first_day
    points = [((d - today).days, nanos.get(d, 0)) for d in (start + timedelta(days=i) for i in range((today - start).days))]
    a, b = _trend(points, actual_today)
    remaining = range(1, last_day - today.day + 1)
    total = Fraction(actual_before) + max(Fraction(actual_today), max(Fraction(0), a))
    if b >= 0 or all(a + b * t >= 0 for t in remaining):
        # No day falls below zero: the sum of a + b·t over the remaining days in closed form.
        total += a * len(remaining) + b * sum(remaining)
    else:
        total += sum((max(Fraction(0), a + b * t) for t in remaining), Fraction(0))
    return round_money(total / 10**9)


def _trend(points: list[tuple[int, int]], today_so_far: int) -> tuple[Fraction, Fraction]:
    """(intercept, slope) of the least-squares line through `points`, or a flat rate."""
    if not points:
        return Fraction(today_so_far), Fraction(0)
    if len(points) == 1:
        return Fraction(points[0][1]), Fraction(0)
    n = len(points)
    st = sum(t for t, _ in points)
    sy = sum(y for _, y in points)
    stt = sum(t * t for t, _ in points)
    sty = sum(t * y for t, y in points)
    slope = Fraction(n * sty - st * sy, n * stt - st * st)
    return (sy - slope * st) / n, slope
