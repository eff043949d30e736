"""Per-user analytics over the log store, one module per question:

- `facts`: the rows every query reads (rollups plus raw-table edges for an exact range), `Scope`,
  and the time helpers;
- `users`: the users table (pages, totals, export rows);
- `detail`: one user (existence, the detail page, recent requests);
- `forecasts`: month-end forecasts per user and for the scope;
- `breakdown`: per model or property value, and per-user costs;
- `profitability`: plan revenue against cost;
- `erase`: erasing a user, rebuilding rollup rows;
- `quiet_tail`: reading a month so far from the monthly rollup when nothing follows the range.

Money leaves every query as a decimal string (ClickHouse Decimal(38, 9) sums are exact) and is
turned into `Decimal`s here; derived money (averages, forecasts) is rounded half-even once.
Callers use the names below (`from usagegate import analytics; analytics.users(...)`).
"""

from __future__ import annotations

from usagegate.analytics.breakdown import breakdown, user_costs
from usagegate.analytics.detail import (
    RECENT_COLUMNS,
    UserDetail,
    cost_by_model,
    cost_by_property,
    recent_requests,
    series,
    user_detail,
    user_exists,
)
from usagegate.analytics.erase import delete_user, rebuild_user_rollups
from usagegate.analytics.facts import (
    DAY,
    EPOCH,
    HOUR,
    MONEY,
    Scope,
    Sql,
    ch_time,
    facts,
    floor_time,
    month_ceil,
    month_floor,
    segments,
)
from usagegate.analytics.forecasts import org_forecast, user_forecasts
from usagegate.analytics.quiet_tail import with_quiet_tail
from usagegate.analytics.profitability import PROFIT_SORTS, month_share, plan_summary, prorated, profitability
from usagegate.analytics.users import (
    USER_SORTS,
    Page,
    all_users,
    empty_user_row,
    latest_properties,
    user_totals,
    users,
    users_page,
    users_sql,
)

__all__ = [
    "DAY", "EPOCH", "HOUR", "MONEY", "PROFIT_SORTS", "RECENT_COLUMNS", "USER_SORTS", "Page", "Scope", "Sql",
    "UserDetail", "all_users", "breakdown", "ch_time", "cost_by_model", "cost_by_property", "delete_user",
    "empty_user_row", "facts", "floor_time", "latest_properties", "month_ceil", "month_floor", "month_share",
    "org_forecast", "plan_summary", "prorated", "profitability", "rebuild_user_rollups", "recent_requests",
    "segments", "series", "user_costs", "user_detail", "user_exists", "user_forecasts", "user_totals", "users",
    "users_page", "users_sql", "with_quiet_tail",
]
