"""What a dashboard URL asks for: time range, filters, sort and page, and links that change one of them.

Query parameters: `range` = month (default) | 7d | 30d | custom, with `start`/`end` as inclusive
dates for custom; `model`; `property.<name>=<value>` (repeatable); `q` (user id search); `sort`,
`order`, `limit`, `cursor`, `page`; `pf=<name>=<value>` adds a property filter. Bad values fall back to defaults (or raise `BadView` where a
silent fallback would mislead), since a dashboard link should not fail on a typo.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

from starlette.datastructures import QueryParams

from usagegate.analytics import Scope

RANGES = {"month": "This month", "7d": "Last 7 days", "30d": "Last 30 days", "custom": "Custom"}
PAGE_SIZES = (25, 50, 100, 250)
DEFAULT_LIMIT = 50


class BadView(ValueError):
    """A query parameter the dashboard cannot honour; the message is shown on the page."""


def _day(moment: date) -> datetime:
    return datetime.combine(moment, time.min, tzinfo=timezone.utc)


@dataclass(frozen=True)
class View:
    range: str = "month"
    start: date | None = None  # custom range, inclusive
    end: date | None = None  # custom range, inclusive
    model: str | None = None
    properties: tuple[tuple[str, str], ...] = ()
    q: str | None = None
    sort: str | None = None
    order: str | None = None
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None
    page: int = 1
    today: date = field(default_factory=lambda: datetime.now(timezone.utc).date())

    @classmethod
    def from_query(cls, query: QueryParams, *, today: date | None = None) -> View:
        view = cls() if today is None else cls(today=today)
        rng = query.get("range", "month")
        if rng not in RANGES:
            rng = "month"
        start = end = None
        if rng == "custom":
            try:
                start = date.fromisoformat(query.get("start", ""))
                end = date.fromisoformat(query.get("end", ""))
            except ValueError:
                raise BadView("A custom range needs a start and an end date (YYYY-MM-DD).") from None
            if end < start:
                raise BadView("The end date of the custom range is before its start date.")
        props = [
            (k[len("property."):].strip().lower(), v) for k, v in query.multi_items()
            if k.startswith("property.") and k[len("property."):].strip()
        ]
        # `pf=name=value` comes from the "Filter by property" select, which cannot vary its name.
        for picked in query.getlist("pf"):
            name, sep, value = picked.partition("=")
            if sep and name.strip() and (name.strip().lower(), value) not in props:
                props.append((name.strip().lower(), value))
        try:
            limit = int(query.get("limit", DEFAULT_LIMIT))
            page = max(1, int(query.get("page", 1)))
        except ValueError:
            limit, page = DEFAULT_LIMIT, 1
        order = query.get("order")
        return replace(
            view, range=rng, start=start, end=end, model=query.get("model") or None, properties=tuple(props),
            q=(query.get("q") or "").strip() or None, sort=query.get("sort") or None,
            order=order if order in ("asc", "desc") else None,
            limit=limit if limit in PAGE_SIZES else DEFAULT_LIMIT, cursor=query.get("cursor") or None, page=page,
        )

    # -- the time range -------------------------------------------------------------------------

    def span(self) -> tuple[datetime, datetime]:
        """[from, to) in UTC."""
        if self.range == "7d":
            return _day(self.today - timedelta(days=6)), _day(self.today + timedelta(days=1))
        if self.range == "30d":
            return _day(self.today - timedelta(days=29)), _day(self.today + timedelta(days=1))
        if self.range == "custom" and self.start and self.end:
            return _day(self.start), _day(self.end + timedelta(days=1))
        first = self.today.replace(day=1)
        nxt = first.replace(year=first.year + 1, month=1) if first.month == 12 else first.replace(month=first.month + 1)
        return _day(first), _day(nxt)

    def span_label(self) -> str:
        begin, finish = self.span()
        last = (finish - timedelta(days=1)).date()
        if self.range == "month":
            return begin.strftime("%B %Y")
        if begin.year == last.year:
            return f"{begin:%b %-d} – {last:%b %-d, %Y}"
        return f"{begin:%b %-d, %Y} – {last:%b %-d, %Y}"

    def interval(self) -> str:
        begin, finish = self.span()
        return "hour" if finish - begin <= timedelta(days=3) else "day"

    def scope(self, org: str, *, filters: bool = True) -> Scope:
        begin, finish = self.span()
        if not filters:
            return Scope(org=org, start=begin, end=finish)
        return Scope(org=org, start=begin, end=finish, model=self.model, properties=self.properties, q=self.q)

    # -- links ----------------------------------------------------------------------------------

    def params(self, *, keep_page: bool = False, **changes: Any) -> list[tuple[str, str]]:
        """The query of this view with `changes` applied (None removes a parameter)."""
        values: dict[str, Any] = {
            "range": None if self.range == "month" else self.range,
            "start": self.start.isoformat() if self.range == "custom" and self.start else None,
            "end": self.end.isoformat() if self.range == "custom" and self.end else None,
            "model": self.model, "q": self.q, "sort": self.sort, "order": self.order,
            "limit": None if self.limit == DEFAULT_LIMIT else self.limit,
            "cursor": self.cursor if keep_page else None, "page": self.page if keep_page and self.page > 1 else None,
        }
        properties = list(self.properties)
        for name, value in changes.items():
            if name == "properties":
                properties = list(value)
            else:
                values[name] = value
        out = [(k, str(v)) for k, v in values.items() if v is not None and k not in ("cursor", "page")]
        out += [(f"property.{name}", value) for name, value in properties]
        out += [(k, str(values[k])) for k in ("cursor", "page") if values[k] is not None]
        return out

    def url(self, path: str, **changes: Any) -> str:
        query = urlencode(self.params(**changes))
        return f"{path}?{query}" if query else path

    def range_url(self, path: str, rng: str) -> str:
        return self.url(path, range=None if rng == "month" else rng, start=None, end=None)

    def range_query(self) -> str:
        """Only the time range, for links to another page (a user page keeps the range)."""
        query = urlencode([(k, v) for k, v in self.params() if k in ("range", "start", "end")])
        return f"?{query}" if query else ""

    def without_property(self, path: str, name: str, value: str) -> str:
        return self.url(path, properties=[p for p in self.properties if p != (name, value)])
