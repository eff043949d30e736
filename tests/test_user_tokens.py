"""User-scoped tokens: a user reads its own usage and remaining budget, and nothing else."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest

from tests.servers import GatewayProcess, create_key

CHAT = "/v1/chat/completions"


def _chat(gateway: GatewayProcess, key: str, user: str, model: str = "gpt-4o-mini", plan: str = "pro") -> httpx.Response:
    return httpx.post(
        gateway.url + CHAT, timeout=30,
        headers={"Helicone-Auth": f"Bearer {key}", "Helicone-User-Id": user, "Authorization": "Bearer sk-test",
                 "Helicone-Property-Plan": plan},
        json={"model": model, "max_tokens": 20, "messages": [{"role": "user", "content": f"hi from {user}"}]},
    )


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def seeded(gateway: GatewayProcess, key: str) -> dict[str, str]:
    for _ in range(3):
        assert _chat(gateway, key, "alice@example.com").status_code == 200
    assert _chat(gateway, key, "alice@example.com", model="gpt-4o").status_code == 200
    for _ in range(2):
        assert _chat(gateway, key, "bob").status_code == 200
    gateway.wait_for_requests(key, 6)
    tokens = {}
    for user in ("alice@example.com", "bob"):
        response = httpx.post(gateway.url + f"/api/users/{user}/tokens", headers=_bearer(key), timeout=30)
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["user_id"] == user and body["token"].startswith("ugu_")
        tokens[user] = body["token"]
    return tokens


def test_usage_me_returns_own_usage_by_model(gateway: GatewayProcess, key: str, seeded: dict[str, str]) -> None:
    response = httpx.get(gateway.url + "/api/usage/me", headers=_bearer(seeded["alice@example.com"]), timeout=30)
    assert response.status_code == 200, response.text
    me = response.json()
    assert me["user_id"] == "alice@example.com"
    assert me["requests"] == 4
    assert {m["model"]: m["requests"] for m in me["by_model"]} == {"gpt-4o-mini": 3, "gpt-4o": 1}
    assert Decimal(me["cost_usd"]) == sum(Decimal(m["cost_usd"]) for m in me["by_model"]) > 0
    assert me["total_tokens"] == me["prompt_tokens"] + me["completion_tokens"] > 0
    assert me["budget"] is None  # no limit set yet
    rows = gateway.api(key, "/api/requests", user_id="alice@example.com", limit=100).json()["requests"]
    assert Decimal(me["cost_usd"]) == sum(Decimal(r["cost_usd"]) for r in rows)


def test_usage_me_shows_remaining_budget(gateway: GatewayProcess, key: str, seeded: dict[str, str]) -> None:
    put = httpx.put(gateway.url + "/api/limits/plans/pro", json={"budget_usd": "2.50", "period": "day"},
                    headers=_bearer(key), timeout=30)
    assert put.status_code == 200
    me = httpx.get(gateway.url + "/api/usage/me", headers=_bearer(seeded["bob"]), timeout=30).json()
    budget = me["budget"]
    assert budget["budget_usd"] == "2.500000000" and budget["period"] == "day"
    assert Decimal(budget["remaining_usd"]) == Decimal("2.5") - Decimal(budget["spent_usd"])
    assert Decimal(budget["spent_usd"]) == Decimal(me["cost_usd"]) > 0
    # A user's own limit overrides the plan's.
    httpx.put(gateway.url + "/api/limits/users/bob", json={"budget_usd": "10"}, headers=_bearer(key), timeout=30)
    budget = httpx.get(gateway.url + "/api/usage/me", headers=_bearer(seeded["bob"]), timeout=30).json()["budget"]
    assert budget["budget_usd"] == "10.000000000" and budget["period"] == "day"


def test_user_token_cannot_read_other_users(gateway: GatewayProcess, key: str, seeded: dict[str, str]) -> None:
    bob = _bearer(seeded["bob"])
    me = httpx.get(gateway.url + "/api/usage/me", headers=bob, timeout=30).json()
    assert me["user_id"] == "bob" and me["requests"] == 2
    # No parameter widens it.
    sneaky = httpx.get(gateway.url + "/api/usage/me", params={"user_id": "alice@example.com"}, headers=bob, timeout=30)
    assert sneaky.status_code == 400 and sneaky.json()["error"]["param"] == "user_id"
    # Every org route refuses it.
    for method, path in [
        ("GET", "/api/requests"), ("GET", "/api/requests?user_id=alice@example.com"),
        ("GET", "/api/limits/users/alice@example.com"), ("POST", "/api/users/alice@example.com/tokens"),
        ("GET", "/api/user-tokens"), ("GET", "/api/users"), ("GET", "/api/users/alice@example.com"),
        ("GET", "/api/alerts"), ("GET", "/api/anomalies"),
    ]:
        response = httpx.request(method, gateway.url + path, headers=bob, timeout=30)
        assert response.status_code in (401, 404), (method, path, response.status_code)
    # The proxy does not take it as an org key: nothing forwarded, 401 in the provider shape.
    proxied = httpx.post(gateway.url + CHAT, headers={"Helicone-Auth": f"Bearer {seeded['bob']}"},
                         json={"model": "gpt-4o-mini", "messages": []}, timeout=30)
    assert proxied.status_code == 401 and "error" in proxied.json()
    # An org key is not a user token either.
    assert httpx.get(gateway.url + "/api/usage/me", headers=_bearer(key), timeout=30).status_code == 401


def test_revoked_and_foreign_tokens(gateway: GatewayProcess, key: str) -> None:
    made = httpx.post(gateway.url + "/api/users/carol/tokens", headers=_bearer(key), timeout=30).json()
    listed = httpx.get(gateway.url + "/api/user-tokens", params={"user_id": "carol"}, headers=_bearer(key), timeout=30).json()
    assert [t["id"] for t in listed["tokens"]] == [made["id"]] and "token" not in listed["tokens"][0]
    other = create_key(gateway.data_dir, org="tokens-other-org")
    assert httpx.delete(gateway.url + f"/api/user-tokens/{made['id']}", headers=_bearer(other), timeout=30).status_code == 404
    assert httpx.get(gateway.url + "/api/usage/me", headers=_bearer(made["token"]), timeout=30).status_code == 200
    assert httpx.delete(gateway.url + f"/api/user-tokens/{made['id']}", headers=_bearer(key), timeout=30).status_code == 200
    response = httpx.get(gateway.url + "/api/usage/me", headers=_bearer(made["token"]), timeout=30)
    assert response.status_code == 401 and response.json()["error"]["status"] == 401
