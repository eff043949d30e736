"""How a [from, to) range is cut into rollup tiers (pure; the end-to-end exactness is in
test_analytics.py::test_exact_ranges_cut_through_hours_and_days)."""

from __future__ import annotations

from datetime import datetime, timezone

from usagegate.analytics import segments


def t(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def test_whole_month_reads_the_monthly_rollup() -> None:
    assert segments(t("2025-03-01"), t("2025-04-01")) == [("user_monthly", t("2025-03-01"), t("2025-04-01"))]


def test_ragged_range_uses_every_tier_once_and_covers_it_exactly() -> None:
    start, end = t("2025-01-30 10:30"), t("2025-04-02 05:15")
    parts = segments(start, end)
    assert [p[0] for p in parts] == ["requests", "user_hourly", "user_daily", "user_monthly", "user_daily",
                                     "user_hourly", "requests"]
    assert parts[0][1] == start and parts[-1][2] == end
    assert all(a[2] == b[1] for a, b in zip(parts, parts[1:]))  # contiguous, no overlap
    assert parts[3][1:] == (t("2025-02-01"), t("2025-04-01"))


def test_coarsest_limits_the_tier() -> None:
    assert {p[0] for p in segments(t("2025-03-01"), t("2025-05-01"), coarsest="day")} == {"user_daily"}
    assert {p[0] for p in segments(t("2025-03-01"), t("2025-03-03"), coarsest="hour")} == {"user_hourly"}
    assert segments(t("2025-03-01 10:05"), t("2025-03-01 10:50")) == [
        ("requests", t("2025-03-01 10:05"), t("2025-03-01 10:50"))]
