"""What a request cost, from `genai-prices` rates and per-org overrides.

`genai_prices.calc_price` costs ~60 µs a call, too slow for the writer pricing thousands of
records a second. So the first time a (provider, model) is priced we take its rates from
genai-prices and keep them as integers scaled to a common power of ten; a cost is then a
handful of int multiplications and one Decimal rounding. Models whose price depends on the
prompt size (tiered) or on the time of day fall back to `calc_price` per call; prices that
change on a start date are cached until the next one.

Cost rules (DESIGN §2): cached input at the cache-read rate, cache writes at the write rate
(1-hour writes at the 1-hour rate when there is one), reasoning as output; rounded half-even
to 9 places. Unknown model -> None, never 0. An error response the provider does not bill
(status >= 400) -> 0; billed anyway: 499 (the client went away) with tokens recorded, and
`billed=True` (the upstream answered 2xx, then broke off: the record carries the tokens it
produced before the cut). A 499 without tokens never reached the provider (the client left
while sending its body): 0, not None, whatever the model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from .records import Usage

NANO = Decimal("0.000000001")
_CLIENT_CLOSED = 499
_CACHE_LIMIT = 4096  # distinct (provider, model) names kept; model names come from clients
_TOKEN_KEYS = ("input_mtok", "cache_read_mtok", "cache_write_mtok", "cache_write_1h_mtok", "output_mtok")


@dataclass(frozen=True, slots=True)
class PriceOverride:
    """An org's own price for a model, USD per 1M tokens; cache rates default to input."""

    input_mtok: Decimal
    output_mtok: Decimal
    cache_read_mtok: Decimal | None = None
    cache_write_mtok: Decimal | None = None


@dataclass(frozen=True, slots=True)
class _Rates:
    """Per-token rates as ints: USD per 1M tokens x 10**scale (per request: per 1k requests)."""

    scale: int
    uncached: int
    cache_read: int
    cache_write: int
    cache_write_1h: int
    output: int
    per_1k_requests: int

    def cost(self, usage: Usage) -> Decimal:
        prompt, read, write, write_1h = _consistent(usage)
        units = (
            (prompt - read - write) * self.uncached
            + read * self.cache_read
            + (write - write_1h) * self.cache_write
            + write_1h * self.cache_write_1h
            + usage.completion_tokens * self.output
            # 1 request at a per-1000 price == 1000 "tokens" at that price per 1M.
            + 1000 * self.per_1k_requests
        )
        return Decimal(units).scaleb(-6 - self.scale).quantize(NANO, ROUND_HALF_EVEN)


def _consistent(usage: Usage) -> tuple[int, int, int, int]:
    """prompt, cache read, cache write, 1h write with the parts never exceeding the whole."""
    read = usage.cache_read_tokens
    write = usage.cache_write_tokens
    write_1h = min(usage.cache_write_1h_tokens, write)
    return max(usage.prompt_tokens, read + write), read, write, write_1h


def _scaled(values: list[Decimal]) -> tuple[int, list[int]]:
    scale = max((-int(v.as_tuple().exponent) for v in values), default=0)
    scale = max(scale, 0)
    return scale, [int(v.scaleb(scale)) for v in values]


def _rates(
    input_mtok: Decimal | None,
    cache_read_mtok: Decimal | None,
    cache_write_mtok: Decimal | None,
    cache_write_1h_mtok: Decimal | None,
    output_mtok: Decimal | None,
    requests_kcount: Decimal | None = None,
) -> _Rates:
    # A missing cache rate means those tokens are billed as plain input (genai-prices does
    # the same: an unpriced sub-unit falls into its parent).
    zero = Decimal(0)
    read = cache_read_mtok if cache_read_mtok is not None else input_mtok
    write = cache_write_mtok if cache_write_mtok is not None else input_mtok
    write_1h = cache_write_1h_mtok if cache_write_1h_mtok is not None else write
    values = [v if v is not None else zero for v in (input_mtok, read, write, write_1h, output_mtok, requests_kcount)]
    scale, ints = _scaled(values)
    return _Rates(scale, *ints)


def override_rates(override: PriceOverride) -> _Rates:
    """The integer rates an override prices with (also used to reprice rows in SQL)."""
    return _rates(
        override.input_mtok,
        override.cache_read_mtok,
        override.cache_write_mtok,
        None,
        override.output_mtok,
    )


@dataclass(slots=True)
class _Entry:
    """One model's pricing: fixed rates until `valid_until` (epoch s), or calc_price per call."""

    model_ref: str
    model: Any  # genai_prices.types.ModelInfo
    rates: _Rates | None
    valid_until: float


