"""Limits shared through Redis (`--redis`): one budget and one rate window for every process."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from tests.servers import GatewayProcess, MockUpstream, RedisServer, create_key
from usagegate.pricing import Pricer
from usagegate.records import Usage
from usagegate.redis_counters import RedisCounters

CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


def _reserve_many(url: str, key: str, n: int, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    counters = RedisCounters.connect(url)
    results.put(sum(counters.budget_reserve(key, Decimal("0.25"), Decimal("10")) is not None for _ in range(n)))


def test_reservations_are_atomic_across_processes(redis_server: RedisServer) -> None:
    counters = RedisCounters.connect(redis_server.url)
    counters.budget_init("atomic", Decimal("0.5"))
    results: multiprocessing.Queue = multiprocessing.get_context("spawn").Queue()  # type: ignore[type-arg]
    procs = [multiprocessing.get_context("spawn").Process(target=_reserve_many, args=(redis_server.url, "atomic", 30, results))
             for _ in range(4)]
    for proc in procs:
        proc.start()
    taken = sum(results.get(timeout=60) for _ in procs)
    for proc in procs:
        proc.join(30)
    assert taken == 38  # (10 - 0.5) / 0.25, exactly, from 120 attempts in 4 processes
    assert counters.budget_spent("atomic") == Decimal("10")
    assert counters.budget_settle("atomic", Decimal("0.25"), Decimal("0.000000001")) == Decimal("0.500000001")
    assert counters.budget_spent("atomic") == Decimal("9.750000001")


def test_windows_slide_and_keep_exact_amounts(redis_server: RedisServer) -> None:
    counters = RedisCounters.connect(redis_server.url)
    assert counters.window_usage("win", 60, now=1000.0) == (Decimal(0), 0.0)
    counters.window_add("win", Decimal("0.123456789"), now=1000.0)
    counters.window_add("win", Decimal("2"), now=1030.0)
    used, reset = counters.window_usage("win", 60, now=1040.0)
    assert used == Decimal("2.123456789") and reset == pytest.approx(20.0)
    assert counters.window_usage("win", 60, now=1065.0) == (Decimal(2), pytest.approx(25.0))  # first one left
    assert counters.window_take("win", 60, Decimal(1), Decimal(3), now=1066.0)[0] is True
    taken, used, _ = counters.window_take("win", 60, Decimal(1), Decimal(3), now=1067.0)
    assert taken is False and used == Decimal(3)


def test_unreachable_redis_refuses_limited_requests_with_503(tmp_path: Path) -> None:
    counters = RedisCounters.connect("redis://127.0.0.1:1/0")
    from usagegate.errors import StoreUnavailable

    with pytest.raises(StoreUnavailable, match="Redis"):
        counters.budget_reserve("k", Decimal(1), Decimal(2))
    counters.window_add("k", Decimal(1))  # after-the-answer bookkeeping never raises


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, mock_upstream: MockUpstream, redis_server: RedisServer):  # type: ignore[no-untyped-def]
    data_dir = tmp_path_factory.mktemp("redis") / "data"
    key = create_key(data_dir)
    gateway = GatewayProcess(data_dir, mock_upstream.url, "--workers", "2", "--redis", redis_server.url)
    yield gateway, key
    gateway.stop()


def _headers(key: str, user: str, **extra: str) -> dict[str, str]:
    return {"Helicone-Auth": f"Bearer {key}", "Helicone-User-Id": user, "Authorization": "Bearer sk-x", **extra}


def _body(content: str = "same prompt") -> dict:  # type: ignore[type-arg]
    return {"model": "gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": content}]}


async def _burst(url: str, key: str, user: str, n: int, **extra: str) -> list[httpx.Response]:
    # One client per request: new connections land on both workers.
    async def one() -> httpx.Response:
        async with httpx.AsyncClient(timeout=30) as client:
            return await client.post(url + CHAT, headers=_headers(key, user, **extra), json=_body())

    return await asyncio.gather(*[one() for _ in range(n)])


def test_policy_holds_across_two_workers(shared) -> None:  # type: ignore[no-untyped-def]
    gateway, key = shared
    answers = asyncio.run(_burst(gateway.url, key, "rl-shared", 16, **{"Helicone-RateLimit-Policy": "5;w=60;s=user"}))
    codes = sorted(r.status_code for r in answers)
    assert codes == [200] * 5 + [429] * 11, codes


def test_budget_holds_across_two_workers(shared) -> None:  # type: ignore[no-untyped-def]
    gateway, key = shared
    body = json.dumps(_body()).encode()

    def chat(user: str) -> httpx.Response:
        with httpx.Client(timeout=30) as client:  # a new connection each time: either worker
            return client.post(gateway.url + CHAT, content=body,
                               headers={**_headers(key, user), "Content-Type": "application/json"})

    assert chat("budget-probe").status_code == 200
    one = Decimal(gateway.wait_for_requests(key, 1, user_id="budget-probe")[0]["cost_usd"])
    # What the guard reserves before forwarding: prompt ≤ body bytes, output ≤ max_tokens.
    worst = Pricer().cost("openai", "gpt-4o-mini", Usage(prompt_tokens=len(body), completion_tokens=10), status=200)
    assert worst is not None and worst > one
    budget = worst + 2 * one  # one shared budget admits exactly 3 requests made one after another
    put = httpx.put(gateway.url + "/api/limits/users/shared-budget", json={"budget_usd": str(budget), "period": "day"},
                    headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert put.status_code == 200, put.text
    time.sleep(1.2)  # every worker picks up limit changes within a second
    codes = [chat("shared-budget").status_code for _ in range(12)]
    # Two private budgets (no Redis) would admit 3 per worker, ~6 in all.
    assert codes.count(200) == 3 and codes.count(429) == 9, codes
    rows = gateway.wait_for_requests(key, 12, user_id="shared-budget", timeout=20)
    assert sum(Decimal(r["cost_usd"]) for r in rows) <= budget
