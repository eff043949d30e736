"""The month-end forecast's arithmetic on hand-made daily costs (pure function, exact)."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from usagegate.forecast import month_forecast

TODAY = date(2025, 4, 20)  # 30-day month: today + 10 more days


def _days(values: dict[int, str]) -> dict[date, Decimal]:
    return {TODAY + timedelta(days=t): Decimal(v) for t, v in values.items()}


def test_flat_history_projects_the_same_rate() -> None:
    daily = _days({t: "1.5" for t in range(-19, 0)})
    # 19 days this month before today + today + 10 days, all at 1.5.
    assert month_forecast(daily, TODAY, TODAY - timedelta(days=40)) == Decimal("45.000000000")


def test_falling_trend_is_floored_at_zero() -> None:
    daily = _days({t: str(-t) for t in range(-14, 0)})  # 14, 13, ... 1: next days 0, -1... → 0
    actual = sum(-t for t in range(-14, 0))  # all 14 days are in April; the line hits 0 today
    assert month_forecast(daily, TODAY, None) == Decimal(actual).quantize(Decimal("1e-9"))


def test_new_user_extrapolates_today() -> None:
    daily = _days({0: "0.25"})
    assert month_forecast(daily, TODAY, TODAY) == Decimal("2.750000000")  # today + 10 days at 0.25


def test_one_day_of_history_is_a_flat_rate_and_today_never_below_actual() -> None:
    daily = _days({-1: "1", 0: "3"})
    # yesterday 1, today already 3 (> predicted 1), then 10 days at 1.
    assert month_forecast(daily, TODAY, TODAY - timedelta(days=1)) == Decimal("14.000000000")


def test_result_is_rounded_half_even_to_nine_places() -> None:
    daily = _days({-2: "0.000000001", -1: "0.000000002"})
    # line through (-2, 1n) and (-1, 2n): today 3n, then 4n..13n; before today 3n → 3 + 3 + 85 = 91 nano.
    assert month_forecast(daily, TODAY, TODAY - timedelta(days=2)) == Decimal("0.000000091")
