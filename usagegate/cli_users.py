"""CLI analytics commands (`users`, `user`, `export`): the running gateway's /api as Rich tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional
from urllib.parse import quote

import typer
from rich.console import Console
from rich.table import Table

from usagegate.client import DEFAULT_URL, ApiClient
from usagegate.errors import UsagegateError

console = Console()

URL = typer.Option(DEFAULT_URL, "--url", envvar="USAGEGATE_URL", help="The running gateway (env USAGEGATE_URL).")
KEY = typer.Option(None, "--key", envvar="USAGEGATE_KEY", help="Usagegate key (env USAGEGATE_KEY).")
FROM = typer.Option(None, "--from", help="Inclusive start, ISO 8601 (default: start of this UTC month).")
TO = typer.Option(None, "--to", help="Exclusive end, ISO 8601 (default: start of next month).")


def _filters(start: Optional[str], end: Optional[str], model: Optional[str], prop: list[str], q: Optional[str]) -> list[tuple[str, str]]:
    params = [(k, v) for k, v in (("from", start), ("to", end), ("model", model), ("q", q)) if v]
    for item in prop:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UsagegateError(f"--property takes NAME=VALUE, got {item!r}.")
        params.append((f"property.{name.strip()}", value))
    return params


def _user_label(user_id: str) -> str:
    return user_id if user_id else "(anonymous)"


def users(
    url: str = URL, key: Optional[str] = KEY, start: Optional[str] = FROM, end: Optional[str] = TO,
    sort: str = typer.Option("cost_usd", help="Column to sort by (any users-table column)."),
    order: Optional[str] = typer.Option(None, help="asc or desc."),
    limit: int = typer.Option(50, help="Rows to show (1-1000)."),
    cursor: Optional[str] = typer.Option(None, help="Continue from a previous page's cursor."),
    model: Optional[str] = typer.Option(None, help="Only requests answered by this model."),
    prop: list[str] = typer.Option([], "--property", help="NAME=VALUE property filter (repeatable)."),
    q: Optional[str] = typer.Option(None, "--search", "-q", help="User id substring."),
) -> None:
    """The users table: requests, tokens, exact cost, latency, errors and activity per end user."""
    params = _filters(start, end, model, prop, q) + [("sort", sort), ("limit", str(limit))]
    if order:
        params.append(("order", order))
    if cursor:
        params.append(("cursor", cursor))
    client = ApiClient(url, key)
    data = client.json("/api/users", params)
    client.close()
    table = Table(title=f"Users {data['from'][:10]} → {data['to'][:10]}  ({data['count']} users)")
    for name in ("user", "requests", "cost USD", "cost/req", "tokens", "req/day", "p95 ms", "errors",
                 "limited", "last seen", "top model", "forecast USD", "properties"):
        table.add_column(name, justify="right" if name not in ("user", "top model", "properties", "last seen") else "left")
    for u in data["users"]:
        table.add_row(
            _user_label(u["user_id"]), str(u["requests"]), u["cost_usd"], u["avg_cost_per_request"] or "",
            str(u["total_tokens"]), _num(u["avg_requests_per_day"]), _num(u["p95_latency_ms"]),
            f"{u['error_rate']:.1%}" if u["error_rate"] is not None else "", str(u["rate_limited"]),
            (u["last_seen"] or "")[:16].replace("T", " "), u["top_model"] or "", u["forecast_month_usd"],
            ", ".join(f"{k}={v}" for k, v in u["properties"].items()),
        )
    console.print(table)
    t = data["totals"]
    console.print(f"total: {t['requests']} requests, {t['total_tokens']} tokens, ${t['cost_usd']}, "
                  f"forecast this month ${t['forecast_month_usd']}")
    if data["next_cursor"]:
        console.print(f"more: --cursor {data['next_cursor']}")


def _num(value: Any) -> str:
    return "" if value is None else f"{value:g}"


def user(
    user_id: str = typer.Argument(..., help="The end-user id ('' for the anonymous user)."),
    url: str = URL, key: Optional[str] = KEY, start: Optional[str] = FROM, end: Optional[str] = TO,
    interval: str = typer.Option("day", help="Series bucket: hour or day."),
) -> None:
    """One user: totals, cost by model and property, the series and recent requests."""
    client = ApiClient(url, key)
    params = [(k, v) for k, v in (("from", start), ("to", end), ("interval", interval)) if v]
    data = client.json(f"/api/users/{quote(user_id, safe='') if user_id else '%00'}", params)
    client.close()
    u = data["user"]
    summary = Table(title=f"{_user_label(u['user_id'])}  {data['from'][:10]} → {data['to'][:10]}", show_header=False)
    for name in ("requests", "cost_usd", "avg_cost_per_request", "forecast_month_usd", "prompt_tokens",
                 "completion_tokens", "avg_latency_ms", "p95_latency_ms", "error_rate", "rate_limited",
                 "active_days", "first_seen", "last_seen", "top_model"):
        summary.add_row(name, "" if u[name] is None else str(u[name]))
    summary.add_row("properties", ", ".join(f"{k}={v}" for k, v in u["properties"].items()))
    console.print(summary)
    models = Table("model", "requests", "tokens", "cost USD", title="Cost by model")
    for m in data["cost_by_model"]:
        models.add_row(m["model"], str(m["requests"]), str(m["total_tokens"]), m["cost_usd"])
    console.print(models)
    series = Table("t", "requests", "tokens", "cost USD", "errors", title=f"Per {data['interval']} (with traffic)")
    for p in data["series"]:
        if p["requests"]:
            series.add_row(p["t"][:16].replace("T", " "), str(p["requests"]), str(p["total_tokens"]), p["cost_usd"], str(p["errors"]))
    console.print(series)
    recent = Table("time", "model", "status", "tokens", "cost USD", "latency ms", "request id", title="Recent requests")
    for r in data["recent_requests"]:
        recent.add_row(r["created_at"][:19].replace("T", " "), r["model"], str(r["status"]), str(r["total_tokens"]),
                       r["cost_usd"] or "", str(r["latency_ms"]), r["request_id"])
    console.print(recent)


def export(
    url: str = URL, key: Optional[str] = KEY, start: Optional[str] = FROM, end: Optional[str] = TO,
    format: str = typer.Option("csv", "--format", help="csv or parquet."),
    output: Path = typer.Option(..., "--output", "-o", help="File to write."),
) -> None:
    """Per-user billing rows (exact decimals) for a period, as CSV or Parquet."""
    if format not in ("csv", "parquet"):
        raise UsagegateError(f"--format must be csv or parquet, not {format!r}.")
    client = ApiClient(url, key)
    params = [(k, v) for k, v in (("from", start), ("to", end), ("format", format)) if v]
    response = client.get("/api/export", params)
    client.close()
    try:
        output.write_bytes(response.content)
    except OSError as exc:
        raise UsagegateError(f"Cannot write {output}: {exc.strerror}.") from None
    console.print(f"wrote {len(response.content)} bytes to {output}")
