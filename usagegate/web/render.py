"""Rendering a dashboard page: the template response, its security headers and the Jinja filters.

Money reaching a template is the API's exact decimal string; filters only change how it reads
(trailing zeros, thousands separators), never its value.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

import orjson
from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment
from markupsafe import Markup

from usagegate.api.params import money

# Nothing but this origin: scripts and data stay on 127.0.0.1 (plotly is served locally).
# Plotly sets inline styles on its SVG, hence 'unsafe-inline' for styles only.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
        "connect-src 'self'; font-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    # Pages hold per-user usage data: keep them out of shared and back-forward caches on disk.
    "Cache-Control": "no-store",
}


def page(request: Request, template: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    response: HTMLResponse = request.app.state.templates.TemplateResponse(
        request, template, context, status_code=status_code
    )
    response.headers.update(SECURITY_HEADERS)
    return response


def user_path(user_id: str) -> str:
    """The dashboard path of a user: the id percent-encoded whole (a '/' stays in one segment);
    the anonymous user (no id) is `%00`, as on /api/users."""
    return "/users/" + (quote(user_id, safe="") or "%00")


def _decimal(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def usd_exact(value: Any) -> str:
    """'$1,234.5' style with every significant digit of the exact amount (at least 2 places)."""
    amount = _decimal(value)
    if amount is None:
        return "—"
    text = format(amount.normalize(), "f")
    whole, _, frac = text.partition(".")
    frac = frac.ljust(2, "0")
    sign = "-" if whole.startswith("-") else ""
    return f"{sign}${int(whole.lstrip('-') or 0):,}.{frac}"


def usd(value: Any) -> str:
    """Money rounded for reading: cents from $1 up, four significant digits below a dollar."""
    amount = _decimal(value)
    if amount is None:
        return "—"
    if amount == 0:
        return "$0.00"
    sign, amount = ("-" if amount < 0 else ""), abs(amount)
    if amount >= 1:
        return f"{sign}${amount:,.2f}"
    # Four significant digits, never exponent notation: 0.00001223 → $0.00001223.
    places = max(2, 3 - amount.adjusted())
    text = format(amount.quantize(Decimal(1).scaleb(-places)), "f").rstrip("0")
    whole, _, frac = text.partition(".")
    return f"{sign}${whole}.{frac.ljust(2, '0')}"


def num(value: Any, places: int = 0) -> str:
    amount = _decimal(value)
    if amount is None:
        return "—"
    return f"{amount:,.{places}f}"


def compact(value: Any) -> str:
    """12,345 → 12.3k; for token counts in tight cells (the exact number goes in a title)."""
    amount = _decimal(value)
    if amount is None:
        return "—"
    for size, suffix in ((Decimal(10) ** 9, "B"), (Decimal(10) ** 6, "M"), (Decimal(10) ** 3, "k")):
        if abs(amount) >= size:
            return f"{amount / size:.1f}{suffix}"
    return f"{amount:,.0f}"


def pct(value: Any, places: int = 1) -> str:
    """A 0..1 ratio as a percentage."""
    amount = _decimal(value)
    if amount is None:
        return "—"
    return f"{amount * 100:.{places}f}%"


def when(value: Any) -> str:
    """ISO 8601 UTC → 'Jun 3, 14:05' (the full timestamp goes in a title)."""
    if not value:
        return "—"
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(timezone.utc)
    except ValueError:
        return str(value)
    return moment.strftime("%b %-d, %H:%M")


def figure_json(figure: dict[str, Any]) -> Markup:
    """A figure as JSON safe inside <script type="application/json"> (no '<', '>' or '&' left raw)."""
    text = orjson.dumps(figure, default=str).decode()
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def install_filters(env: Environment) -> None:
    env.filters.update(
        usd_exact=usd_exact, usd=usd, num=num, compact=compact, pct=pct, when=when, user_path=user_path,
        figure_json=figure_json, money9=money,
    )
    env.globals["one_day"] = timedelta(days=1)
