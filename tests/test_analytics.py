"""Per-user analytics end to end: traffic from official SDKs through the real gateway and mock,
then /api/users, user detail, breakdown, plans/profitability, export and the CLI, every money
figure checked exactly against published per-token prices × the recorded tokens (DESIGN §4).
Imported history (exact ranges, the forecast's trend, re-pricing) is in test_analytics_history.py."""

from __future__ import annotations

import calendar
import csv
import io
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anthropic
import httpx
import openai
import pyarrow.parquet as pq
import pytest

from tests.priced import price, q9, record, s9
from tests.servers import GatewayProcess, create_key

WEIRD = "we/ird %user?&é\\'x"  # '/', '%', '?', '&', non-ASCII, backslash and quote


@dataclass
class Traffic:
    key: str
    other_key: str
    rows: list[dict[str, Any]]
    # user → {"requests", "prompt", "completion", "cost", "plan", "errors"}
    users: dict[str, dict[str, Any]]


def _openai(gw: GatewayProcess, key: str, user: str | None, plan: str | None, **extra: str) -> openai.OpenAI:
    headers = {"Helicone-Auth": f"Bearer {key}", **extra}
    if user is not None:
        headers["Helicone-User-Id"] = user
    if plan is not None:
        headers["Helicone-Property-Plan"] = plan
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-test", default_headers=headers, max_retries=0)


@pytest.fixture(scope="module")
def traffic(gateway: GatewayProcess, key: str) -> Traffic:
    sent = 0
    plan_of = {"alice@example.com": "pro", "bob": "free", "carol": "enterprise", "dave": "free", WEIRD: "pro", "": None}
    for n in range(3):
        _openai(gateway, key, "alice@example.com", "pro").chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"alice question {n} " * (n + 1)}])
    stream = _openai(gateway, key, "alice@example.com", "pro").chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "alice streams a longer question"}], stream=True)
    for _ in stream:
        pass
    sent += 4
    claude = anthropic.Anthropic(base_url=gateway.url + "/anthropic", api_key="sk-ant-test", max_retries=0,
                                 default_headers={"Helicone-Auth": f"Bearer {key}", "Helicone-User-Id": "bob",
                                                  "Helicone-Property-Plan": "free"})
    claude.messages.create(model="claude-3-5-haiku-20241022", max_tokens=64,
                           messages=[{"role": "user", "content": "bob asks claude"}])
    with claude.messages.stream(model="claude-3-5-haiku-20241022", max_tokens=64,
                                messages=[{"role": "user", "content": "bob streams from claude"}]) as s:
        for _ in s.text_stream:
            pass
    sent += 2
    for n in range(2):
        _openai(gateway, key, "carol", "enterprise").chat.completions.create(
            model="gpt-4.1-mini", messages=[{"role": "user", "content": f"carol enterprise work item {n}" * 3}])
    sent += 2
    _openai(gateway, key, "dave", "free").chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "dave"}])
    with pytest.raises(openai.InternalServerError):
        _openai(gateway, key, "dave", "free", **{"X-Mock-Status": "500"}).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "dave fails"}])
    sent += 2
    # The official SDK's body `user` field works as the user id too (header absent).
    _openai(gateway, key, None, "pro").chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "weird user"}], user=WEIRD)
    _openai(gateway, key, None, None).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "nobody in particular"}])
    sent += 2
    rows = gateway.wait_for_requests(key, sent, timeout=15)
    users: dict[str, dict[str, Any]] = defaultdict(lambda: {"requests": 0, "prompt": 0, "completion": 0,
                                                            "cost": Decimal(0), "errors": 0})
    for row in rows:
        expected = price(row["model"], row["prompt_tokens"], row["completion_tokens"], row["status"])
        assert Decimal(row["cost_usd"]) == expected, row  # the record path priced it as published
        u = users[row["user_id"]]
        u["requests"] += 1
        u["prompt"] += row["prompt_tokens"]
        u["completion"] += row["completion_tokens"]
        u["cost"] += expected
        u["errors"] += row["status"] >= 400
        u["plan"] = plan_of[row["user_id"]]
    assert set(users) == set(plan_of)
    # The /api/users reads rollups; wait until they hold every request (same insert, so at once).
    other_key = create_key(gateway.data_dir, "other-org")
    return Traffic(key, other_key, rows, dict(users), )


