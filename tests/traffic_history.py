"""Generated usage history: several dozen normal users with day-to-day noise, and one abuser.

Deterministic for a seed. Users sit on three plans with different typical volumes; each has its
own level (log-normal across users, so some are legitimately 3–4× their peers), its own prompt
size, weekend dips, skipped days, Poisson request counts and a small error rate. Today's normal
volume is a full day's worth squeezed into the hours elapsed, the hardest case for false alarms.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from usagegate.history import history_record

PLANS = {  # plan -> (users, median requests/day, model, chance of skipping a day)
    "free": (20, 12, "gpt-4o-mini", 0.25),
    "pro": (14, 35, "gpt-4o", 0.1),
    "team": (6, 70, "gpt-4o", 0.05),
}
ABUSER = "mallory@pro.example"
NEWCOMER = "newbie@pro.example"


@dataclass(frozen=True)
class Person:
    user_id: str
    plan: str
    level: float  # typical requests per day
    prompt: float  # typical prompt tokens
    error_rate: float


def _poisson(rng: random.Random, lam: float) -> int:
    if lam > 50:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def people(rng: random.Random) -> list[Person]:
    cast = []
    for plan, (count, median, _, _) in PLANS.items():
        for n in range(count):
            cast.append(Person(f"{plan}-user-{n:02d}@example.com", plan, median * math.exp(rng.gauss(0, 0.6)),
                               700 * math.exp(rng.gauss(0, 0.4)), rng.choice((0.01, 0.02, 0.02, 0.05))))
    return cast


def _day_records(rng: random.Random, org_id: str, person: Person, start: datetime, span: float,
                 count: int, prompt_scale: float = 1.0) -> list[dict[str, Any]]:
    model = PLANS[person.plan][2]
    out = []
    for _ in range(count):
        failed = rng.random() < person.error_rate
        prompt = int(person.prompt * prompt_scale * math.exp(rng.gauss(0, 0.5)))
        out.append(history_record(
            org_id=org_id, user_id=person.user_id, model=model,
            created_at=start + timedelta(seconds=rng.uniform(0, span)),
            prompt_tokens=prompt, completion_tokens=0 if failed else int(prompt * rng.uniform(0.1, 0.5)),
            status=rng.choice((500, 429, 400)) if failed else 200, properties={"plan": person.plan},
        ))
    return out


def generate(org_id: str, *, now: datetime | None = None, days: int = 15, seed: int = 7) -> list[dict[str, Any]]:
    """`days` full days of history before today, plus today (up to `now`) with one abusive user."""
    rng = random.Random(seed)
    now = now or datetime.now(timezone.utc)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    elapsed = max((now - today).total_seconds() - 5, 60.0)
    cast = people(rng)
    abuser = Person(ABUSER, "pro", 30, 800, 0.02)
    newcomer = Person(NEWCOMER, "pro", 30, 700, 0.02)
    records: list[dict[str, Any]] = []
    for back in range(days, 0, -1):
        day = today - timedelta(days=back)
        weekend = 0.6 if day.weekday() >= 5 else 1.0
        for person in cast + [abuser]:
            if rng.random() < PLANS[person.plan][3]:
                continue
            lam = person.level * weekend * math.exp(rng.gauss(0, 0.3))
            records += _day_records(rng, org_id, person, day, 86400, _poisson(rng, lam))
        if back <= 2:
            records += _day_records(rng, org_id, newcomer, day, 86400, _poisson(rng, newcomer.level))
    weekend = 0.6 if today.weekday() >= 5 else 1.0
    start = now - timedelta(seconds=elapsed)
    for person in cast + [newcomer]:
        lam = person.level * weekend * math.exp(rng.gauss(0, 0.3))
        records += _day_records(rng, org_id, person, start, elapsed, _poisson(rng, lam))
    # The abuser: 25× their usual requests, with prompts 4× longer, all today.
    records += _day_records(rng, org_id, abuser, start, elapsed, 750, prompt_scale=4.0)
    return records