class Pricer:
    """Prices usages; holds per-model rates cached on first use. Thread-safe enough: the
    caches are dicts filled idempotently."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], _Entry | None] = {}
        self._overrides: dict[PriceOverride, _Rates] = {}

    def cost(
        self,
        provider: str,
        model: str | None,
        usage: Usage,
        *,
        status: int,
        override: PriceOverride | None = None,
        billed: bool = False,
    ) -> Decimal | None:
        """USD cost of one request, rounded half-even to 9 places; None when the model has
        no known price and no override; Decimal 0 for unbilled errors (status >= 400, except
        499 with tokens and errors marked `billed`)."""
        if status >= 400 and not billed and (
            status != _CLIENT_CLOSED or not (usage.prompt_tokens or usage.completion_tokens)
        ):
            return Decimal(0)
        if override is not None:
            rates = self._overrides.get(override)
            if rates is None:
                if len(self._overrides) >= _CACHE_LIMIT:
                    self._overrides.clear()
                rates = self._overrides[override] = override_rates(override)
            return rates.cost(usage)
        if not model:
            return None
        entry = self._entry(provider, model)
        if entry is None:
            return None
        if entry.rates is not None and time.time() < entry.valid_until:
            return entry.rates.cost(usage)
        if entry.rates is not None:  # a dated price change has come: re-read the rates
            self._entries.pop((provider, model), None)
            return self.cost(provider, model, usage, status=status, billed=billed)
        return _calc_price(provider, entry.model_ref, usage)

    def has_price(self, provider: str, model: str | None) -> bool:
        """Whether genai-prices knows `model` from `provider`."""
        return bool(model) and self._entry(provider, model) is not None  # type: ignore[arg-type]

    def max_output_tokens(self, provider: str, model: str | None) -> int | None:
        """The model's output-token limit. genai-prices does not publish output limits
        (only `context_window`), so this is always None for now."""
        return None

    def context_window(self, provider: str, model: str | None) -> int | None:
        """The model's context window (max input tokens) per genai-prices, else None."""
        entry = self._entry(provider, model) if model else None
        window = getattr(entry.model, "context_window", None) if entry else None
        return window if isinstance(window, int) else None

    def _entry(self, provider: str, model: str) -> _Entry | None:
        key = (provider, model)
        try:
            return self._entries[key]
        except KeyError:
            pass
        if len(self._entries) >= _CACHE_LIMIT:
            self._entries.clear()
        entry = self._entries[key] = _load(provider, model)
        return entry


def _load(provider: str, model_ref: str) -> _Entry | None:
    from genai_prices import data_snapshot, types

    try:
        _, model = data_snapshot.get_snapshot().find_provider_model(model_ref, None, provider, None)
    except LookupError:
        return None
    now = datetime.now(tz=UTC)
    if isinstance(model.prices, types.ModelPrice):
        price, valid_until = model.prices, float("inf")
    elif all(c.constraint is None or isinstance(c.constraint, types.StartDateConstraint) for c in model.prices):
        price = model.get_prices(now)
        upcoming = [
            c.constraint.start_date
            for c in model.prices
            if isinstance(c.constraint, types.StartDateConstraint) and c.constraint.start_date > now.date()
        ]
        valid_until = (
            datetime.combine(min(upcoming), datetime.min.time(), UTC).timestamp() if upcoming else float("inf")
        )
    else:  # time-of-day prices
        return _Entry(model_ref, model, None, 0.0)
    values = [getattr(price, key, None) for key in (*_TOKEN_KEYS, "requests_kcount")]
    if not all(v is None or isinstance(v, Decimal) for v in values):
        return _Entry(model_ref, model, None, 0.0)  # tiered by prompt size
    return _Entry(model_ref, model, _rates(*values), valid_until)


def _calc_price(provider: str, model_ref: str, usage: Usage) -> Decimal | None:
    from genai_prices import Usage as GPUsage
    from genai_prices import calc_price

    prompt, read, write, write_1h = _consistent(usage)
    gp_usage = GPUsage(
        input_tokens=prompt,
        cache_read_tokens=read,
        cache_write_tokens=write,
        cache_write_1h_tokens=write_1h,
        output_tokens=usage.completion_tokens,
    )
    try:
        result = calc_price(gp_usage, model_ref, provider_id=provider)
    except (LookupError, ValueError):
        return None
    return result.total_price.quantize(NANO, ROUND_HALF_EVEN)


__all__ = ["NANO", "PriceOverride", "Pricer", "override_rates"]
