"""A range that ends in the future inside a month with nothing logged after its end reads that
month so far from the monthly rollup, with the same answers (tests/quiet_tail_check.py builds
the data and compares in a fresh chDB process: every users-table sort path, totals with the
forecast, breakdowns and per-user costs)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.servers import run_check


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_check("quiet_tail_check", tmp_path_factory.mktemp("quiet"))  # type: ignore[no-any-return]


CASES = ["31 days to tomorrow", "month so far", "model filter", "property filter", "user search",
         "ends at the clock", "starts mid-month", "records after the end"]


@pytest.mark.parametrize("case", CASES)
def test_reading_on_through_a_quiet_tail_changes_no_answer(checked: dict[str, Any], case: str) -> None:
    result = checked[case]
    assert result["equal"], result["diff"]
    assert result["users"] > 0


def test_quiet_tails_turn_the_month_so_far_into_its_monthly_row(checked: dict[str, Any]) -> None:
    for case in CASES:
        result = checked[case]
        assert result["quiet"] == result["expected"], case
        assert result["monthly"] == (["2026-11-01 00:00:00+00:00"] if result["expected"] else []), case


def test_a_tail_with_records_is_not_skipped(checked: dict[str, Any]) -> None:
    # Read on through it, the org's Nov 28 record would join a range that ends on Nov 27.
    assert checked["forced"] == {"requests": 2, "tiered": 1}