def _get(gw: GatewayProcess, key: str, path: str, params: Any = None) -> httpx.Response:
    return httpx.get(gw.url + path, params=params, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_users_table_matches_published_prices_exactly(gateway: GatewayProcess, traffic: Traffic) -> None:
    body = _get(gateway, traffic.key, "/api/users").json()
    got = {u["user_id"]: u for u in body["users"]}
    assert set(got) == set(traffic.users) and body["count"] == len(traffic.users)
    for user_id, want in traffic.users.items():
        u = got[user_id]
        assert u["requests"] == want["requests"]
        assert u["prompt_tokens"] == want["prompt"] and u["completion_tokens"] == want["completion"]
        assert u["total_tokens"] == want["prompt"] + want["completion"]
        assert u["cost_usd"] == s9(want["cost"]) and len(u["cost_usd"].split(".")[1]) == 9
        assert Decimal(u["avg_cost_per_request"]) == q9(Fraction(want["cost"]) / want["requests"])
        assert u["error_rate"] == round(want["errors"] / want["requests"], 4)
        assert u["active_days"] == 1 and u["avg_requests_per_day"] == want["requests"]
        assert u["properties"] == ({"plan": want["plan"]} if want["plan"] else {})
        assert u["first_seen"].endswith("Z") and u["first_seen"] <= u["last_seen"]
        assert u["rate_limited"] == 0 and u["p95_latency_ms"] is not None
    assert got["bob"]["top_model"] == "claude-3-5-haiku-20241022" and got["carol"]["top_model"] == "gpt-4.1-mini"
    assert got["dave"]["error_rate"] == 0.5
    totals = body["totals"]
    assert totals["cost_usd"] == s9(sum(u["cost"] for u in traffic.users.values()))
    assert totals["requests"] == len(traffic.rows)
    assert Decimal(totals["cost_usd"]) == sum(Decimal(r["cost_usd"]) for r in traffic.rows)
    # Default sort: cost desc, ties by user id desc.
    keys = [(Decimal(u["cost_usd"]), u["user_id"]) for u in body["users"]]
    assert keys == sorted(keys, reverse=True)


# Columns with ties (requests, top_model, error_rate) prove the user-id tie-break keeps pages exact.
SORTS = ["cost_usd", "requests", "user_id", "avg_cost_per_request", "error_rate", "last_seen", "top_model"]


@pytest.mark.parametrize("sort", SORTS)
@pytest.mark.parametrize("order", ["asc", "desc"])
def test_pagination_never_skips_or_repeats(gateway: GatewayProcess, traffic: Traffic, sort: str, order: str) -> None:
    full = _get(gateway, traffic.key, "/api/users", {"sort": sort, "order": order, "limit": 1000}).json()["users"]
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params = {"sort": sort, "order": order, "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = _get(gateway, traffic.key, "/api/users", params).json()
        seen += [u["user_id"] for u in page["users"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [u["user_id"] for u in full]
    assert sorted(seen) == sorted(traffic.users)
    values = [(Decimal(u[sort]) if sort in ("cost_usd", "avg_cost_per_request") else u[sort], u["user_id"]) for u in full]
    assert values == sorted(values, reverse=order == "desc")


def test_filters(gateway: GatewayProcess, traffic: Traffic) -> None:
    def ids(**params: str) -> set[str]:
        return {u["user_id"] for u in _get(gateway, traffic.key, "/api/users", params).json()["users"]}

    assert ids(**{"property.plan": "free"}) == {"bob", "dave"}
    assert ids(**{"property.PLAN": "pro"}) == {"alice@example.com", WEIRD}
    assert ids(model="claude-3-5-haiku-20241022") == {"bob"}
    assert ids(q="ALICE") == {"alice@example.com"}
    assert ids(q="ird %u") == {WEIRD}
    body = _get(gateway, traffic.key, "/api/users", {"model": "gpt-4.1-mini"}).json()
    assert body["count"] == 1 and body["totals"]["cost_usd"] == s9(traffic.users["carol"]["cost"])
    # A range before any traffic is empty; an explicit range around now holds everything.
    assert _get(gateway, traffic.key, "/api/users", {"from": "2020-01-01", "to": "2020-02-01"}).json()["count"] == 0
    now = datetime.now(timezone.utc)
    around = {"from": (now - timedelta(hours=2)).isoformat(), "to": (now + timedelta(minutes=5)).isoformat()}
    assert _get(gateway, traffic.key, "/api/users", around).json()["count"] == len(traffic.users)


def test_user_detail_series_and_breakdowns(gateway: GatewayProcess, traffic: Traffic) -> None:
    alice = traffic.users["alice@example.com"]
    body = _get(gateway, traffic.key, "/api/users/alice%40example.com", {"interval": "hour"}).json()
    assert body["user"]["cost_usd"] == s9(alice["cost"]) and body["user"]["requests"] == 4
    assert sum(p["requests"] for p in body["series"]) == 4
    assert sum(Decimal(p["cost_usd"]) for p in body["series"]) == alice["cost"]
    assert len(body["series"]) == 24 * calendar.monthrange(date.today().year, date.today().month)[1]
    assert body["cost_by_model"] == [{"model": "gpt-4o-mini", "requests": 4,
                                      "total_tokens": alice["prompt"] + alice["completion"], "cost_usd": s9(alice["cost"])}]
    assert body["cost_by_property"] == [{"property": "plan", "value": "pro", "requests": 4, "cost_usd": s9(alice["cost"])}]
    recent = body["recent_requests"]
    assert len(recent) == 4 and all(r["user_id"] == "alice@example.com" for r in recent)
    # Newest first, the columns a list shows, and exactly the money the users table sums.
    assert [r["created_at"] for r in recent] == sorted((r["created_at"] for r in recent), reverse=True)
    assert set(recent[0]) == {"request_id", "created_at", "user_id", "provider", "model", "status", "rate_limited",
                              "stream", "prompt_tokens", "completion_tokens", "total_tokens", "cost_usd",
                              "latency_ms", "ttft_ms", "error"}
    assert sum(Decimal(r["cost_usd"]) for r in recent) == alice["cost"]
    assert sum(r["total_tokens"] for r in recent) == alice["prompt"] + alice["completion"]
    daily = _get(gateway, traffic.key, "/api/users/alice%40example.com").json()
    assert daily["interval"] == "day" and sum(Decimal(p["cost_usd"]) for p in daily["series"]) == alice["cost"]
    # Any character, percent-encoded; the anonymous user is %00.
    weird = _get(gateway, traffic.key, "/api/users/" + quote(WEIRD, safe="")).json()
    assert weird["user"]["user_id"] == WEIRD and weird["user"]["cost_usd"] == s9(traffic.users[WEIRD]["cost"])
    anon = _get(gateway, traffic.key, "/api/users/%00").json()
    assert anon["user"]["user_id"] == "" and anon["user"]["requests"] == 1
    reqs = _get(gateway, traffic.key, "/api/users/" + quote(WEIRD, safe="") + "/requests").json()["requests"]
    assert [r["user_id"] for r in reqs] == [WEIRD]
    bob_reqs = _get(gateway, traffic.key, "/api/users/bob/requests", {"limit": 1}).json()
    assert len(bob_reqs["requests"]) == 1 and bob_reqs["next_cursor"]


def test_unknown_and_foreign_users_are_404(gateway: GatewayProcess, traffic: Traffic) -> None:
    for key, path in [(traffic.key, "/api/users/nobody"), (traffic.other_key, "/api/users/alice%40example.com"),
                      (traffic.other_key, "/api/users/bob/requests")]:
        response = _get(gateway, key, path)
        assert response.status_code == 404, path
        assert response.json()["error"]["status"] == 404
    assert _get(gateway, traffic.other_key, "/api/users").json()["count"] == 0
    # The existence probe runs beside the detail's queries; an unknown user stays 404 whatever
    # the parameters (a known user with the same bad parameter is 400, test_bad_parameters...).
    response = _get(gateway, traffic.key, "/api/users/nobody", {"interval": "week"})
    assert response.status_code == 404 and response.json()["error"]["param"] == "user_id"
    response = httpx.delete(gateway.url + "/api/users/bob", headers={"Authorization": f"Bearer {traffic.other_key}"})
    assert response.status_code == 404
    assert _get(gateway, "ug_wrong", "/api/users").status_code == 401


def _median(values: list[Decimal]) -> Decimal:
    s = sorted(values)
    n = len(s)
    return q9(Fraction(s[(n - 1) // 2] + s[n // 2]) / 2)


def test_breakdown_by_plan_and_model(gateway: GatewayProcess, traffic: Traffic) -> None:
    body = _get(gateway, traffic.key, "/api/breakdown", {"by": "property.plan"}).json()
    groups = {g["value"]: g for g in body["groups"]}
    by_plan: dict[str | None, list[Decimal]] = defaultdict(list)
    for u in traffic.users.values():
        by_plan[u["plan"]].append(u["cost"])
    assert set(groups) == set(by_plan)
    for plan, costs in by_plan.items():
        g = groups[plan]
        assert g["users"] == len(costs) and g["cost_usd"] == s9(sum(costs))
        # Average cost per user by plan, exactly.
        assert g["avg_cost_per_user"] == s9((Fraction(sum(costs)) / len(costs)))
        assert g["median_cost_per_user"] == str(_median(costs))
        assert g["p90_cost_per_user"] == s9(sorted(costs)[-(-9 * len(costs) // 10) - 1])
    models = {g["value"]: g for g in _get(gateway, traffic.key, "/api/breakdown", {"by": "model"}).json()["groups"]}
    assert models["claude-3-5-haiku-20241022"]["cost_usd"] == s9(traffic.users["bob"]["cost"])
    assert models["gpt-4o-mini"]["users"] == 4


def _month_bounds(today: date) -> tuple[date, date]:
    start = today.replace(day=1)
    return start, (start + timedelta(days=32)).replace(day=1)


def test_plans_and_profitability(gateway: GatewayProcess, traffic: Traffic) -> None:
    headers = {"Authorization": f"Bearer {traffic.key}"}
    plans = {"property": "Plan", "monthly_revenue_usd": {"free": "0", "pro": "20", "enterprise": "100.50"}}
    put = httpx.put(gateway.url + "/api/plans", json=plans, headers=headers)
    assert put.status_code == 200 and put.json()["property"] == "plan"
    assert _get(gateway, traffic.key, "/api/plans").json() == {
        "property": "plan", "monthly_revenue_usd": {"free": "0", "pro": "20", "enterprise": "100.50"}}
    bad = httpx.put(gateway.url + "/api/plans", json={"monthly_revenue_usd": {"pro": "twenty"}}, headers=headers)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "monthly_revenue_usd.pro"
    price_of = {"free": Decimal(0), "pro": Decimal(20), "enterprise": Decimal("100.50")}
    start, end = _month_bounds(datetime.now(timezone.utc).date())
    body = _get(gateway, traffic.key, "/api/profitability", {"from": str(start), "to": str(end)}).json()
    margins = []
    for row in body["users"]:
        want = traffic.users[row["user_id"]]
        revenue = price_of.get(want["plan"], Decimal(0))
        assert row["plan"] == want["plan"] and row["revenue_usd"] == s9((revenue))
        assert row["cost_usd"] == s9(want["cost"]) and row["margin_usd"] == s9((revenue - want["cost"]))
        expected_pct = None if revenue == 0 else str(((revenue - want["cost"]) * 100 / revenue).quantize(Decimal("0.01")))
        assert row["margin_pct"] == expected_pct
        margins.append((Decimal(row["margin_usd"]), row["user_id"]))
    assert margins == sorted(margins) and len(margins) == len(traffic.users)  # least profitable first
    most = _get(gateway, traffic.key, "/api/profitability", {"from": str(start), "to": str(end), "order": "desc"}).json()
    assert [r["user_id"] for r in most["users"]] == [u for _, u in reversed(margins)]
    plan_rows = {p["plan"]: p for p in body["plans"]}
    assert plan_rows["pro"]["revenue_usd"] == s9((Decimal(40)))  # two pro users × a whole month
    assert plan_rows["free"]["avg_cost_per_user"] == str(
        q9(Fraction(traffic.users["bob"]["cost"] + traffic.users["dave"]["cost"]) / 2))
    # Prorated: a range of 36 hours inside this month earns 36 h / month-length of the price.
    now = datetime.now(timezone.utc)
    span_start = datetime(now.year, now.month, 1, tzinfo=timezone.utc)
    part = _get(gateway, traffic.key, "/api/profitability",
                {"from": span_start.isoformat(), "to": (span_start + timedelta(hours=36)).isoformat(), "order": "desc"}).json()
    month_hours = calendar.monthrange(now.year, now.month)[1] * 24
    for p in part["plans"]:
        assert p["revenue_usd"] == s9((Fraction(price_of[p["plan"]] * p["users"]) * 36 / month_hours)) if p["plan"] else True


def test_export_csv_and_parquet(gateway: GatewayProcess, traffic: Traffic, tmp_path: Path) -> None:
    response = _get(gateway, traffic.key, "/api/export", {"format": "csv"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = {r["user_id"]: r for r in csv.DictReader(io.StringIO(response.text))}
    assert {u: r["cost_usd"] for u, r in rows.items()} == {u: s9(v["cost"]) for u, v in traffic.users.items()}
    assert rows["carol"]["requests"] == "2"
    parquet = _get(gateway, traffic.key, "/api/export", {"format": "parquet"})
    path = tmp_path / "x.parquet"
    path.write_bytes(parquet.content)
    table = pq.read_table(path)
    assert str(table.schema.field("cost_usd").type) == "decimal128(38, 9)"
    got = {r["user_id"]: r["cost_usd"] for r in table.to_pylist()}
    assert got == {u: v["cost"] for u, v in traffic.users.items()}  # Decimals, equal exactly


@pytest.mark.parametrize(("path", "params", "param"), [
    ("/api/users", {"sort": "bogus"}, "sort"),
    ("/api/users", {"order": "up"}, "order"),
    ("/api/users", {"limit": "0"}, "limit"),
    ("/api/users", {"limit": "x"}, "limit"),
    ("/api/users", {"from": "yesterday"}, "from"),
    ("/api/users", {"from": "2025-02-01", "to": "2025-01-01"}, "to"),
    ("/api/users", {"cursor": "not-a-cursor"}, "cursor"),
    ("/api/users", {"property.": "x"}, "property."),
    ("/api/users/bob", {"interval": "week"}, "interval"),
    ("/api/breakdown", {"by": "plan"}, "by"),
    ("/api/breakdown", {}, "by"),
    ("/api/export", {"format": "xml"}, "format"),
    ("/api/profitability", {"sort": "plan"}, "sort"),
], ids=lambda v: str(v))
def test_bad_parameters_are_400_naming_them(gateway: GatewayProcess, traffic: Traffic, path: str,
                                            params: dict[str, str], param: str) -> None:
    response = _get(gateway, traffic.key, path, params)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param and response.json()["error"]["status"] == 400


def test_cursor_of_another_sort_is_refused(gateway: GatewayProcess, traffic: Traffic) -> None:
    cursor = _get(gateway, traffic.key, "/api/users", {"limit": 1}).json()["next_cursor"]
    response = _get(gateway, traffic.key, "/api/users", {"limit": 1, "sort": "requests", "cursor": cursor})
    assert response.status_code == 400 and response.json()["error"]["param"] == "cursor"


def test_openapi_lists_the_analytics_routes(gateway: GatewayProcess) -> None:
    paths = httpx.get(gateway.url + "/openapi.json").json()["paths"]
    for route in ("/api/users", "/api/users/{user_id}", "/api/users/{user_id}/requests", "/api/breakdown",
                  "/api/plans", "/api/profitability", "/api/export", "/api/import"):
        assert route in paths
    assert httpx.get(gateway.url + "/docs").status_code == 200


def test_delete_user_erases_records_and_rollups(gateway: GatewayProcess, traffic: Traffic) -> None:
    key = traffic.key
    _openai(gateway, key, "to-delete", "pro").chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "forget me"}])
    gateway.wait_for_requests(key, 1, user_id="to-delete")
    response = httpx.delete(gateway.url + "/api/users/to-delete", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200 and response.json() == {"user_id": "to-delete", "deleted_requests": 1}
    assert _get(gateway, key, "/api/users/to-delete").status_code == 404
    assert "to-delete" not in {u["user_id"] for u in _get(gateway, key, "/api/users").json()["users"]}
    assert _get(gateway, key, "/api/requests", {"user_id": "to-delete"}).json()["requests"] == []
    assert httpx.delete(gateway.url + "/api/users/to-delete", headers={"Authorization": f"Bearer {key}"}).status_code == 404


def test_import_rejects_bad_records_naming_the_field(gateway: GatewayProcess, traffic: Traffic) -> None:
    headers = {"Authorization": f"Bearer {traffic.key}"}
    bad = httpx.post(gateway.url + "/api/import", headers=headers,
                     json={"records": [record("x", datetime.now(timezone.utc)), {"model": "m", "created_at": "soon"}]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "records[1].created_at"


# -- the CLI ----------------------------------------------------------------------------------------


def _cli(*args: str, env_key: str | None = None) -> Any:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("USAGEGATE_")}
    if env_key:
        env["USAGEGATE_KEY"] = env_key
    env["COLUMNS"] = "250"
    return subprocess.run([sys.executable, "-m", "usagegate", *args], capture_output=True, text=True, env=env, timeout=60)


def test_cli_users_user_and_export(gateway: GatewayProcess, traffic: Traffic, tmp_path: Path) -> None:
    out = _cli("users", "--url", gateway.url, "--sort", "requests", "--property", "plan=pro", env_key=traffic.key)
    assert out.returncode == 0, out.stderr
    assert "alice@example.com" in out.stdout and str(traffic.users["alice@example.com"]["cost"]) in out.stdout
    assert out.stdout.index("alice@example.com") < out.stdout.index("we/ird")  # 4 requests before 1
    assert "carol" not in out.stdout and "(2 users)" in out.stdout
    one = _cli("user", "bob", "--url", gateway.url, "--key", traffic.key)
    assert one.returncode == 0 and s9(traffic.users["bob"]["cost"]) in one.stdout
    recent = _get(gateway, traffic.key, "/api/users/bob").json()["recent_requests"]
    assert "Recent requests" in one.stdout and len(recent) == traffic.users["bob"]["requests"]
    assert all(r["request_id"] in one.stdout for r in recent)
    target = tmp_path / "bill.csv"
    exported = _cli("export", "--url", gateway.url, "--key", traffic.key, "--format", "csv", "-o", str(target))
    assert exported.returncode == 0 and "carol" in target.read_text()
    missing = _cli("user", "nobody", "--url", gateway.url, "--key", traffic.key)
    assert missing.returncode == 1 and "No user" in missing.stderr and "Traceback" not in missing.stderr
    down = _cli("users", "--url", "http://127.0.0.1:9", "--key", traffic.key)
    assert down.returncode == 1 and "Cannot reach" in down.stderr and "Traceback" not in down.stderr
