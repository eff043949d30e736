"""`PUT/GET/DELETE /api/prices/{model}` and `GET /api/prices`: per-org price overrides.

Body: `{"input_mtok": "1.5", "output_mtok": "2", "cache_read_mtok": "0.15", "cache_write_mtok": "1.875"}`,
USD per 1M tokens as decimal strings (input and output required; a missing cache rate bills those
tokens as input). Model names may contain `/` (`accounts/x/models/y`), hence the path converter.
An override wins over the published price for new records of that model (the model that answered,
else the one asked for); rows already recorded with an unknown cost are re-priced at once.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Body, Depends, Request

from usagegate.api.auth import config_changed, context, org_of
from usagegate.api.params import ApiError, bad_param, money, parse_money
from usagegate.price_overrides import FIELDS, PriceRow, delete_price, get_price, list_prices, reprice, set_price
from usagegate.pricing import PriceOverride

router = APIRouter()
REQUIRED = ("input_mtok", "output_mtok")
MAX_RATE = Decimal(1_000_000)  # USD per 1M tokens; anything above is a typo
MAX_PLACES = 9  # rates are shown, stored and applied exactly at 9 places
MAX_MODEL = 256


def _model(model: str) -> str:
    if not model or len(model) > MAX_MODEL or any(ord(c) < 32 or ord(c) == 127 for c in model):
        raise bad_param("model", f"The model name must be 1 to {MAX_MODEL} characters without control characters.")
    return model


def parse_override(body: Any) -> PriceOverride:
    if not isinstance(body, dict):
        raise bad_param("body", f"The body must be a JSON object with {', '.join(FIELDS)} (decimal strings).")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise bad_param(unknown[0], f"Unknown field {unknown[0]!r}; fields are {', '.join(FIELDS)}.")
    values: dict[str, Decimal | None] = {}
    for name in FIELDS:
        raw = body.get(name)
        if raw is None:
            if name in REQUIRED:
                raise bad_param(name, f"'{name}' is required (USD per 1M tokens, a decimal string such as \"2.50\").")
            values[name] = None
            continue
        amount = parse_money(raw, name)
        if amount < 0 or amount > MAX_RATE:
            raise bad_param(name, f"'{name}' must be from 0 to {MAX_RATE} (USD per 1M tokens).")
        if -amount.normalize().as_tuple().exponent > MAX_PLACES:  # type: ignore[operator]
            raise bad_param(name, f"'{name}' has more than {MAX_PLACES} decimal places.")
        values[name] = amount
    return PriceOverride(
        input_mtok=values["input_mtok"],  # type: ignore[arg-type]
        output_mtok=values["output_mtok"],  # type: ignore[arg-type]
        cache_read_mtok=values["cache_read_mtok"],
        cache_write_mtok=values["cache_write_mtok"],
    )


def render(row: PriceRow) -> dict[str, Any]:
    o = row.override
    return {
        "model": row.model,
        "input_mtok": money(o.input_mtok),
        "output_mtok": money(o.output_mtok),
        "cache_read_mtok": money(o.cache_read_mtok),
        "cache_write_mtok": money(o.cache_write_mtok),
        "updated_at": datetime.fromtimestamp(row.updated_at, timezone.utc).isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
    }


@router.get("/api/prices")
async def prices_list(request: Request, org: str = Depends(org_of)) -> dict[str, Any]:
    """This organization's price overrides, by model name."""
    rows = list_prices(context(request).config.conn, org)
    return {"prices": [render(r) for r in rows], "next_cursor": None}


@router.put("/api/prices/{model:path}")
async def put_price(model: str, request: Request, body: Any = Body(...), org: str = Depends(org_of)) -> dict[str, Any]:
    """Set (replace) the price of a model for this organization; re-prices rows of that model
    whose cost is unknown. Returns the override and `repriced_requests`."""
    model = _model(model)
    override = parse_override(body)
    ctx = context(request)
    set_price(ctx.config.conn, org, model, override)
    # Same store thread as the writer's inserts: a batch priced before the override was
    # committed is either stored already (and repriced here) or re-priced before it is stored.
    repriced = await ctx.store.acall(reprice, ctx.store, org, model, override)
    row = get_price(ctx.config.conn, org, model)
    assert row is not None
    await config_changed(request)  # budgets estimate with the new price from the next request
    return {**render(row), "repriced_requests": repriced}


@router.get("/api/prices/{model:path}")
async def read_price(model: str, request: Request, org: str = Depends(org_of)) -> dict[str, Any]:
    """The override set for a model (404 when none: the published price applies)."""
    row = get_price(context(request).config.conn, org, _model(model))
    if row is None:
        raise ApiError(404, f"No price override for model {model!r}; the published price applies.", "model")
    return render(row)


@router.delete("/api/prices/{model:path}")
async def remove_price(model: str, request: Request, org: str = Depends(org_of)) -> dict[str, Any]:
    """Remove an override: new records use the published price again (recorded costs stay)."""
    if not delete_price(context(request).config.conn, org, _model(model)):
        raise ApiError(404, f"No price override for model {model!r}.", "model")
    await config_changed(request)
    return {"deleted": True, "model": model}
