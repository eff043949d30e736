"""Turn spooled records into one columnar (Arrow) batch, priced, and insert it into the store.

Pricing happens here, in the writer thread, not on the proxy's hot path (DESIGN §2).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pyarrow as pa

from usagegate.pricing import PriceOverride, Pricer
from usagegate.records import Usage
from usagegate.store import Store

MONEY = pa.decimal128(38, 9)

SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("org_id", pa.string()),
        ("created_at", pa.timestamp("ms", tz="UTC")),
        ("user_id", pa.string()),
        ("provider", pa.string()),
        ("model", pa.string()),
        ("request_model", pa.string()),
        ("method", pa.string()),
        ("path", pa.string()),
        ("status", pa.uint16()),
        ("rate_limited", pa.bool_()),
        ("stream", pa.bool_()),
        ("prompt_tokens", pa.uint64()),
        ("completion_tokens", pa.uint64()),
        ("cache_read_tokens", pa.uint64()),
        ("cache_write_tokens", pa.uint64()),
        ("cache_write_1h_tokens", pa.uint64()),
        ("reasoning_tokens", pa.uint64()),
        ("cost_usd", MONEY),
        ("usage_source", pa.string()),
        ("latency_ms", pa.uint32()),
        ("ttft_ms", pa.uint32()),
        ("properties", pa.map_(pa.string(), pa.string())),
        ("session_id", pa.string()),
        ("session_path", pa.string()),
        ("session_name", pa.string()),
        ("error", pa.string()),
        ("request_body", pa.string()),
        ("response_body", pa.string()),
        ("ingested_at", pa.timestamp("us", tz="UTC")),
    ]
)

_DEFAULTS: dict[str, Any] = {
    "prompt_tokens": 0, "completion_tokens": 0, "cache_read_tokens": 0, "cache_write_tokens": 0,
    "cache_write_1h_tokens": 0, "reasoning_tokens": 0, "latency_ms": 0, "ttft_ms": None, "rate_limited": False,
    "stream": False, "usage_source": "provider", "error": "", "request_body": "", "response_body": "",
    "session_id": "", "session_path": "", "session_name": "", "properties": {}, "method": "POST",
}

OverrideLookup = Callable[[str, str], PriceOverride | None]


def record_cost(pricer: Pricer, record: dict[str, Any], override: PriceOverride | None) -> Decimal | None:
    usage = Usage(
        prompt_tokens=record.get("prompt_tokens", 0),
        completion_tokens=record.get("completion_tokens", 0),
        cache_read_tokens=record.get("cache_read_tokens", 0),
        cache_write_tokens=record.get("cache_write_tokens", 0),
        cache_write_1h_tokens=record.get("cache_write_1h_tokens", 0),
        reasoning_tokens=record.get("reasoning_tokens", 0),
    )
    if record.get("rate_limited"):
        return Decimal(0)
    return pricer.cost(record["provider"], record["model"], usage, status=record["status"], override=override,
                       billed=record.get("billed", False))


def _override(overrides: OverrideLookup, record: dict[str, Any]) -> PriceOverride | None:
    for_record = getattr(overrides, "for_record", None)
    if for_record is not None:  # PriceOverrides: falls back to the requested model's override
        return for_record(record["org_id"], record["model"], record.get("request_model", ""))  # type: ignore[no-any-return]
    return overrides(record["org_id"], record["model"])


def to_arrow(
    records: list[dict[str, Any]], pricer: Pricer, overrides: OverrideLookup, *, ingested_at_us: int | None = None
) -> pa.Table:
    """The batch as an Arrow table in `SCHEMA`; `ingested_at_us` (µs since the epoch) stamps every row."""
    stamp = time.time_ns() // 1000 if ingested_at_us is None else ingested_at_us
    # Column by column with one comprehension each, and overrides looked up once per (org, model,
    # requested model) per batch: the cell-by-cell loop was the writer's largest cost (py-spy).
    found: dict[tuple[str, str, str], PriceOverride | None] = {}

    def override(record: dict[str, Any]) -> PriceOverride | None:
        key = (record["org_id"], record["model"], record.get("request_model", ""))
        if key not in found:
            found[key] = _override(overrides, record)
        return found[key]

    columns: dict[str, list[Any]] = {}
    for name in SCHEMA.names:
        if name == "ingested_at":
            columns[name] = [stamp] * len(records)
        elif name == "cost_usd":
            columns[name] = [record_cost(pricer, r, override(r)) for r in records]
        elif name == "properties":
            columns[name] = [list(r.get("properties", {}).items()) for r in records]
        else:
            default = _DEFAULTS.get(name)
            columns[name] = [r.get(name, default) for r in records]
    return pa.table(columns, schema=SCHEMA)


class Ingest:
    """The BatchWriter's insert function: price, convert, insert with the batch's dedup token."""

    def __init__(self, store: Store, pricer: Pricer, overrides: OverrideLookup) -> None:
        self._store = store
        self._pricer = pricer
        self._overrides = overrides
        self._stamp = 0

    def __call__(self, records: list[dict[str, Any]], token: str) -> None:
        refresh = getattr(self._overrides, "refresh", None)
        version = refresh() if refresh is not None else None
        table = to_arrow(records, self._pricer, self._overrides)

        def insert() -> None:
            nonlocal table
            # An override that arrived while we priced re-prices the NULL rows already stored
            # (on this same store thread); this batch is not stored yet, so price it again.
            if refresh is not None and refresh() != version:
                table = to_arrow(records, self._pricer, self._overrides)
            # Stamped here, on the one store thread: strictly increasing in commit order across
            # every writer, so "ingested_at <= max visible" is a snapshot (see migrations.py).
            self._stamp = max(time.time_ns() // 1000, self._stamp + 1)
            stamps = pa.array([self._stamp] * table.num_rows, SCHEMA.field("ingested_at").type)
            table = table.set_column(SCHEMA.get_field_index("ingested_at"), "ingested_at", stamps)
            self._store.insert_arrow("requests", table, token)

        self._store.call(insert)
