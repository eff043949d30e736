"""`usagegate demo`: the mock upstream and the gateway on a fresh data dir, with live users.

Map: `run_demo` prepares the data dir and a key, starts both servers as child processes, sends a
burst of realistic traffic (`demo_traffic`) through the real proxy, waits until it is recorded,
prints the users table (read back from the gateway's API) and how to point an SDK at the gateway,
then keeps a trickle of live traffic until Ctrl-C / SIGTERM or `duration` seconds, while 30 days of
history for ~200 users are backfilled in the background for the dashboard.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import shutil
import signal
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from rich import box
from rich.console import Console
from rich.table import Table

from usagegate import backfill
from usagegate.children import Child, free_port, port_in_use, python_module
from usagegate.config_db import ConfigDB
from usagegate.demo_traffic import DemoCall, DemoUser, cast, next_call, pick_user
from usagegate.errors import UsagegateError

DEFAULT_DATA_DIR = Path(".usagegate-demo")
MARKER = ".usagegate-demo"  # only a directory carrying this file is ever wiped
TABLE_ROWS = 20
HISTORY_DAYS = 30
HISTORY_USERS = 200
# Monthly plan prices for the demo org, so the profitability view has revenue to compare.
DEMO_PLAN_PRICES = {"free": "0", "pro": "20", "enterprise": "400"}


@dataclass
class Tally:
    sent: int = 0
    errors: int = 0
    started: float = field(default_factory=time.monotonic)


def prepare_data_dir(path: Path) -> Path:
    """Empty `path` for a fresh demo; refuses to wipe a directory the demo did not create."""
    path = path.resolve()
    if path.exists() and any(path.iterdir()) and not (path / MARKER).exists():
        raise UsagegateError(
            f"{path} exists and was not made by 'usagegate demo'; refusing to wipe it. Pick another --data-dir."
        )
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    (path / MARKER).write_text("made by 'usagegate demo'; wiped at the next demo start\n")
    return path


def run_demo(*, port: int, duration: float | None, data_dir: Path | None, users: int = 40, burst: int = 600,
             console: Console | None = None) -> None:
    """Run the whole demo; returns after Ctrl-C/SIGTERM or `duration` seconds of live traffic."""
    console = console or Console()
    if port_in_use(port):
        raise UsagegateError(f"Port {port} is already in use; pass another with --port.")
    data = prepare_data_dir(data_dir or DEFAULT_DATA_DIR)
    config = ConfigDB(data)
    key = config.create_key("demo-saas")
    config.close()
    mock_port = free_port()
    mock_url = f"http://127.0.0.1:{mock_port}"
    url = f"http://127.0.0.1:{port}"
    console.print(f"[bold]usagegate demo[/]: data in {data}")
    children: list[Child] = []
    try:
        mock = Child("mock upstream", python_module("usagegate.mock_upstream", "--port", str(mock_port)), data / "mock.log")
        children.append(mock)
        mock.wait_http(mock_url + "/_mock/requests")
        gateway = Child("gateway", python_module(
            "usagegate", "serve", "--port", str(port), "--data-dir", str(data),
            "--openai-base-url", mock_url, "--anthropic-base-url", mock_url,
        ), data / "gateway.log")
        children.insert(0, gateway)  # stopped first, so it drains its spool while the mock still runs
        gateway.wait_http(url + "/health")
        console.print(f"mock upstream on {mock_url}, gateway on {url}")
        asyncio.run(_drive(url, key, cast(users), burst, duration, console))
    finally:
        console.print("stopping the gateway (it drains its log into the store) and the mock…")
        for child in children:
            child.stop()
    console.print(f"Stopped. The recorded data stays in {data}; browse it again with "
                  f"'usagegate serve --data-dir {data}' and the key above.")


async def _drive(url: str, key: str, users: list[DemoUser], burst: int, duration: float | None, console: Console) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    since = datetime.now(timezone.utc) - timedelta(minutes=1)
    rng = random.Random(42)
    tally = Tally()
    # Idle connections are dropped before uvicorn's 5 s keep-alive ends them, so a request never
    # races the server closing the connection it was sent on.
    connector = aiohttp.TCPConnector(limit=32, keepalive_timeout=2)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        # Every user appears at least twice, then the weighted mix (a few heavy users, a long tail).
        plan = [u for u in users for _ in range(2)]
        plan += [pick_user(users, rng) for _ in range(max(0, burst - len(plan)))]
        calls = [next_call(u, rng) for u in plan]
        with console.status(f"sending {len(calls)} requests from {len(users)} users through the gateway…"):
            await _send_all(session, url, key, calls, tally, concurrency=16)
            recorded = await _wait_recorded(session, url, key, since, tally.sent, stop)
        console.print(f"sent {tally.sent} requests ({tally.errors} upstream errors, on purpose); "
                      f"{recorded} recorded")
        console.print(users_table(await fetch_users(session, url, key, since), {u.user_id: u.plan for u in users}))
        console.print(instructions(url, key), markup=False, highlight=False, soft_wrap=True)
        console.print(f"[bold]Dashboard:[/] {url}/users?range=30d  (sign in with the key above)", soft_wrap=True)
        if not stop.is_set():
            trickle_done = asyncio.Event()
            history = asyncio.create_task(_backfill(session, url, key, since, trickle_done, console))
            try:
                await _trickle(session, url, key, since, users, rng, tally, stop, duration, console)
            finally:
                trickle_done.set()
                await history


async def _backfill(session: aiohttp.ClientSession, url: str, key: str, until: datetime, stop: asyncio.Event,
                    console: Console, days: int = HISTORY_DAYS, users: int = HISTORY_USERS) -> None:
    """Plan prices, then `days` of synthetic history (backfill.py) through the gateway's log pipeline
    (POST /api/import), in chunks so that stopping the demo is never held up for long. History ends at
    `until`, where the live traffic (and the live users table) begins."""
    async with session.put(url + "/api/plans", json={"property": "plan", "monthly_revenue_usd": DEMO_PLAN_PRICES},
                           headers={"Authorization": f"Bearer {key}"}) as response:
        if response.status != 200:
            console.print(f"could not set demo plan prices: {response.status} {(await response.text())[:200]}")
    records = backfill.synthetic_history(days=days, users=users, now=until)
    sent = 0
    while not stop.is_set():
        chunk = list(itertools.islice(records, 2000))  # small posts keep the gateway responsive
        if not chunk:
            console.print(f"backfilled {sent} requests: {days} days of history for {users} users "
                          f"(free/pro/enterprise, one abusive user) — open the dashboard")
            return
        try:
            sent += await asyncio.to_thread(backfill.send, url, key, chunk)
        except httpx.HTTPError as exc:
            console.print(f"history backfill stopped: {exc}")
            return


async def _send(session: aiohttp.ClientSession, url: str, key: str, call: DemoCall, tally: Tally) -> None:
    headers = {"Helicone-Auth": f"Bearer {key}", "Authorization": "Bearer sk-demo", **call.headers}
    if call.path.startswith("/anthropic/"):
        headers["x-api-key"] = "sk-ant-demo"
        headers["anthropic-version"] = "2023-06-01"
    for attempt in (1, 2):
        try:
            async with session.post(url + call.path, json=call.body, headers=headers) as response:
                await response.read()  # the whole stream, like a real client
                tally.sent += 1
                if response.status >= 400:
                    tally.errors += 1
            return
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            # A pooled keep-alive connection the server was closing (likelier while the history
            # backfill keeps the gateway busy): retry once on a fresh connection, as SDKs do.
            if attempt == 2:
                raise UsagegateError(f"The demo gateway stopped answering: {exc}") from exc
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise UsagegateError(f"The demo gateway stopped answering: {exc}") from exc


async def _send_all(session: aiohttp.ClientSession, url: str, key: str, calls: list[DemoCall], tally: Tally,
                    *, concurrency: int) -> None:
    queue = iter(calls)

    async def worker() -> None:
        for call in queue:  # a shared iterator: each call is taken by exactly one worker
            await _send(session, url, key, call, tally)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def _wait_recorded(session: aiohttp.ClientSession, url: str, key: str, since: datetime, expected: int,
                         stop: asyncio.Event, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    count = 0
    while time.monotonic() < deadline and not stop.is_set():
        count = (await fetch_users(session, url, key, since, limit=1)).totals["requests"]
        if count >= expected:
            break
        await asyncio.sleep(0.2)
    return count


@dataclass(frozen=True)
class UsersPage:
    rows: list[dict[str, Any]]  # the most expensive users first, as /api/users renders them
    count: int  # users in the range
    totals: dict[str, Any]  # over all of them


async def fetch_users(session: aiohttp.ClientSession, url: str, key: str, since: datetime,
                      *, limit: int = TABLE_ROWS) -> UsersPage:
    """The top users by cost since `since`, with the count and totals, from GET /api/users."""
    params = {"limit": str(limit), "sort": "cost_usd", "from": since.isoformat(),
              "to": (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()}
    async with session.get(url + "/api/users", params=params, headers={"Authorization": f"Bearer {key}"}) as r:
        if r.status != 200:
            raise UsagegateError(f"GET /api/users answered {r.status}: {(await r.text())[:300]}")
        page = await r.json()
    return UsersPage(page["users"], page["count"], page["totals"])


def users_table(page: UsersPage, plans: dict[str, str]) -> Table:
    title = (f"Users by cost (top {len(page.rows)} of {page.count})" if page.count > len(page.rows)
             else f"Users by cost ({page.count})")
    table = Table(title=title, box=box.SIMPLE_HEAD)
    table.add_column("user", no_wrap=True)
    table.add_column("plan", no_wrap=True)
    for name in ("requests", "errors", "tokens", "cost (USD)"):
        table.add_column(name, justify="right", no_wrap=True)
    for row in page.rows:
        errors = round(row["error_rate"] * row["requests"])
        plan = (row.get("properties") or {}).get("plan") or plans.get(row["user_id"], "")
        table.add_row(row["user_id"], plan, f"{row['requests']:,}", f"{errors:,}",
                      f"{row['total_tokens']:,}", _usd(row["cost_usd"]))
    totals = page.totals
    table.add_section()
    table.add_row("all users", "", f"{totals['requests']:,}", f"{round(totals['error_rate'] * totals['requests']):,}",
                  f"{totals['total_tokens']:,}", _usd(totals["cost_usd"]), style="bold")
    return table


def _usd(value: str | None) -> str:
    return "—" if value is None else f"{Decimal(value):.6f}"


def instructions(url: str, key: str) -> str:
    """How to point a real SDK at this gateway; plain text so it copies cleanly."""
    return f'''Your usagegate key:  {key}
Gateway:             {url}   (request log: {url}/api/requests, API docs: {url}/docs)

Point an SDK at it (this demo gateway forwards to the mock, so any provider key works here;
for real traffic run `usagegate keys create --org NAME` and `usagegate serve`, see README):

    from openai import OpenAI
    client = OpenAI(
        base_url="{url}/v1",  # instead of https://api.openai.com/v1
        api_key="sk-...",     # your OpenAI key: forwarded untouched, never stored
        default_headers={{
            "Helicone-Auth": "Bearer {key}",
            "Helicone-User-Id": "alice@example.com",  # the end user this call is for
            "Helicone-Property-Plan": "pro",            # any Helicone-Property-<Name>
        }},
    )

    from anthropic import Anthropic
    client = Anthropic(
        base_url="{url}/anthropic",  # instead of https://api.anthropic.com
        api_key="sk-ant-...",
        default_headers={{"Helicone-Auth": "Bearer {key}", "Helicone-User-Id": "alice@example.com"}},
    )

    curl -H "Authorization: Bearer {key}" "{url}/api/users?limit=5"
    usagegate users --url {url} --key {key}
'''


async def _trickle(session: aiohttp.ClientSession, url: str, key: str, since: datetime, users: list[DemoUser],
                   rng: random.Random, tally: Tally, stop: asyncio.Event, duration: float | None,
                   console: Console) -> None:
    """A few live requests a second until stopped; one status line every 10 s."""
    console.print(f"[bold]live traffic running[/] (a few requests a second) — "
                  f"{'Ctrl-C to stop' if duration is None else f'stopping after {duration:g} s'}")
    ends = None if duration is None else time.monotonic() + duration
    next_status = time.monotonic() + 10
    while not stop.is_set() and (ends is None or time.monotonic() < ends):
        await _send(session, url, key, next_call(pick_user(users, rng), rng), tally)
        wait = rng.expovariate(4.0)
        if ends is not None:
            wait = min(wait, max(0.0, ends - time.monotonic()))
        try:
            await asyncio.wait_for(stop.wait(), timeout=wait)
        except asyncio.TimeoutError:
            pass
        if time.monotonic() >= next_status:
            next_status += 10
            page = await fetch_users(session, url, key, since, limit=1)
            # Live traffic only (since the demo started): the backfilled history is in the dashboard.
            console.print(f"{datetime.now():%H:%M:%S}  live: {page.totals['requests']:,} requests recorded from "
                          f"{page.count} users since the demo started, {_usd(page.totals['cost_usd'])} USD")
    console.print(f"{tally.sent} requests sent in all ({tally.errors} errors)")
