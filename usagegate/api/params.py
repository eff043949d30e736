"""Parsing and rendering shared by every /api route (DESIGN §4 conventions).

Time ranges (`from` inclusive, `to` exclusive, default the current UTC month), money as
decimal strings with 9 places, opaque cursors, and `ApiError` → one JSON error shape.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

NINE_PLACES = Decimal("0.000000001")
TWO_PLACES = Decimal("0.01")
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param

    def body(self) -> dict[str, Any]:
        return {"error": {"status": self.status, "message": self.message, "param": self.param}}


def bad_param(param: str, message: str) -> ApiError:
    return ApiError(400, message, param)


@dataclass(frozen=True, slots=True)
class TimeRange:
    start: datetime
    end: datetime

    def params(self) -> dict[str, str]:
        return {"t_from": ch_time(self.start), "t_to": ch_time(self.end)}


def ch_time(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def parse_time(value: str, param: str) -> datetime:
    text = value.strip()
    try:
        if len(text) == 10:
            parsed = datetime.combine(date.fromisoformat(text), datetime.min.time())
        else:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise bad_param(param, f"'{param}' must be an ISO 8601 date or datetime, got {value[:64]!r}.") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def month_start(moment: datetime) -> datetime:
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month(moment: datetime) -> datetime:
    start = month_start(moment)
    return start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)


def time_range(start: str | None, end: str | None, *, now: datetime | None = None) -> TimeRange:
    """The [from, to) range of a request; the current UTC calendar month by default."""
    now = now or datetime.now(timezone.utc)
    begin = parse_time(start, "from") if start else month_start(now)
    finish = parse_time(end, "to") if end else next_month(begin if start else now)
    if finish <= begin:
        raise bad_param("to", "'to' must be after 'from'.")
    return TimeRange(begin, finish)


def parse_limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_LIMIT
    try:
        limit = int(value)
    except ValueError:
        raise bad_param("limit", f"'limit' must be an integer from 1 to {MAX_LIMIT}.") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise bad_param("limit", f"'limit' must be an integer from 1 to {MAX_LIMIT}.")
    return limit


def parse_order(value: str | None, default: str = "desc") -> str:
    order = (value or default).lower()
    if order not in ("asc", "desc"):
        raise bad_param("order", "'order' must be 'asc' or 'desc'.")
    return order


def parse_money(value: Any, param: str) -> Decimal:
    if isinstance(value, float) or isinstance(value, bool):
        raise bad_param(param, f"'{param}' must be a decimal string such as \"12.50\", not a float.")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise bad_param(param, f"'{param}' must be a decimal string such as \"12.50\".") from None
    if not amount.is_finite():
        raise bad_param(param, f"'{param}' must be a finite decimal.")
    return amount


def money(value: Any) -> str | None:
    """A store decimal (string or number) as a 9-place decimal string; None stays None."""
    if value is None:
        return None
    # format "f": str() would render zero as "0E-9".
    return format(Decimal(str(value)).quantize(NINE_PLACES), "f")


def iso(value: str | None) -> str | None:
    """ClickHouse 'YYYY-MM-DD hh:mm:ss.mmm' (UTC) → ISO 8601 with milliseconds and Z."""
    if not value:
        return None
    text = value.replace(" ", "T")
    if "." not in text:
        text += ".000"
    return text + "Z"


def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(values)).decode().rstrip("=")


def decode_cursor(cursor: str, size: int) -> list[Any]:
    try:
        values = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error, orjson.JSONDecodeError):
        raise bad_param("cursor", "'cursor' is not a cursor this API returned.") from None
    if not isinstance(values, list) or len(values) != size:
        raise bad_param("cursor", "'cursor' is not a cursor this API returned.")
    return values
