"""Alert rules: signed webhooks to a real receiver, once per user per window, retries, refusals."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from tests.servers import GatewayProcess, MockUpstream, create_key
from tests.webhook_receiver import WebhookReceiver

CHAT = "/v1/chat/completions"


def _chat(gateway: GatewayProcess, key: str, user: str) -> httpx.Response:
    return httpx.post(
        gateway.url + CHAT, timeout=30,
        headers={"Helicone-Auth": f"Bearer {key}", "Helicone-User-Id": user, "Authorization": "Bearer sk-test"},
        json={"model": "gpt-4o", "max_tokens": 50, "messages": [{"role": "user", "content": "the same question"}]},
    )


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver()
    yield server
    server.close()


@pytest.fixture(scope="module")
def alert_gateway(tmp_path_factory: pytest.TempPathFactory, mock_upstream: MockUpstream) -> Iterator[tuple[GatewayProcess, str]]:
    data_dir: Path = tmp_path_factory.mktemp("alerts") / "data"
    gw = GatewayProcess(data_dir, mock_upstream.url, "--alert-interval", "0.5", "--allow-private-webhooks")
    yield gw, create_key(data_dir)
    gw.stop()


def _create(gw: GatewayProcess, key: str, body: dict) -> httpx.Response:
    return httpx.post(gw.url + "/api/alerts", json=body, headers=_auth(key), timeout=30)


def _history(gw: GatewayProcess, key: str, rule_id: str) -> list[dict]:
    response = httpx.get(gw.url + f"/api/alerts/{rule_id}/history", headers=_auth(key), timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["deliveries"]  # type: ignore[no-any-return]


def _wait_history(gw: GatewayProcess, key: str, rule_id: str, status: str, timeout: float = 20) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = _history(gw, key, rule_id)
        if rows and all(r["status"] == status for r in rows):
            return rows
        time.sleep(0.2)
    raise AssertionError(f"history never became {status}: {_history(gw, key, rule_id)}")


def test_cost_rule_fires_once_signed_for_the_user_who_crossed(
    alert_gateway: tuple[GatewayProcess, str], receiver: WebhookReceiver,
) -> None:
    gw, key = alert_gateway
    assert _chat(gw, key, "probe").status_code == 200
    one = Decimal(gw.wait_for_requests(key, 1, user_id="probe")[0]["cost_usd"])
    assert one > 0
    threshold = str(one * Decimal("2.5"))
    made = {}
    for name, path in (("signed", "/signed"), ("flaky", "/flaky/2/x"), ("redirect", "/redirect/x")):
        response = _create(gw, key, {"kind": "user_cost_over", "threshold_usd": threshold, "window": "24h",
                                     "webhook_url": receiver.url + path})
        assert response.status_code == 201, response.text
        made[name] = response.json()
    assert made["signed"]["secret"].startswith("whsec_") and made["signed"]["window"] == "24h"

    for _ in range(3):
        assert _chat(gw, key, "spender").status_code == 200
    for _ in range(2):
        assert _chat(gw, key, "saver").status_code == 200  # 2× the cost: under the threshold

    hook = receiver.wait_for("/signed", 1)[0]
    payload = json.loads(hook.body)
    assert payload["user_id"] == "spender" and payload["type"] == "user_cost_over"
    assert Decimal(payload["cost_usd"]) == 3 * one and Decimal(payload["threshold_usd"]) == Decimal(threshold)
    assert "over the $" in payload["reason"]
    expected = "sha256=" + hmac.new(made["signed"]["secret"].encode(), hook.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(hook.headers["x-usagegate-signature"], expected)
    wrong = "sha256=" + hmac.new(made["flaky"]["secret"].encode(), hook.body, hashlib.sha256).hexdigest()
    assert hook.headers["x-usagegate-signature"] != wrong  # each rule signs with its own secret

    # Retries with backoff: 500, 500, then 200 — the same signed bytes each time.
    flaky = receiver.wait_for("/flaky/2/x", 3)
    assert len({r.body for r in flaky}) == 1 and [r.headers["x-usagegate-attempt"] for r in flaky] == ["1", "2", "3"]
    delivered = _wait_history(gw, key, made["flaky"]["id"], "delivered")
    assert len(delivered) == 1 and delivered[0]["attempts"] == 3 and delivered[0]["response_status"] == 200

    # Redirects are not followed: the delivery fails and /hook never sees it.
    failed = _wait_history(gw, key, made["redirect"]["id"], "failed")
    assert "redirects are not followed" in failed[0]["last_error"] and receiver.on("/hook") == []

    # Still over the threshold, more spend, several more evaluations: no second alert this window.
    for _ in range(2):
        assert _chat(gw, key, "spender").status_code == 200
    time.sleep(3)
    assert len(receiver.on("/signed")) == 1
    signed = _history(gw, key, made["signed"]["id"])
    assert [(d["user_id"], d["status"], d["attempts"]) for d in signed] == [("spender", "delivered", 1)]
    assert all(json.loads(r.body)["user_id"] == "spender" for r in receiver.received)


def test_rules_list_read_delete_and_stay_in_their_org(alert_gateway: tuple[GatewayProcess, str], receiver: WebhookReceiver) -> None:
    gw, key = alert_gateway
    made = _create(gw, key, {"kind": "anomaly", "webhook_url": receiver.url + "/anomaly-rule"}).json()
    listed = httpx.get(gw.url + "/api/alerts", headers=_auth(key), timeout=30).json()["alerts"]
    assert made["id"] in {r["id"] for r in listed} and all("secret" not in r for r in listed)
    one = httpx.get(gw.url + f"/api/alerts/{made['id']}", headers=_auth(key), timeout=30).json()
    assert one["kind"] == "anomaly" and one["threshold_usd"] is None and "secret" not in one
    other = create_key(gw.data_dir, org="alerts-other")
    assert httpx.get(gw.url + f"/api/alerts/{made['id']}", headers=_auth(other), timeout=30).status_code == 404
    assert httpx.delete(gw.url + f"/api/alerts/{made['id']}", headers=_auth(other), timeout=30).status_code == 404
    assert httpx.get(gw.url + "/api/alerts", headers=_auth(other), timeout=30).json()["alerts"] == []
    assert httpx.delete(gw.url + f"/api/alerts/{made['id']}", headers=_auth(key), timeout=30).status_code == 200
    gone = httpx.get(gw.url + f"/api/alerts/{made['id']}/history", headers=_auth(key), timeout=30)
    assert gone.status_code == 404 and gone.json()["error"]["status"] == 404


@pytest.mark.parametrize(
    "body, param",
    [
        ({"kind": "user_cost_over", "threshold_usd": "5", "window": "24h"}, "webhook_url"),
        ({"kind": "sometimes", "webhook_url": "https://example.com/h"}, "kind"),
        ({"kind": "user_cost_over", "threshold_usd": "5", "window": "24x", "webhook_url": "https://example.com/h"}, "window"),
        ({"kind": "user_cost_over", "threshold_usd": 5.5, "webhook_url": "https://example.com/h"}, "threshold_usd"),
        ({"kind": "user_cost_over", "threshold_usd": "-1", "webhook_url": "https://example.com/h"}, "threshold_usd"),
        ({"kind": "user_cost_over", "webhook_url": "https://example.com/h"}, "threshold_usd"),
        ({"kind": "anomaly", "threshold_usd": "5", "webhook_url": "https://example.com/h"}, "threshold_usd"),
        ({"kind": "anomaly", "webhook_url": "ftp://example.com/h"}, "webhook_url"),
        ({"kind": "anomaly", "webhook_url": "http://169.254.169.254/latest"}, "webhook_url"),
        ({"kind": "anomaly", "webhook_url": "https://example.com/h", "colour": "red"}, "colour"),
    ],
    ids=["no-url", "bad-kind", "bad-window", "float-money", "negative", "no-threshold", "anomaly-threshold",
         "ftp", "link-local-even-when-allowed", "unknown-field"],
)
def test_bad_rules_are_400(alert_gateway: tuple[GatewayProcess, str], body: dict, param: str) -> None:
    gw, key = alert_gateway
    response = _create(gw, key, body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/hook", "http://10.1.2.3/hook", "http://localhost:9/hook", "http://[::1]:9/h"],
                         ids=["loopback", "private", "localhost", "ipv6-loopback"])
def test_private_webhooks_refused_by_default(gateway: GatewayProcess, key: str, url: str) -> None:
    response = _create(gateway, key, {"kind": "user_cost_over", "threshold_usd": "5", "webhook_url": url})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "webhook_url" and "is refused" in error["message"]
