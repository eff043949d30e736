"""Two orgs on one gateway: no /api or dashboard route ever shows one org another org's data,
and another org's things answer 404 (not 403), so their existence is not revealed either."""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest

from tests.servers import GatewayProcess, MockUpstream, create_key

SECRET_USER = "acme-only-user@secret.example"
SHARED_USER = "same-name-in-both"


@pytest.fixture(scope="module")
def two_orgs(tmp_path_factory: pytest.TempPathFactory, mock_upstream: MockUpstream) -> Iterator[tuple[GatewayProcess, str, str, str]]:
    gw = GatewayProcess(tmp_path_factory.mktemp("iso") / "data", mock_upstream.url, "--allow-private-webhooks")
    acme, other = create_key(gw.data_dir, "acme-iso"), create_key(gw.data_dir, "other-iso")
    request_id = ""
    for key, users in ((acme, (SECRET_USER, SHARED_USER)), (other, (SHARED_USER,))):
        for user in users:
            response = httpx.post(
                gw.url + "/v1/chat/completions", timeout=30,
                json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"iso {user}"}]},
                headers={"Helicone-Auth": f"Bearer {key}", "Helicone-User-Id": user, "Helicone-Property-Plan": "pro"},
            )
            assert response.status_code == 200
            if user == SECRET_USER:
                request_id = response.headers["helicone-id"]
    gw.wait_for_requests(acme, 2)
    gw.wait_for_requests(other, 1)
    yield gw, acme, other, request_id
    gw.stop()


def test_acme_things_are_404_for_the_other_org(two_orgs: tuple[GatewayProcess, str, str, str]) -> None:
    gw, acme, other, request_id = two_orgs
    auth = {"Authorization": f"Bearer {acme}"}
    assert httpx.put(gw.url + "/api/limits/users/" + SECRET_USER, json={"requests_per_minute": 5}, headers=auth).status_code == 200
    assert httpx.put(gw.url + "/api/prices/acme-house-model", json={"input_mtok": "1", "output_mtok": "1"}, headers=auth).status_code == 200
    rule = httpx.post(gw.url + "/api/alerts", headers=auth, json={
        "kind": "user_cost_over", "threshold_usd": "100", "window": "24h", "webhook_url": "http://127.0.0.1:9/hook"})
    assert rule.status_code == 201, rule.text
    rule_id = rule.json()["id"]
    secret = quote(SECRET_USER, safe="")
    for path in (
        f"/api/requests/{request_id}", f"/api/users/{secret}", f"/api/users/{secret}/requests",
        f"/api/limits/users/{secret}", "/api/prices/acme-house-model", f"/api/alerts/{rule_id}",
        f"/api/alerts/{rule_id}/history",
    ):
        response = gw.api(other, path)
        assert response.status_code == 404, (path, response.status_code, response.text[:200])
        assert set(response.json()) == {"error"}  # the 404 may echo the asked-for id, nothing else
    other_auth = {"Authorization": f"Bearer {other}"}
    assert httpx.delete(gw.url + f"/api/users/{secret}", headers=other_auth).status_code == 404
    assert httpx.delete(gw.url + f"/api/alerts/{rule_id}", headers=other_auth).status_code == 404
    assert httpx.delete(gw.url + "/api/prices/acme-house-model", headers=other_auth).status_code == 404
    assert httpx.delete(gw.url + f"/api/limits/users/{secret}", headers=other_auth).status_code == 404
    # ...and acme still has all of it.
    assert gw.api(acme, f"/api/requests/{request_id}").status_code == 200
    assert gw.api(acme, f"/api/alerts/{rule_id}").status_code == 200
    assert gw.api(acme, f"/api/limits/users/{secret}").status_code == 200


@pytest.mark.parametrize(
    "path, params",
    [("/api/requests", {}), ("/api/users", {}), ("/api/users", {"q": "acme"}), ("/api/breakdown", {"by": "model"}),
     ("/api/breakdown", {"by": "property.plan"}), ("/api/profitability", {}), ("/api/export", {"format": "csv"}),
     ("/api/anomalies", {}), ("/api/alerts", {}), ("/api/prices", {}), ("/api/plans", {}),
     ("/api/user-tokens", {}), (f"/api/users/{SHARED_USER}", {}), (f"/api/users/{SHARED_USER}/requests", {})],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_lists_never_contain_the_other_orgs_data(two_orgs: tuple[GatewayProcess, str, str, str], path: str, params: dict) -> None:
    gw, _acme, other, request_id = two_orgs
    response = gw.api(other, path, **params)
    assert response.status_code in (200, 404), (path, response.text[:200])
    assert SECRET_USER not in response.text and request_id not in response.text


def test_shared_user_name_counts_only_own_org(two_orgs: tuple[GatewayProcess, str, str, str]) -> None:
    gw, acme, other, _ = two_orgs
    mine = gw.api(other, f"/api/users/{SHARED_USER}").json()
    theirs = gw.api(acme, f"/api/users/{SHARED_USER}").json()
    assert mine["user"]["requests"] == 1 and theirs["user"]["requests"] == 1
    assert gw.api(other, "/api/users").json()["count"] == 1


def _sign_in(gw: GatewayProcess, key: str) -> httpx.Client:
    client = httpx.Client(base_url=gw.url, timeout=30, follow_redirects=False)
    form = client.get("/login")
    csrf = re.search(r'name="csrf"\s+value="([^"]+)"', form.text) or re.search(r'value="([^"]+)"\s+name="csrf"', form.text)
    assert csrf, (form.status_code, form.text[:500])
    answer = client.post("/login", data={"key": key, "csrf": csrf.group(1), "next": "/users"})
    assert answer.status_code == 303
    return client


def test_dashboard_shows_only_own_org(two_orgs: tuple[GatewayProcess, str, str, str]) -> None:
    gw, acme, other, request_id = two_orgs
    client = _sign_in(gw, other)
    try:
        users = client.get("/users")
        assert users.status_code == 200 and SHARED_USER in users.text
        assert SECRET_USER not in users.text
        secret = SECRET_USER.replace("@", "%40")
        for path in (f"/users/{secret}", f"/requests/{request_id}"):
            page = client.get(path)
            assert page.status_code == 404, (path, page.status_code)
            assert request_id not in page.text or path.startswith("/requests/")
        assert SECRET_USER not in client.get("/export.csv").text
        assert SECRET_USER not in client.get("/profitability").text
    finally:
        client.close()
    client = _sign_in(gw, acme)
    try:
        assert SECRET_USER in client.get("/users").text
    finally:
        client.close()
