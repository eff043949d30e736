"""What the analytics tests compare with: published per-token prices, money as the API prints
it, and records to import (`usagegate.backfill.send`) at chosen times."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

M = Decimal(1_000_000)
# Published prices, USD per 1M tokens (input, output).
PRICES = {
    "gpt-4o-mini": (Decimal("0.15"), Decimal("0.6")),
    "gpt-4.1-mini": (Decimal("0.4"), Decimal("1.6")),
    "claude-3-5-haiku-20241022": (Decimal("0.8"), Decimal("4")),
}
NINE = Decimal("0.000000001")


def q9(value: Decimal | Fraction) -> Decimal:
    if isinstance(value, Fraction):
        value = Decimal(value.numerator) / Decimal(value.denominator)
    return value.quantize(NINE)


def s9(value: Decimal | Fraction) -> str:
    """A money string as the API prints it (never exponent form)."""
    return format(q9(value), "f")


def price(model: str, prompt: int, completion: int, status: int) -> Decimal:
    if status >= 400:
        return Decimal(0)
    inp, out = PRICES[model]
    return q9((prompt * inp + completion * out) / M)


def record(user: str, at: datetime, prompt: int = 1000, completion: int = 500, **extra: Any) -> dict[str, Any]:
    return {"user_id": user, "created_at": at.isoformat(), "model": "gpt-4o-mini", "provider": "openai",
            "prompt_tokens": prompt, "completion_tokens": completion, "latency_ms": 300,
            "request_id": str(uuid.uuid4()), **extra}
