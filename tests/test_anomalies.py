"""GET /api/anomalies on generated history: the abuser is flagged with reasons, nobody else is."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import httpx
import pytest

from tests.servers import GatewayProcess, MockUpstream, create_key
from tests.traffic_history import ABUSER, NEWCOMER, generate
from tests.webhook_receiver import WebhookReceiver
from usagegate.config_db import ConfigDB
from usagegate.history import write_history


@pytest.fixture(scope="module")
def history_gateway(tmp_path_factory: pytest.TempPathFactory, mock_upstream: MockUpstream) -> Iterator[tuple[GatewayProcess, str, int]]:
    data_dir = tmp_path_factory.mktemp("anomalies") / "data"
    key = create_key(data_dir)
    db = ConfigDB(data_dir)
    org_id = db.org_id("acme")
    db.close()
    assert org_id is not None
    now = datetime.now(timezone.utc)
    to_midnight = (now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1) - now).total_seconds()
    if to_midnight < 120:  # "today" must still be today when the assertions run
        time.sleep(to_midnight + 1)
        now = datetime.now(timezone.utc)
    records = generate(org_id, now=now)
    write_history(data_dir, records)
    # Replays the spool before it reports healthy; evaluates alert rules every 0.3 s.
    gw = GatewayProcess(data_dir, mock_upstream.url, "--alert-interval", "0.3", "--allow-private-webhooks")
    yield gw, key, len(records)
    gw.stop()


def test_history_went_through_the_log_pipeline(history_gateway: tuple[GatewayProcess, str, int]) -> None:
    gw, key, count = history_gateway
    response = gw.api(key, "/api/requests", limit=1, **{"from": "2000-01-01", "to": "2100-01-01"})
    assert response.status_code == 200 and response.json()["requests"]
    row = response.json()["requests"][0]
    assert row["cost_usd"] is not None and Decimal(row["cost_usd"]) >= 0  # priced by the batch writer


def test_only_the_abuser_is_flagged_today_with_reasons(history_gateway: tuple[GatewayProcess, str, int]) -> None:
    gw, key, _ = history_gateway
    response = gw.api(key, "/api/anomalies")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["users_checked"] >= 40  # the whole cast was active today
    assert [u["user_id"] for u in body["anomalies"]] == [ABUSER], [u["reasons"] for u in body["anomalies"]]
    flagged = body["anomalies"][0]
    assert flagged["plan"] == "pro"
    by_kind = {(f["metric"], f["compared_with"]): f for f in flagged["findings"]}
    cost = by_kind[("cost_usd", "own_baseline")]
    assert Decimal(cost["value"]) > 20 * Decimal(cost["baseline"]) > 0
    assert cost["ratio"] >= 20 and cost["score"] >= 6
    assert "cost today $" in cost["reason"] and "this user's 14-day median of $" in cost["reason"]
    # The money in a finding is exact: today's cost equals the users table's, to the nano-dollar.
    today = datetime.now(timezone.utc).date()
    users = gw.api(key, "/api/users", q=ABUSER, **{"from": today.isoformat(),
                                                  "to": (today + timedelta(days=1)).isoformat()}).json()
    assert cost["value"] == users["users"][0]["cost_usd"]
    assert ("requests", "own_baseline") in by_kind
    peers = by_kind[("cost_usd", "plan_peers")]
    assert "other users on plan 'pro'" in peers["reason"] and peers["ratio"] >= 20
    assert NEWCOMER not in {u["user_id"] for u in body["anomalies"]}


def test_a_normal_past_day_has_no_anomalies(history_gateway: tuple[GatewayProcess, str, int]) -> None:
    gw, key, _ = history_gateway
    day = (datetime.now(timezone.utc) - timedelta(days=1)).date()
    body = gw.api(key, "/api/anomalies", **{"from": day.isoformat(), "to": (day + timedelta(days=1)).isoformat()}).json()
    assert body["users_checked"] >= 25 and body["anomalies"] == []
    # A multi-day window compares per-day averages: still quiet.
    week = gw.api(key, "/api/anomalies", **{"from": (day - timedelta(days=2)).isoformat(), "to": day.isoformat()}).json()
    assert week["users_checked"] >= 25 and week["anomalies"] == []


@pytest.mark.parametrize(
    "params, param",
    [({"from": "yesterday"}, "from"), ({"from": "2026-01-02", "to": "2026-01-01"}, "to"),
     ({"from": "2025-01-01", "to": "2026-01-01"}, "to"), ({"limit": "0"}, "limit")],
    ids=["bad-date", "inverted", "too-long", "bad-limit"],
)
def test_bad_parameters_are_400(history_gateway: tuple[GatewayProcess, str, int], params: dict, param: str) -> None:
    gw, key, _ = history_gateway
    response = gw.api(key, "/api/anomalies", **params)
    assert response.status_code == 400 and response.json()["error"]["param"] == param


def test_another_org_sees_none_of_it(history_gateway: tuple[GatewayProcess, str, int]) -> None:
    gw, _, _ = history_gateway
    other = create_key(gw.data_dir, org="anomalies-other")
    body = gw.api(other, "/api/anomalies").json()
    assert body["users_checked"] == 0 and body["anomalies"] == []
    assert httpx.get(gw.url + "/api/anomalies", timeout=30).status_code == 401


def test_anomaly_rule_sends_one_signed_webhook_for_the_abuser(history_gateway: tuple[GatewayProcess, str, int]) -> None:
    gw, key, _ = history_gateway
    receiver = WebhookReceiver()
    try:
        made = httpx.post(gw.url + "/api/alerts", json={"kind": "anomaly", "webhook_url": receiver.url + "/anomaly"},
                          headers={"Authorization": f"Bearer {key}"}, timeout=30)
        assert made.status_code == 201, made.text
        hook = receiver.wait_for("/anomaly", 1)[0]
        expected = "sha256=" + hmac.new(made.json()["secret"].encode(), hook.body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(hook.headers["x-usagegate-signature"], expected)
        payload = json.loads(hook.body)
        assert payload["type"] == "anomaly" and payload["user_id"] == ABUSER
        assert any("14-day median" in reason for reason in payload["reasons"])
        time.sleep(4)  # more than one anomaly evaluation later (every 3 s at this interval)
        assert [json.loads(r.body)["user_id"] for r in receiver.received] == [ABUSER]
    finally:
        receiver.close()


@pytest.mark.parametrize("params", [{"to": ""}, {"from": ""}, {"from": "", "to": ""}], ids=["empty-to", "empty-from", "both-empty"])
def test_empty_range_parameters_mean_today(params: dict[str, str]) -> None:
    from usagegate.anomalies import today
    from usagegate.api.anomalies import window

    assert window(params.get("from"), params.get("to")) == today()
