"""Per-org price overrides: stored in config.db `prices`, read by the writer, applied to old rows.

- `set_price` / `get_price` / `list_prices` / `delete_price`: the `prices` table (USD per 1M
  tokens as decimal strings, so nothing is ever a float).
- `PriceOverrides`: the writer's lookup, `(org, model) -> PriceOverride`, reloaded when
  another connection commits to config.db (`refresh()`, once per batch, not per record).
- `reprice(store, org, model, override)`: on the store thread, set the cost of the org's rows
  of that model whose cost is unknown (NULL) — never rows that already have one (DESIGN §4).

The SQL repricing computes exactly what `Pricer` does with an override (same integer rates,
same half-even rounding to 9 places), so a row priced late equals one priced on arrival.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from usagegate.analytics import rebuild_user_rollups
from usagegate.config_db import ConfigDB
from usagegate.pricing import PriceOverride, override_rates
from usagegate.store import Store

FIELDS = ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok")
_NANO_DIGITS = 9


@dataclass(frozen=True, slots=True)
class PriceRow:
    model: str
    override: PriceOverride
    updated_at: float


def _text(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


def set_price(conn: sqlite3.Connection, org_id: str, model: str, override: PriceOverride) -> None:
    conn.execute(
        "INSERT INTO prices (org_id, model, input_mtok, output_mtok, cache_read_mtok, cache_write_mtok, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (org_id, model) DO UPDATE SET input_mtok = excluded.input_mtok, "
        "output_mtok = excluded.output_mtok, cache_read_mtok = excluded.cache_read_mtok, "
        "cache_write_mtok = excluded.cache_write_mtok, updated_at = excluded.updated_at",
        (org_id, model, _text(override.input_mtok), _text(override.output_mtok), _text(override.cache_read_mtok),
         _text(override.cache_write_mtok), time.time()),
    )


def _row(r: tuple[Any, ...]) -> PriceRow:
    return PriceRow(
        model=r[0],
        override=PriceOverride(
            input_mtok=Decimal(r[1]), output_mtok=Decimal(r[2]),
            cache_read_mtok=Decimal(r[3]) if r[3] is not None else None,
            cache_write_mtok=Decimal(r[4]) if r[4] is not None else None,
        ),
        updated_at=float(r[5]),
    )


_SELECT = "SELECT model, input_mtok, output_mtok, cache_read_mtok, cache_write_mtok, updated_at FROM prices"


def get_price(conn: sqlite3.Connection, org_id: str, model: str) -> PriceRow | None:
    r = conn.execute(_SELECT + " WHERE org_id = ? AND model = ?", (org_id, model)).fetchone()
    return _row(r) if r else None


def list_prices(conn: sqlite3.Connection, org_id: str) -> list[PriceRow]:
    return [_row(r) for r in conn.execute(_SELECT + " WHERE org_id = ? ORDER BY model", (org_id,))]


def delete_price(conn: sqlite3.Connection, org_id: str, model: str) -> bool:
    return conn.execute("DELETE FROM prices WHERE org_id = ? AND model = ?", (org_id, model)).rowcount > 0


class PriceOverrides:
    """The writer's override lookup. `refresh()` re-reads config.db if another connection
    committed since (returns the version seen); lookups between refreshes are dict reads."""

    def __init__(self, data_dir: Path) -> None:
        self._db = ConfigDB(data_dir)
        self._version = -1
        self._lock = threading.Lock()
        self._table: dict[tuple[str, str], PriceOverride] = {}

    def refresh(self) -> int:
        with self._lock:
            version = self._db.data_version()
            if version != self._version:
                rows = self._db.conn.execute(
                    "SELECT org_id, model, input_mtok, output_mtok, cache_read_mtok, cache_write_mtok, 0 FROM prices"
                ).fetchall()
                self._table = {(r[0], r[1]): _row(r[1:]).override for r in rows}
                self._version = version
            return version

    def __call__(self, org_id: str, model: str) -> PriceOverride | None:
        return self._table.get((org_id, model))

    def for_record(self, org_id: str, model: str, request_model: str) -> PriceOverride | None:
        """The override for the model that answered, else for the model that was asked for
        (an override for "gpt-4.1" covers answers from "gpt-4.1-2025-04-14")."""
        table = self._table
        found = table.get((org_id, model))
        if found is None and request_model and request_model != model:
            found = table.get((org_id, request_model))
        return found

    def close(self) -> None:
        self._db.close()


# -- repricing rows whose cost is unknown --------------------------------------------------------

_MATCH = (
    "org_id = {org:String} AND cost_usd IS NULL AND (model = {model:String} OR request_model = {model:String})"
)


def cost_sql(override: PriceOverride) -> tuple[str, dict[str, Any]]:
    """A ClickHouse expression for a row's cost under `override`, and its parameters.

    Same arithmetic as `Pricer`: integer rates scaled by 10**scale, units summed in Int256,
    then nanodollars with half-even rounding, then Decimal(38, 9)."""
    rates = override_rates(override)
    prompt = "greatest(prompt_tokens, cache_read_tokens + cache_write_tokens)"
    units = (
        f"(toInt256({prompt} - cache_read_tokens - cache_write_tokens) * {{r_in:Int256}}"
        " + toInt256(cache_read_tokens) * {r_read:Int256}"
        " + toInt256(cache_write_tokens - least(cache_write_1h_tokens, cache_write_tokens)) * {r_write:Int256}"
        " + toInt256(least(cache_write_1h_tokens, cache_write_tokens)) * {r_write_1h:Int256}"
        " + toInt256(completion_tokens) * {r_out:Int256})"
    )
    params: dict[str, Any] = {
        "r_in": rates.uncached, "r_read": rates.cache_read, "r_write": rates.cache_write,
        "r_write_1h": rates.cache_write_1h, "r_out": rates.output,
    }
    # units are USD x 10**-(6 + scale); nanodollars are USD x 10**-9.
    shift = 6 + rates.scale - _NANO_DIGITS
    if shift <= 0:
        params["mul"] = 10 ** (-shift)
        nanos = f"({units} * {{mul:Int256}})"
    else:
        params["div"] = 10**shift
        q = f"intDiv({units}, {{div:Int256}})"
        r = f"({units} - {q} * {{div:Int256}})"
        nanos = f"({q} + if(2 * {r} > {{div:Int256}} OR (2 * {r} = {{div:Int256}} AND {q} % 2 = 1), 1, 0))"
    return f"(toDecimal128({nanos}, 9) / 1000000000)", params


def reprice(store: Store, org_id: str, model: str, override: PriceOverride) -> int:
    """Price the org's unpriced rows of `model` (answered or requested) with `override`;
    returns how many. Run on the store thread (`store.call` / `store.acall`): inserts run
    there too, so no batch lands between the count and the update."""
    params: dict[str, Any] = {"org": org_id, "model": model}
    rows = store.select(f"SELECT count() AS n, groupUniqArray(user_id) AS users FROM requests WHERE {_MATCH}", params)
    count = int(rows[0]["n"]) if rows else 0
    if not count:
        return 0
    expr, cost_params = cost_sql(override)
    store.command(
        f"ALTER TABLE requests UPDATE cost_usd = {expr} WHERE {_MATCH} SETTINGS mutations_sync = 2",
        {**params, **cost_params},
    )
    # An UPDATE does not reach the materialized views: recompute those users' rollups.
    rebuild_user_rollups(store, org_id, rows[0]["users"])
    return count


__all__ = [
    "FIELDS", "PriceOverrides", "PriceRow", "cost_sql", "delete_price", "get_price", "list_prices", "reprice",
    "set_price",
]
