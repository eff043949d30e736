"""History for a running gateway through its log pipeline (`POST /api/import`).

`synthetic_history` makes realistic past traffic (plans, models, an abusive user, some errors)
for demos; `send` posts any records in batches. Both are plain functions so the demo, tests and
scripts share them.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx

from usagegate.importer import MAX_RECORDS

PLANS = (("free", 0.6, ("gpt-4o-mini",), 3), ("pro", 0.3, ("gpt-4o-mini", "gpt-4.1-mini", "claude-3-5-haiku-latest"), 12),
         ("enterprise", 0.1, ("gpt-4.1", "gpt-4o", "claude-sonnet-4-20250514"), 40))
PROVIDER = {"claude": "anthropic"}


def send(url: str, key: str, records: Iterable[dict[str, Any]], *, batch: int = 5000, timeout: float = 60.0) -> int:
    """POST records to `<url>/api/import` in batches; returns how many were accepted.

    Raises httpx.HTTPStatusError with the gateway's message when a batch is refused.
    """
    batch = min(batch, MAX_RECORDS)
    sent = 0
    chunk: list[dict[str, Any]] = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout) as client:
        for record in records:
            chunk.append(record)
            if len(chunk) >= batch:
                sent += _post(client, chunk)
                chunk = []
        if chunk:
            sent += _post(client, chunk)
    return sent


def _post(client: httpx.Client, chunk: list[dict[str, Any]]) -> int:
    response = client.post("/api/import", json={"records": chunk})
    response.raise_for_status()
    return int(response.json()["imported"])


def synthetic_history(*, days: int = 30, users: int = 200, now: datetime | None = None, seed: int = 7) -> Iterator[dict[str, Any]]:
    """Records for `users` users over the `days` days before `now`: free/pro/enterprise plans with
    growing, flat or fading usage, one abusive user (`abuser@example.com`), ~2% errors."""
    rng = random.Random(seed)
    end = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    start = end - timedelta(days=days)
    people = []
    for n in range(users):
        plan, models, daily = _pick_plan(rng)
        trend = rng.choice((-0.5, 0.0, 0.0, 1.0))
        people.append((f"user-{n:04d}@example.com", plan, models, daily, trend, rng.choice(("chat", "search", "summarize"))))
    people.append(("abuser@example.com", "free", ("gpt-4o-mini",), 400, 0.0, "chat"))
    for user, plan, models, daily, trend, feature in people:
        for day in range(days):
            rate = max(0.0, daily * (1 + trend * (day - days / 2) / days))
            for _ in range(_poisson(rng, rate)):
                moment = start + timedelta(days=day, seconds=rng.uniform(0, 86400))
                if moment >= end:
                    continue
                model = rng.choice(models)
                failed = rng.random() < 0.02
                yield {
                    "user_id": user, "created_at": moment.isoformat(), "model": model,
                    "provider": PROVIDER.get(model.split("-")[0], "openai"),
                    "prompt_tokens": rng.randint(50, 3000), "completion_tokens": 0 if failed else rng.randint(20, 800),
                    "status": rng.choice((500, 429, 400)) if failed else 200,
                    "latency_ms": rng.randint(200, 6000), "properties": {"plan": plan, "feature": feature},
                }


def _pick_plan(rng: random.Random) -> tuple[str, tuple[str, ...], float]:
    roll = rng.random()
    for plan, share, models, daily in PLANS:
        if roll < share:
            return plan, models, daily * rng.uniform(0.3, 1.7)
        roll -= share
    plan, _, models, daily = PLANS[-1]
    return plan, models, float(daily)


def _poisson(rng: random.Random, rate: float) -> int:
    # Normal approximation is plenty for demo traffic and stays O(1) for big rates.
    if rate <= 0:
        return 0
    return max(0, round(rng.gauss(rate, rate ** 0.5)))
