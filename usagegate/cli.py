"""The `usagegate` command line (Typer). Errors print as one message and exit 1, never a traceback."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from usagegate.cli_prices import prices_app
from usagegate.errors import UsagegateError

app = typer.Typer(
    help="usagegate: an LLM gateway that tracks cost and usage per end user.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(help="Create, list and revoke usagegate keys (one org per key).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(prices_app, name="prices")
console = Console()
err_console = Console(stderr=True)

DATA_DIR_HELP = "Where usagegate keeps its data (env USAGEGATE_DATA_DIR)."


def _data_dir(value: Optional[Path]) -> Path:
    from usagegate.settings import settings_from

    return settings_from({"data_dir": value}).data_dir


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: Optional[int] = typer.Option(None, help="Port to listen on (env USAGEGATE_PORT, default 8787)."),
    data_dir: Optional[Path] = typer.Option(None, help=DATA_DIR_HELP),
    store: Optional[str] = typer.Option(None, help="'embedded' (chDB, default) or clickhouse://user:pass@host:8123/db (env USAGEGATE_STORE)."),
    openai_base_url: Optional[str] = typer.Option(None, help="OpenAI-compatible upstream (env USAGEGATE_OPENAI_BASE_URL)."),
    anthropic_base_url: Optional[str] = typer.Option(None, help="Anthropic upstream (env USAGEGATE_ANTHROPIC_BASE_URL)."),
    allow_target: list[str] = typer.Option([], help="A base URL Helicone-Target-URL may name (repeatable; env USAGEGATE_ALLOWED_TARGETS)."),
    max_body_mb: float = typer.Option(32.0, help="Largest request body accepted, in MB (413 above)."),
    upstream_timeout: float = typer.Option(600.0, help="Seconds to wait for the upstream before answering 504."),
    no_store_bodies: bool = typer.Option(False, "--no-store-bodies", help="Do not store request/response bodies."),
    body_ttl_days: int = typer.Option(30, help="Delete stored bodies after this many days."),
    alert_interval: Optional[float] = typer.Option(None, help="Seconds between alert rule evaluations (env USAGEGATE_ALERT_INTERVAL, default 10)."),
    allow_private_webhooks: bool = typer.Option(False, "--allow-private-webhooks", help="Allow alert webhooks to private/loopback addresses (env USAGEGATE_ALLOW_PRIVATE_WEBHOOKS)."),
    workers: Optional[int] = typer.Option(None, help="Proxy processes sharing the port, beside the one store process (env USAGEGATE_WORKERS, default 1)."),
    redis: Optional[str] = typer.Option(None, help="redis://host:6379/0: limit counters shared by every worker and machine (env USAGEGATE_REDIS)."),
) -> None:
    """Run the gateway: a proxy process and a store process (API, dashboard); --workers N proxies."""
    from usagegate.settings import settings_from
    from usagegate.supervisor import Supervisor

    settings = settings_from(
        {
            "host": host, "port": port, "data_dir": data_dir, "store": store,
            "openai_base_url": openai_base_url, "anthropic_base_url": anthropic_base_url,
            "allowed_targets": allow_target or None, "max_body_mb": max_body_mb,
            "upstream_timeout": upstream_timeout, "store_bodies": not no_store_bodies, "body_ttl_days": body_ttl_days,
            "alert_interval": alert_interval, "allow_private_webhooks": allow_private_webhooks or None,
            "workers": workers, "redis_url": redis,
        }
    )
    how = f"{settings.workers} proxy workers" if settings.workers > 1 else "one proxy process"
    err_console.print(f"usagegate listening on http://{settings.host}:{settings.port} ({how} + the store process; "
                      f"data in {settings.data_dir})")
    sys.exit(Supervisor(settings).run())


@app.command("worker", hidden=True)
def worker(
    index: int = typer.Option(..., help="This process's number (0: the store process, 1..N: proxy workers)."),
    settings_json: str = typer.Option(..., "--settings", help="The supervisor's settings, as JSON."),
) -> None:
    """One process of `serve` (started by its supervisor, not by hand)."""
    from dataclasses import replace

    from usagegate import serving
    from usagegate.settings import settings_from_json

    serving.run(replace(settings_from_json(settings_json), worker_index=index))


@app.command("store-ddl")
def store_ddl(
    cluster: Optional[str] = typer.Option(None, help="A ClickHouse cluster name: print ReplicatedMergeTree + Distributed DDL."),
    body_ttl_days: int = typer.Option(30, help="Delete stored bodies after this many days."),
) -> None:
    """Print the log store's schema (what the gateway applies on start) for review or manual apply."""
    from usagegate.cluster import created_tables, schema_migrations_ddl, to_cluster, valid_cluster_name
    from usagegate.migrations import MIGRATIONS, body_ttl_statements

    if cluster is not None and not valid_cluster_name(cluster):
        raise UsagegateError(f"--cluster {cluster!r} is not a cluster name.")
    schema = [statement for _, steps in MIGRATIONS for statement in steps] + body_ttl_statements(body_ttl_days)
    tables = created_tables(schema)
    out = [schema_migrations_ddl(cluster)]
    for statement in schema:
        out += to_cluster(statement, cluster, tables) if cluster else [statement]
    print(";\n\n".join(s.strip() for s in out) + ";")


@app.command("mock-upstream")
def mock_upstream(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(9100, help="Port to listen on."),
) -> None:
    """Run the deterministic OpenAI + Anthropic mock (X-Mock-Status, X-Mock-Delay-Ms, X-Mock-Break-After)."""
    from usagegate.mock_upstream import serve as serve_mock

    serve_mock(host, port)


