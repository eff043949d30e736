"""analytics.user_detail (one store query, sums in Python) answers exactly what the separate
queries it replaced answer: the users table's row, series, cost by model and property, forecast
and existence (tests/detail_check.py builds the data and compares, in a fresh chDB process)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.servers import run_check


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_check("detail_check", tmp_path_factory.mktemp("detail"))  # type: ignore[no-any-return]


def test_detail_equals_the_queries_it_replaced(checked: dict[str, Any]) -> None:
    # 8 (now, range) cases x 12 users: months, odd ranges, filters, unknown and anonymous users.
    assert checked["compared"] == 96
    assert checked["mismatch_count"] == 0, checked["mismatches"]


def test_detail_asks_the_store_only_what_the_facts_cannot_tell(checked: dict[str, Any]) -> None:
    # An active user: fact rows and p95 in one query. A user first seen inside the forecast window
    # (was there anything earlier?), one with no rows in range or window, and an unknown user:
    # one probe more.
    assert checked["queries"] == {"active": 1, "new": 2, "gap": 2, "idle": 2, "unknown": 2}


def test_detail_row_edge_cases(checked: dict[str, Any]) -> None:
    tie, errs, one = (checked["samples"][u] for u in ("tie", "errs", "one"))
    # Top model on a tie of request counts: argMax(model, (requests, model)) = the greater name.
    assert tie["top_model"] == "b-model" and tie["requests"] == 5 and tie["active_days"] == 2
    # Errors only (one unpriced): integral ratios come back as ints, as ClickHouse prints them.
    assert errs["error_rate"] == 1 and errs["unpriced_requests"] == 1 and errs["cost_usd"] == "0"
    assert one["requests"] == 1 and one["avg_requests_per_day"] == 1 and one["first_seen"] == one["last_seen"]
    # ClickHouse's round(x, n) on a Float64 is x * 10^n rounded half to even, then divided: 8/160 ms
    # = 0.05 rounds to 0.0 there (0.05 * 10 is exactly 0.5), where Python's round(0.05, 1) is 0.1;
    # 1/160 = 0.00625 rounds to 0.0062 (Python: 0.0063).
    ratio = checked["samples"]["ratio"]
    assert ratio["avg_latency_ms"] == 0 and ratio["error_rate"] == 0.0062 and ratio["rate_limited"] == 1
    # The latest value of a property that changed during the month.
    assert checked["samples"]["props"]["properties"]["plan"] == "pro"
