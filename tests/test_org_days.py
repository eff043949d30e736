"""A users page's count, totals and org-wide forecast (`analytics.users_page`, which reads
user_daily's org_days projection) equal an independent computation from the logged records
(tests/org_days_check.py builds the data and compares, in a fresh chDB process)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.servers import run_check


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_check("org_days_check", tmp_path_factory.mktemp("org_days"))  # type: ignore[no-any-return]


def test_page_totals_equal_the_records(checked: dict[str, Any]) -> None:
    # 7 ranges (aligned, odd, one day, empty, a model filter), each plain and with its quiet tail,
    # two sort paths, later pages and a cursor past the end; fresh, without the projection, after
    # the migration materialized it on old parts, after a user was erased and after another was
    # re-priced (costs updated in place, rollup rows rebuilt).
    assert checked["compared"] == 354  # fewer second pages once "multi" is erased
    assert checked["mismatches"] == []
    assert set(checked["past_rows"]) == {0}


def test_the_projection_is_what_is_read(checked: dict[str, Any]) -> None:
    assert checked["projection_read"] is True
    assert checked["projection_read_after_drop"] is False
    assert checked["projection_read_after_migration"] is True