@app.command()
def demo(
    port: int = typer.Option(8787, help="Port for the demo gateway."),
    duration: Optional[float] = typer.Option(None, help="Stop after this many seconds of live traffic (default: until Ctrl-C)."),
    data_dir: Optional[Path] = typer.Option(None, help="Fresh data dir for the demo, wiped at start (default ./.usagegate-demo)."),
) -> None:
    """Start a mock upstream + the gateway, send traffic from ~40 users, print the users table, the key and
    the dashboard URL; backfill 30 days of history for ~200 users while live traffic runs."""
    from usagegate.demo import run_demo

    run_demo(port=port, duration=duration, data_dir=data_dir, console=console)


@app.command()
def bench(
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object instead of the table."),
    quick: bool = typer.Option(False, "--quick", help="A few seconds per phase instead of the full run (for tests)."),
    scale: bool = typer.Option(False, "--scale", help="Also time the analytics API over 1M and 10M stored requests (~10 min)."),
    workers: str = typer.Option("", "--workers", help="Also measure throughput at these worker counts, e.g. 1,2."),
) -> None:
    """Measure added latency, throughput vs a minimal pass-through, streaming TTFB and ingest rate (needs wrk)."""
    import json

    from usagegate import bench_scale
    from usagegate.bench import render, run_bench

    try:
        counts = tuple(int(n) for n in workers.split(",") if n.strip())
    except ValueError:
        raise UsagegateError(f"--workers {workers!r}: give worker counts like 1,2.") from None
    result = run_bench(quick=quick, console=err_console)
    extra: dict[str, object] = {}
    if counts:
        extra.update(bench_scale.throughput_by_workers(err_console, counts, seconds=1 if quick else 5))
    if scale:
        sizes = (100_000, 1_000_000) if quick else (1_000_000, 10_000_000)
        extra.update(bench_scale.run_scale(err_console, sizes=sizes))
    if json_out:
        print(json.dumps({**result, **extra}))
    else:
        render(result, console)
        if extra:
            bench_scale.render(extra, console)


@keys_app.command("create")
def keys_create(
    org: str = typer.Option(..., help="Organization name (created on first use)."),
    data_dir: Optional[Path] = typer.Option(None, help=DATA_DIR_HELP),
) -> None:
    """Create a key and print only the key (it is stored hashed and cannot be shown again)."""
    from usagegate.config_db import ConfigDB

    if not org.strip():
        raise UsagegateError("--org must not be empty.")
    db = ConfigDB(_data_dir(data_dir))
    print(db.create_key(org.strip()))
    db.close()


@keys_app.command("list")
def keys_list(
    org: Optional[str] = typer.Option(None, help="Only this organization's keys."),
    data_dir: Optional[Path] = typer.Option(None, help=DATA_DIR_HELP),
) -> None:
    """List keys (id, org, prefix, state); keys themselves are never shown."""
    from datetime import datetime, timezone

    from usagegate.config_db import ConfigDB

    db = ConfigDB(_data_dir(data_dir))
    table = Table("key id", "org", "prefix", "created", "state")
    for info in db.list_keys(org):
        created = datetime.fromtimestamp(info.created_at, timezone.utc).strftime("%Y-%m-%d %H:%M")
        table.add_row(info.key_id, info.org_name, info.prefix + "…", created, "revoked" if info.revoked else "active")
    console.print(table)
    db.close()


@keys_app.command("revoke")
def keys_revoke(
    key: str = typer.Argument(..., help="The key id (from 'keys list') or the key itself."),
    data_dir: Optional[Path] = typer.Option(None, help=DATA_DIR_HELP),
) -> None:
    """Revoke a key; a running gateway refuses it within a second."""
    from usagegate.config_db import ConfigDB

    db = ConfigDB(_data_dir(data_dir))
    found = db.revoke_key(key)
    db.close()
    if not found:
        raise UsagegateError(f"No active key matches {key!r}.")
    console.print("revoked")


def _register_analytics() -> None:
    from usagegate import cli_users

    app.command("users")(cli_users.users)
    app.command("user")(cli_users.user)
    app.command("export")(cli_users.export)


_register_analytics()


def _parse_errors() -> tuple[type[BaseException], ...]:
    """Usage-error types of click and of the click copy newer Typer releases vendor."""
    import click

    kinds: list[type[BaseException]] = [click.ClickException]
    try:
        from typer._click.exceptions import ClickException as VendoredClickException
    except ImportError:  # older Typer uses click itself
        pass
    else:
        kinds.append(VendoredClickException)
    return tuple(kinds)


def _abort_errors() -> tuple[type[BaseException], ...]:
    import click

    kinds: list[type[BaseException]] = [click.exceptions.Abort]
    vendored = getattr(typer, "Abort", None)  # newer Typer raises its own Abort
    if isinstance(vendored, type) and issubclass(vendored, BaseException):
        kinds.append(vendored)
    return tuple(kinds)


def main() -> None:
    try:
        code = app(standalone_mode=False)
    except UsagegateError as error:
        err_console.print(f"error: {error.message}")
        sys.exit(1)
    except _parse_errors() as error:
        error.show()  # type: ignore[attr-defined]
        sys.exit(error.exit_code)  # type: ignore[attr-defined]
    except _abort_errors():
        err_console.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as error:  # a bug: still a message, with the way to the details
        if os.environ.get("USAGEGATE_DEBUG"):
            raise
        err_console.print(f"error: unexpected {type(error).__name__}: {error} (set USAGEGATE_DEBUG=1 for the traceback)")
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
