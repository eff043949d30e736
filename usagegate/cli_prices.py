"""`usagegate prices set/list/delete`: per-org price overrides, through a running gateway's /api/prices.

Rates are passed on as the decimal strings typed (never floats). Every failure is a
UsagegateError (one message, exit 1).
"""

from __future__ import annotations

import os
from typing import Any, Optional
from urllib.parse import quote

import typer
from rich.console import Console
from rich.table import Table

from usagegate.errors import UsagegateError

DEFAULT_URL = "http://127.0.0.1:8787"
URL_HELP = "The running gateway (env USAGEGATE_URL, default http://127.0.0.1:8787)."
KEY_HELP = "A usagegate key of the organization (env USAGEGATE_KEY)."

prices_app = typer.Typer(help="Per-organization price overrides (USD per 1M tokens).", no_args_is_help=True)
console = Console()


def _call(method: str, url: Optional[str], key: Optional[str], path: str, body: Any = None) -> Any:
    base = (url or os.environ.get("USAGEGATE_URL") or DEFAULT_URL).rstrip("/")
    key = key or os.environ.get("USAGEGATE_KEY")
    if not key:
        raise UsagegateError("No usagegate key: pass --key or set USAGEGATE_KEY.")
    import httpx  # here, not at import: every CLI command would pay for it

    try:
        response = httpx.request(method, base + path, json=body, headers={"Authorization": f"Bearer {key}"},
                                 timeout=60)
    except httpx.HTTPError as exc:
        raise UsagegateError(
            f"Cannot reach the gateway at {base} ({exc.__class__.__name__}); is `usagegate serve` running? "
            "Set --url or USAGEGATE_URL."
        ) from None
    if response.status_code >= 400:
        try:
            message = str(response.json()["error"]["message"])
        except (ValueError, KeyError, TypeError):
            message = response.text[:200] or response.reason_phrase
        raise UsagegateError(f"{message} (HTTP {response.status_code})")
    return response.json()


def _path(model: str) -> str:
    if not model.strip():
        raise UsagegateError("The model name must not be empty.")
    return "/api/prices/" + quote(model, safe="/")


COLUMNS = ("model", "input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok", "updated_at")


def _show(rows: list[dict[str, Any]]) -> None:
    """A table on a terminal; tab-separated lines (header first) when piped, for scripts."""
    if not console.is_terminal:
        print("\t".join(COLUMNS))
        for r in rows:
            print("\t".join(r[c] or "" for c in COLUMNS))
        return
    table = Table()
    for name in ("model", "input $/1M", "output $/1M", "cache read $/1M", "cache write $/1M", "updated"):
        table.add_column(name, overflow="fold")  # wrap, never cut: these values get copied
    for r in rows:
        table.add_row(r["model"], r["input_mtok"], r["output_mtok"], r["cache_read_mtok"] or "= input",
                      r["cache_write_mtok"] or "= input", r["updated_at"])
    console.print(table)


@prices_app.command("set")
def prices_set(
    model: str = typer.Argument(..., help="Model name as the provider reports it (or as requested)."),
    input_mtok: str = typer.Option(..., "--input", help="USD per 1M input tokens, e.g. 2.50."),
    output_mtok: str = typer.Option(..., "--output", help="USD per 1M output tokens."),
    cache_read_mtok: Optional[str] = typer.Option(None, "--cache-read", help="USD per 1M cached input tokens (default: input)."),
    cache_write_mtok: Optional[str] = typer.Option(None, "--cache-write", help="USD per 1M cache-write tokens (default: input)."),
    url: Optional[str] = typer.Option(None, help=URL_HELP),
    key: Optional[str] = typer.Option(None, help=KEY_HELP),
) -> None:
    """Set a model's price for your organization; unpriced requests of that model are re-priced."""
    body = {"input_mtok": input_mtok, "output_mtok": output_mtok,
            "cache_read_mtok": cache_read_mtok, "cache_write_mtok": cache_write_mtok}
    result = _call("PUT", url, key, _path(model), body)
    _show([result])
    console.print(f"re-priced {result['repriced_requests']} request(s) whose cost was unknown")


@prices_app.command("list")
def prices_list(
    url: Optional[str] = typer.Option(None, help=URL_HELP),
    key: Optional[str] = typer.Option(None, help=KEY_HELP),
) -> None:
    """List your organization's price overrides."""
    rows = _call("GET", url, key, "/api/prices")["prices"]
    if not rows:
        console.print("no price overrides; published prices apply")
        return
    _show(rows)


@prices_app.command("delete")
def prices_delete(
    model: str = typer.Argument(..., help="The model whose override to remove."),
    url: Optional[str] = typer.Option(None, help=URL_HELP),
    key: Optional[str] = typer.Option(None, help=KEY_HELP),
) -> None:
    """Remove an override: new requests use the published price (recorded costs stay)."""
    _call("DELETE", url, key, _path(model))
    console.print(f"deleted the price override for {model}")
