"""Guardrails at the gateway: Helicone rate-limit policies, per-user/plan budgets and rates."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import httpx
import pytest

from tests.servers import GatewayProcess

CHAT = "/v1/chat/completions"


def _headers(key: str, user: str, **extra: str) -> dict[str, str]:
    return {"Helicone-Auth": f"Bearer {key}", "Helicone-User-Id": user, "Authorization": "Bearer sk-test", **extra}


def _body(content: str = "hello") -> dict:
    return {"model": "gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": content}]}


def _chat(gateway: GatewayProcess, key: str, user: str, content: str = "hello", **extra: str) -> httpx.Response:
    return httpx.post(gateway.url + CHAT, headers=_headers(key, user, **extra), timeout=30, json=_body(content))


def _put(gateway: GatewayProcess, key: str, path: str, body: object) -> httpx.Response:
    return httpx.put(gateway.url + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_policy_per_user_fourth_request_is_429(gateway: GatewayProcess, key: str) -> None:
    policy = {"Helicone-RateLimit-Policy": "3;w=60;s=user"}
    answers = [_chat(gateway, key, "rl-alice", **policy) for _ in range(4)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    assert answers[0].headers["helicone-ratelimit-limit"] == "3"
    assert answers[0].headers["helicone-ratelimit-remaining"] == "2"
    blocked = answers[3]
    assert int(blocked.headers["retry-after"]) >= 1
    assert blocked.headers["helicone-ratelimit-remaining"] == "0"
    assert blocked.headers["helicone-ratelimit-policy"] == "3;w=60;u=request;s=user"
    assert 1 <= int(blocked.headers["helicone-ratelimit-reset"]) <= 60
    assert "Rate limit exceeded" in blocked.json()["error"]["message"]
    assert _chat(gateway, key, "rl-bob", **policy).status_code == 200  # another user is unaffected
    rows = gateway.wait_for_requests(key, 1, user_id="rl-alice", status=429)
    assert rows[0]["rate_limited"] is True and rows[0]["cost_usd"] == "0.000000000"
    assert "Rate limit" in rows[0]["error"]


def test_policy_segmented_by_property(gateway: GatewayProcess, key: str) -> None:
    policy = {"Helicone-RateLimit-Policy": "2;w=120;s=team", "Helicone-Property-Team": "red"}
    codes = [_chat(gateway, key, f"team-user-{n}", **policy).status_code for n in range(3)]
    assert codes == [200, 200, 429]  # different users, same team value: one bucket
    other = {"Helicone-RateLimit-Policy": "2;w=120;s=team", "Helicone-Property-Team": "blue"}
    assert _chat(gateway, key, "team-user-0", **other).status_code == 200


@pytest.mark.parametrize(
    "policy",
    ["3;w=10", "abc", "3;w=60;u=dollars", "0;w=60", "3;w=60;s=user;extra"],
    ids=["window-too-short", "garbage", "bad-unit", "zero-quota", "trailing"],
)
def test_malformed_policy_is_400(gateway: GatewayProcess, key: str, policy: str) -> None:
    response = _chat(gateway, key, "rl-bad", **{"Helicone-RateLimit-Policy": policy})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "Helicone-RateLimit-Policy"


def test_cents_policy_blocks_after_spend(gateway: GatewayProcess, key: str) -> None:
    # 1 cent per minute: tiny requests cost far less, so a long prompt is used to cross it.
    policy = {"Helicone-RateLimit-Policy": "1;w=60;u=cents;s=user"}
    codes = []
    for _ in range(40):
        response = _chat(gateway, key, "cents-user", content="word " * 20000, **policy)
        codes.append(response.status_code)
        if response.status_code == 429:
            break
    assert codes[0] == 200 and codes[-1] == 429
    assert "cents" in response.json()["error"]["message"]


def test_budget_holds_under_30_concurrent_requests(gateway: GatewayProcess, key: str) -> None:
    probe = _chat(gateway, key, "budget-probe", content="same prompt")
    assert probe.status_code == 200
    row = gateway.wait_for_requests(key, 1, user_id="budget-probe")[0]
    one = Decimal(row["cost_usd"])
    assert one > 0
    budget = one * 5
    assert _put(gateway, key, "/api/limits/users/budget-user", {"budget_usd": str(budget), "period": "day"}).status_code == 200

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(*[
                client.post(gateway.url + CHAT, headers=_headers(key, "budget-user"), json=_body("same prompt"))
                for _ in range(30)
            ])

    answers = asyncio.run(burst())
    ok = [r for r in answers if r.status_code == 200]
    refused = [r for r in answers if r.status_code == 429]
    assert ok and refused and len(ok) + len(refused) == 30, [r.text for r in answers[:3]]
    assert all("budget" in r.json()["error"]["message"] for r in refused)
    assert all(Decimal(r.headers["x-usagegate-budget-remaining"]) >= 0 for r in ok)
    rows = gateway.wait_for_requests(key, 30, user_id="budget-user")
    spent = sum(Decimal(r["cost_usd"]) for r in rows)
    assert spent <= budget
    assert sum(1 for r in rows if r["rate_limited"]) == len(refused)


def test_user_limit_overrides_plan_limit(gateway: GatewayProcess, key: str) -> None:
    assert _put(gateway, key, "/api/limits/plans/starter", {"requests_per_minute": 2}).status_code == 200
    plan = {"Helicone-Property-Plan": "starter"}
    assert [_chat(gateway, key, "plan-user", **plan).status_code for _ in range(3)] == [200, 200, 429]
    assert _put(gateway, key, "/api/limits/users/vip-user", {"requests_per_minute": 4}).status_code == 200
    assert [_chat(gateway, key, "vip-user", **plan).status_code for _ in range(5)] == [200, 200, 200, 200, 429]
    # No plan property → no plan limit.
    assert [_chat(gateway, key, "planless").status_code for _ in range(3)] == [200, 200, 200]
    got = httpx.get(gateway.url + "/api/limits/plans/starter", headers={"Authorization": f"Bearer {key}"})
    assert got.json()["requests_per_minute"] == 2


def test_unpriced_model_under_budget_is_refused_clearly(gateway: GatewayProcess, key: str) -> None:
    assert _put(gateway, key, "/api/limits/users/careful", {"budget_usd": "1.00"}).status_code == 200
    response = httpx.post(
        gateway.url + CHAT, headers=_headers(key, "careful"), timeout=30,
        json={"model": "my-private-model-" + uuid.uuid4().hex[:6], "messages": [{"role": "user", "content": "x"}]},
    )
    assert response.status_code == 400
    assert "no known price" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "body, param",
    [({"budget_usd": "ten"}, "budget_usd"), ({"period": "week"}, "period"),
     ({"requests_per_minute": 0}, "requests_per_minute"), ({"colour": "red"}, "colour"),
     ({"budget_usd": 1.5}, "budget_usd")],
    ids=["bad-money", "bad-period", "bad-rpm", "unknown-field", "float-money"],
)
def test_bad_limit_bodies_are_400(gateway: GatewayProcess, key: str, body: dict, param: str) -> None:
    response = _put(gateway, key, "/api/limits/users/someone", body)
    assert response.status_code == 400 and response.json()["error"]["param"] == param


def test_limits_are_per_org(gateway: GatewayProcess, key: str) -> None:
    from tests.servers import create_key

    other = create_key(gateway.data_dir, org="limits-other")
    assert _put(gateway, key, "/api/limits/users/shared-name", {"requests_per_minute": 1}).status_code == 200
    assert httpx.get(gateway.url + "/api/limits/users/shared-name",
                     headers={"Authorization": f"Bearer {other}"}).status_code == 404
    assert [_chat(gateway, other, "shared-name").status_code for _ in range(2)] == [200, 200]


def test_budget_accepts_a_model_priced_by_an_org_override(gateway: GatewayProcess, key: str) -> None:
    model = "house-model-" + uuid.uuid4().hex[:6]
    assert _put(gateway, key, f"/api/prices/{model}", {"input_mtok": "1", "output_mtok": "2"}).status_code == 200
    assert _put(gateway, key, "/api/limits/users/house-user", {"budget_usd": "1.00"}).status_code == 200
    response = httpx.post(
        gateway.url + CHAT, headers=_headers(key, "house-user"), timeout=30,
        json={"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]},
    )
    assert response.status_code == 200
    remaining = Decimal(response.headers["x-usagegate-budget-remaining"])
    assert Decimal("0.99") < remaining < Decimal("1.00")
