"""Imported history through the real gateway: exact ranges that cut through hours and days,
the month-end forecast on a known linear trend, and re-pricing once a price override arrives,
each figure checked against published per-token prices × tokens."""

from __future__ import annotations

import calendar
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import httpx

from tests.priced import M, price, record, s9
from tests.servers import GatewayProcess, create_key
from usagegate.backfill import send


def _wait_count(gw: GatewayProcess, key: str, n: int, **params: str) -> None:
    gw.wait_for_requests(key, n, timeout=15, **params)


def test_exact_ranges_cut_through_hours_and_days(gateway: GatewayProcess) -> None:
    key = create_key(gateway.data_dir, "history-org")
    base = datetime(2025, 3, 10, tzinfo=timezone.utc)
    times = [base + timedelta(hours=h, minutes=m) for h, m in
             [(9, 5), (9, 40), (10, 15), (13, 0), (23, 59), (24, 30), (48, 0), (50, 20), (50, 44), (71, 59)]]
    records = [record("hist", t, prompt=100 + i) for i, t in enumerate(times)]
    assert send(gateway.url, key, records) == len(records)
    _wait_count(gateway, key, len(records), **{"from": "2025-03-01", "to": "2025-04-01"})
    cost = {100 + i: price("gpt-4o-mini", 100 + i, 500, 200) for i in range(len(times))}
    ranges = [
        (base + timedelta(hours=9, minutes=30), base + timedelta(hours=50, minutes=30)),  # raw+hourly+daily+hourly+raw
        (base + timedelta(hours=9, minutes=6), base + timedelta(hours=9, minutes=41)),    # inside one hour
        (base + timedelta(hours=10), base + timedelta(hours=24)),                         # whole hours only
        (base, base + timedelta(days=3)),                                                 # whole days only
        (base + timedelta(hours=23, minutes=59), base + timedelta(hours=71, minutes=59)),
        (datetime(2025, 3, 1, tzinfo=timezone.utc), datetime(2025, 4, 1, tzinfo=timezone.utc)),  # monthly rollup
        (datetime(2025, 2, 27, 7, 30, tzinfo=timezone.utc), datetime(2025, 4, 2, 3, 10, tzinfo=timezone.utc)),
    ]
    for start, end in ranges:
        inside = [100 + i for i, t in enumerate(times) if start <= t < end]
        body = gateway.api(key, "/api/users", **{"from": start.isoformat(), "to": end.isoformat()}).json()
        if not inside:
            assert body["count"] == 0
            continue
        (row,) = body["users"]
        assert row["requests"] == len(inside), (start, end)
        assert row["prompt_tokens"] == sum(inside)
        assert row["cost_usd"] == s9(sum(cost[p] for p in inside))
        assert row["active_days"] == len({t.date() for t in times if start <= t < end})
    # Daily series over the 3 days: 5, 1 and 4 requests.
    detail = gateway.api(key, "/api/users/hist", **{"from": "2025-03-10", "to": "2025-03-13"}).json()
    assert [p["requests"] for p in detail["series"]] == [5, 1, 4]


def test_forecast_follows_a_known_linear_trend(gateway: GatewayProcess) -> None:
    """Daily cost c·(30 + t) on the 14 days before today (t = -14..-1): the fitted line is that
    line exactly, so the month-end forecast is the actual cost so far this month plus c·(30 + t)
    for today and every remaining day."""
    key = create_key(gateway.data_dir, "trend-org")
    today = datetime.now(timezone.utc).date()
    per_request = price("gpt-4o-mini", 1000, 500, 200)
    records = []
    for t in range(-14, 0):
        day = datetime.combine(today + timedelta(days=t), datetime.min.time(), tzinfo=timezone.utc)
        records += [record("grower", day + timedelta(minutes=3 * i)) for i in range(30 + t)]
    send(gateway.url, key, records)
    _wait_count(gateway, key, len(records), **{"from": str(today - timedelta(days=15)), "to": str(today + timedelta(days=1))})
    month_start = today.replace(day=1)
    last = calendar.monthrange(today.year, today.month)[1]
    actual = sum(per_request * (30 + t) for t in range(-14, 0) if today + timedelta(days=t) >= month_start)
    projected = sum(per_request * (30 + t) for t in range(0, last - today.day + 1))
    expected = s9((actual + projected))
    body = gateway.api(key, "/api/users").json()
    if today.day > 1:  # the user has traffic this month, so they are in this month's table
        assert body["users"][0]["forecast_month_usd"] == expected
    assert body["totals"]["forecast_month_usd"] == expected  # the org as a whole: one user
    detail = gateway.api(key, "/api/users/grower").json()
    assert detail["user"]["forecast_month_usd"] == expected


def test_price_override_reprices_the_users_table_too(gateway: GatewayProcess) -> None:
    """Unknown price → counted as unpriced, cost 0 in sums; an override re-prices the raw rows and
    the rollups the users table reads (an in-place UPDATE alone would not reach them)."""
    key = create_key(gateway.data_dir, "reprice-org")
    now = datetime.now(timezone.utc)
    model = "acme/house-model"
    send(gateway.url, key, [record("u1", now - timedelta(minutes=n), model=model, prompt=1000, completion=2000)
                            for n in range(3)])
    gateway.wait_for_requests(key, 3)
    (row,) = gateway.api(key, "/api/users").json()["users"]
    assert row["unpriced_requests"] == 3 and row["cost_usd"] == "0.000000000"
    response = httpx.put(f"{gateway.url}/api/prices/{model}", headers={"Authorization": f"Bearer {key}"},
                         json={"input_mtok": "1.5", "output_mtok": "3"}, timeout=30)
    assert response.status_code == 200 and response.json()["repriced_requests"] == 3
    (row,) = gateway.api(key, "/api/users").json()["users"]
    assert row["unpriced_requests"] == 0 and row["requests"] == 3
    assert row["cost_usd"] == s9(3 * (1000 * Decimal("1.5") + 2000 * Decimal(3)) / M)
