"""The demo's cast and the requests they make: ~40 users of a fictional SaaS on three plans.

Deterministic for a seed. Each user has a plan, a company, an activity weight (a few heavy users,
a long tail) and the features their plan unlocks; each feature maps to one provider endpoint and a
model the plan pays for, so the users table shows realistic differences in cost per user.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

_FIRST = (
    "maria", "james", "aiko", "noah", "fatima", "liam", "chen", "olivia", "mateo", "priya",
    "lucas", "zara", "ethan", "ines", "omar", "sofia", "kenji", "amelia", "diego", "hana",
    "arjun", "emma", "yusuf", "chloe", "leo", "nadia", "felix", "mila", "ravi", "grace",
    "tomas", "lena", "kwame", "isla", "hugo", "sara", "ivan", "ada", "marco", "yara",
)
_COMPANIES = {
    "free": ("gmail.com", "proton.me", "outlook.com"),
    "pro": ("brightlabs.io", "tinyhq.dev", "paperplane.app"),
    "enterprise": ("northwind.com", "globex.com"),
}
PLAN_MIX = (("free", 0.55), ("pro", 0.33), ("enterprise", 0.12))

# feature -> (endpoint kind, models by plan)
FEATURES: dict[str, tuple[str, dict[str, tuple[str, ...]]]] = {
    "chat": ("openai-chat", {"free": ("gpt-4o-mini",), "pro": ("gpt-4o", "gpt-4o-mini"), "enterprise": ("gpt-4.1", "gpt-4o")}),
    "search": ("openai-embeddings", {p: ("text-embedding-3-small",) for p in ("free", "pro", "enterprise")}),
    "assistant": ("anthropic-messages", {"free": ("claude-3-5-haiku-20241022",), "pro": ("claude-sonnet-4-20250514",),
                                         "enterprise": ("claude-sonnet-4-20250514",)}),
    "summarize": ("anthropic-messages", {"pro": ("claude-3-5-haiku-20241022",), "enterprise": ("claude-sonnet-4-20250514",)}),
    "agent": ("openai-responses", {"enterprise": ("o3-mini", "gpt-4.1")}),
}
PLAN_FEATURES = {
    "free": ("chat", "search", "assistant"),
    "pro": ("chat", "search", "assistant", "summarize"),
    "enterprise": ("chat", "search", "assistant", "summarize", "agent"),
}
_TOPICS = (
    "quarterly revenue", "a flaky CI job", "the onboarding email", "GDPR retention", "a React hook",
    "our pricing page", "a SQL query plan", "the incident postmortem", "a customer escalation",
    "kubernetes autoscaling", "a job description", "the product roadmap", "unit economics",
)
_FILLER = (
    "Here is the context pasted from our wiki. The team has discussed this at length and wants a "
    "clear, short answer with trade-offs, examples and a recommendation we can act on this week. "
)


@dataclass(frozen=True, slots=True)
class DemoUser:
    user_id: str
    plan: str
    weight: float  # relative request rate


@dataclass(frozen=True, slots=True)
class DemoCall:
    path: str  # gateway path
    body: dict[str, Any]
    headers: dict[str, str]
    stream: bool


def cast(count: int = 40, seed: int = 7) -> list[DemoUser]:
    """`count` users; plan mix ~55/33/12 %, Pareto activity with one power user."""
    rng = random.Random(seed)
    users = []
    for i in range(count):
        name = _FIRST[i % len(_FIRST)] + ("" if i < len(_FIRST) else str(i // len(_FIRST)))
        plan = rng.choices([p for p, _ in PLAN_MIX], [w for _, w in PLAN_MIX])[0]
        if i == 0:
            plan = "enterprise"
        weight = 12.0 if i == 0 else rng.paretovariate(1.6)
        users.append(DemoUser(f"{name}@{rng.choice(_COMPANIES[plan])}", plan, weight))
    return users


def _prompt(rng: random.Random, size: int) -> str:
    topic = rng.choice(_TOPICS)
    filler = _FILLER * max(0, size // len(_FILLER))
    return f"Request #{rng.randrange(10**9)} about {topic}. {filler}What should we do about {topic}?"


def next_call(user: DemoUser, rng: random.Random, *, error_rate: float = 0.04) -> DemoCall:
    """One realistic request for `user`: feature, model, body, streaming or not, sometimes an error."""
    feature = rng.choice(PLAN_FEATURES[user.plan])
    kind, models = FEATURES[feature]
    model = rng.choice(models[user.plan])
    headers = {
        "Helicone-User-Id": user.user_id,
        "Helicone-Property-Plan": user.plan,
        "Helicone-Property-Feature": feature,
    }
    roll = rng.random()
    if roll < error_rate:
        headers["X-Mock-Status"] = "429" if roll < error_rate * 0.7 else "500"
    size = int(rng.lognormvariate(6.5, 1.0)) * (3 if feature == "summarize" else 1)
    stream = kind != "openai-embeddings" and rng.random() < 0.45
    max_tokens = rng.choice((64, 256, 1024))
    if kind == "openai-chat":
        body: dict[str, Any] = {
            "model": model, "max_tokens": max_tokens,
            "messages": [{"role": "system", "content": "You are a helpful assistant."},
                         {"role": "user", "content": _prompt(rng, size)}],
        }
        path = "/v1/chat/completions"
    elif kind == "openai-embeddings":
        body = {"model": model, "input": [_prompt(rng, size // 4) for _ in range(rng.randint(1, 8))]}
        path = "/v1/embeddings"
    elif kind == "openai-responses":
        body = {"model": model, "input": _prompt(rng, size * 2), "max_output_tokens": max_tokens}
        if model.startswith("o"):
            headers["X-Mock-Reasoning-Tokens"] = str(rng.randint(100, 2000))
        path = "/v1/responses"
    else:
        body = {"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": _prompt(rng, size)}]}
        if rng.random() < 0.3:
            headers["X-Mock-Cached-Tokens"] = str(size // 5)
        path = "/anthropic/v1/messages"
    if stream:
        body["stream"] = True
    return DemoCall(path, body, headers, stream)


def pick_user(users: list[DemoUser], rng: random.Random) -> DemoUser:
    return rng.choices(users, [u.weight for u in users])[0]
