"""The dashboard in a real browser: Playwright driving Debian's Chromium against a real gateway.

Traffic goes through the proxy to the mock upstream; the pages are then checked against
/api/users (exact costs), and every request the browser makes is recorded to prove nothing
leaves 127.0.0.1. One browser serves the module; tests share one signed-in page.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlparse

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from tests.servers import GatewayProcess, create_key

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

# user → (plan or None, provider, model, requests). Request counts do not follow cost order, so
# sorting by requests visibly reorders the table.
USERS: dict[str, tuple[str | None, str, str, int]] = {
    "alice@example.com": ("pro", "openai", "gpt-4o", 2),
    "bob": ("free", "openai", "gpt-4o-mini", 5),
    "carol/ops team": ("enterprise", "anthropic", "claude-3-5-haiku-20241022", 3),
    "dave": (None, "openai", "gpt-4.1-mini", 1),
    "erin": ("pro", "openai", "gpt-4o-mini", 4),
}


def _send(gateway: GatewayProcess, key: str, user: str, plan: str | None, provider: str, model: str, n: int) -> None:
    headers = {"Helicone-Auth": f"Bearer {key}", "Helicone-User-Id": user, "Helicone-Property-Feature": "chat"}
    if plan:
        headers["Helicone-Property-Plan"] = plan
    with httpx.Client(timeout=30) as client:
        for i in range(n):
            prompt = f"{user} asks question {i} " + "about costs " * (3 * i + len(user))
            if provider == "anthropic":
                response = client.post(
                    gateway.url + "/anthropic/v1/messages", headers={**headers, "x-api-key": "sk-ant-test"},
                    json={"model": model, "max_tokens": 200, "messages": [{"role": "user", "content": prompt}]},
                )
            else:
                response = client.post(
                    gateway.url + "/v1/chat/completions", headers={**headers, "Authorization": "Bearer sk-test"},
                    json={"model": model, "max_tokens": 200, "messages": [{"role": "user", "content": prompt}]},
                )
            assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def traffic(gateway: GatewayProcess, key: str) -> dict[str, dict[str, Any]]:
    """Send every user's requests (plus another org's), wait for them; /api/users rows by user."""
    for user, (plan, provider, model, n) in USERS.items():
        _send(gateway, key, user, plan, provider, model, n)
    other_key = create_key(gateway.data_dir, "other-org")
    _send(gateway, other_key, "mallory-other-org", "pro", "openai", "gpt-4o", 1)
    total = sum(spec[3] for spec in USERS.values())
    gateway.wait_for_requests(key, total)
    # The raw rows and the rollup rows of one insert become visible a moment apart (one part per
    # table), so /api/users may lag /api/requests briefly: wait for the rollups too.
    deadline = time.monotonic() + 10
    while True:
        response = gateway.api(key, "/api/users", limit=1000)
        response.raise_for_status()
        rows = {row["user_id"]: row for row in response.json()["users"]}
        if (set(rows) == set(USERS) and sum(r["requests"] for r in rows.values()) == total) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert set(rows) == set(USERS)
    return rows


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Recorder:
    """Every request, console error and page error of a browser context."""

    def __init__(self, context: BrowserContext) -> None:
        self.urls: list[str] = []
        self.errors: list[str] = []
        context.on("request", lambda request: self.urls.append(request.url))
        context.on("console", lambda msg: self.errors.append(msg.text) if msg.type == "error" else None)
        context.on("weberror", lambda error: self.errors.append(str(error.error)))

    def foreign(self) -> list[str]:
        out = []
        for url in self.urls:
            parsed = urlparse(url)
            if parsed.scheme in ("data", "blob"):
                continue
            if parsed.scheme not in ("http", "https", "ws", "wss") or parsed.hostname != "127.0.0.1":
                out.append(url)
        return out


def _sign_in(page: Page, gateway: GatewayProcess, key: str) -> None:
    page.goto(gateway.url + "/users")
    assert urlparse(page.url).path == "/login"
    page.fill("input[name=key]", key)
    page.click("button[type=submit]")
    page.wait_for_url("**/users")


@pytest.fixture(scope="module")
def session(browser: Browser, gateway: GatewayProcess, key: str, traffic: dict[str, Any]) -> Iterator[tuple[Page, Recorder]]:
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    recorder = Recorder(context)
    page = context.new_page()
    _sign_in(page, gateway, key)
    yield page, recorder
    context.close()


def _table(page: Page) -> list[tuple[str, str]]:
    """(user id, cost cell's exact amount) of each users-table row, in order."""
    rows = page.locator("#users-table tbody tr[data-user]")
    return [(rows.nth(i).get_attribute("data-user") or "", rows.nth(i).locator("td.cost").get_attribute("title") or "")
            for i in range(rows.count())]


def _amount(text: str) -> Decimal:
    return Decimal(text.replace("$", "").replace(",", ""))


def test_sign_in_sets_a_safe_cookie_and_sign_out_ends_it(browser: Browser, gateway: GatewayProcess, key: str) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(gateway.url + "/users?range=7d")
    assert urlparse(page.url).path == "/login"
    page.fill("input[name=key]", "ug_wrong-key")
    page.click("button[type=submit]")
    assert "not a valid usagegate key" in page.locator(".alert-error").inner_text()
    page.fill("input[name=key]", key)
    page.click("button[type=submit]")
    page.wait_for_url("**/users?range=7d")  # back to the page that asked for sign-in
    cookie = next(c for c in context.cookies() if c["name"] == "usagegate_session")
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] in ("Lax", "Strict")
    assert key not in cookie["value"]
    page.click("text=Sign out")
    page.wait_for_url("**/login")
    page.goto(gateway.url + "/users")
    assert urlparse(page.url).path == "/login"
    # The old cookie is dead server-side too, not just deleted in this browser.
    response = httpx.get(gateway.url + "/users", cookies={"usagegate_session": cookie["value"]})
    assert response.status_code == 303 and response.headers["location"].startswith("/login")
    context.close()


def test_users_tab_lists_each_user_with_the_exact_api_cost(session: tuple[Page, Recorder], gateway: GatewayProcess,
                                                           traffic: dict[str, dict[str, Any]]) -> None:
    page, _ = session
    page.goto(gateway.url + "/users")
    table = _table(page)
    assert [user for user, _ in table] == sorted(traffic, key=lambda u: Decimal(traffic[u]["cost_usd"]), reverse=True)
    for user, exact in table:
        assert exact == traffic[user]["cost_usd"]
        shown = page.locator(f"#users-table tr[data-user='{user}'] td.cost").inner_text()
        assert _amount(shown) == Decimal(traffic[user]["cost_usd"])  # what the eye reads is exact too
        requests = page.locator(f"#users-table tr[data-user='{user}'] td[data-col=requests]").inner_text()
        assert int(requests) == traffic[user]["requests"] == USERS[user][3]
    assert "mallory-other-org" not in page.content()
    total = page.locator("#users-table tfoot td").nth(1).get_attribute("title")
    assert Decimal(total or "") == sum(Decimal(r["cost_usd"]) for r in traffic.values())
    # The CSV link downloads the same exact costs.
    csv = page.request.get(gateway.url + (page.get_attribute("[data-testid=export-csv]", "href") or ""))
    assert csv.status == 200 and csv.headers["content-type"].startswith("text/csv")
    lines = csv.text().splitlines()
    header = lines[0].split(",")
    costs = {cells[0]: cells[header.index("cost_usd")] for cells in (line.split(",") for line in lines[1:])}
    assert costs["bob"] == traffic["bob"]["cost_usd"] and len(costs) == len(USERS)
    # Unknown users and requests are a 404 page, not an error.
    assert page.request.get(gateway.url + "/users/nobody-here").status == 404
    assert page.request.get(gateway.url + "/requests/not-a-uuid").status == 404


def test_clicking_a_header_sorts_the_table(session: tuple[Page, Recorder], gateway: GatewayProcess,
                                           traffic: dict[str, dict[str, Any]]) -> None:
    page, _ = session
    page.goto(gateway.url + "/users")
    by_cost = [u for u, _ in _table(page)]
    page.click("#users-table th[data-col=requests] a")
    page.wait_for_url("**sort=requests**")
    by_requests = [u for u, _ in _table(page)]
    assert by_requests == sorted(USERS, key=lambda u: USERS[u][3], reverse=True)
    assert by_requests != by_cost
    page.click("#users-table th[data-col=requests] a")  # again: ascending
    page.wait_for_url("**order=asc**")
    assert [u for u, _ in _table(page)] == list(reversed(by_requests))


def test_property_and_model_filters_narrow_the_table(session: tuple[Page, Recorder], gateway: GatewayProcess,
                                                     key: str) -> None:
    page, _ = session
    page.goto(gateway.url + "/users")
    page.select_option("select[name=pf]", "plan=pro")
    page.wait_for_url("**property.plan=pro**")
    expected = gateway.api(key, "/api/users", **{"property.plan": "pro"}).json()["users"]
    assert sorted(u for u, _ in _table(page)) == sorted(u["user_id"] for u in expected) == ["alice@example.com", "erin"]
    assert page.locator("[data-filter='property.plan']").count() == 1
    page.select_option("select[name=model]", "gpt-4o-mini")
    page.wait_for_url("**model=gpt-4o-mini**")
    assert [u for u, _ in _table(page)] == ["erin"]
    page.fill("input[name=q]", "zzz-nobody")
    page.press("input[name=q]", "Enter")
    page.wait_for_url("**q=zzz-nobody**")
    assert _table(page) == []


def test_charts_render_from_the_local_plotly(session: tuple[Page, Recorder], gateway: GatewayProcess) -> None:
    page, _ = session
    page.goto(gateway.url + "/users?range=30d")
    page.wait_for_selector(".js-plotly-plot")
    assert page.locator(".js-plotly-plot").count() == 4
    assert page.locator(".js-plotly-plot .main-svg").count() >= 4
    response = httpx.get(gateway.url + "/static/plotly.min.js")
    assert response.status_code == 200 and "max-age" in response.headers["cache-control"]


def test_a_row_opens_its_user_page_with_charts(session: tuple[Page, Recorder], gateway: GatewayProcess,
                                               traffic: dict[str, dict[str, Any]]) -> None:
    page, _ = session
    user = "carol/ops team"
    page.goto(gateway.url + "/users")
    page.locator(f"#users-table tr[data-user='{user}'] td[data-col=requests]").click()
    page.wait_for_url("**/users/" + quote(user, safe=""))
    assert page.locator("#user-id").inner_text().startswith(user)
    page.wait_for_selector(".js-plotly-plot")
    assert page.locator(".js-plotly-plot").count() >= 3
    cost = page.locator(".kpi .value").first.get_attribute("title")
    assert _amount(cost or "") == Decimal(traffic[user]["cost_usd"])
    assert page.locator("#recent-requests tbody tr[data-href]").count() == USERS[user][3]
    page.locator("#recent-requests tbody tr[data-href] a").first.click()
    page.wait_for_url("**/requests/**")
    assert user in page.locator("pre").first.inner_text()  # the stored request body


def test_plan_prices_form_saves_and_a_post_without_csrf_is_refused(session: tuple[Page, Recorder],
                                                                   gateway: GatewayProcess, key: str) -> None:
    page, _ = session
    page.goto(gateway.url + "/profitability")
    page.wait_for_selector(".js-plotly-plot")
    page.fill("input[aria-label='Monthly price of pro']", "20")
    page.fill("input[aria-label='Monthly price of enterprise']", "500")
    page.click("#plan-form button[type=submit]")
    page.wait_for_url("**saved=1**")
    plans = gateway.api(key, "/api/plans").json()
    assert plans["monthly_revenue_usd"] == {"enterprise": "500", "free": "0", "pro": "20"}
    assert page.locator("#least-profitable tbody tr[data-user]").first.get_attribute("data-user") in ("bob", "dave")
    # The browser's own cookies, no CSRF token (or a wrong one): refused, nothing changes.
    for form in ({"property": "plan", "plan": "pro", "price": "1"},
                 {"property": "plan", "plan": "pro", "price": "1", "csrf": "forged"}):
        response = page.request.post(gateway.url + "/profitability/plans", form=form, max_redirects=0)
        assert response.status == 403
    response = page.request.post(gateway.url + "/logout", form={}, max_redirects=0)
    assert response.status == 403
    assert gateway.api(key, "/api/plans").json() == plans


def test_no_console_errors_and_nothing_leaves_loopback(session: tuple[Page, Recorder], gateway: GatewayProcess) -> None:
    page, recorder = session
    page.goto(gateway.url + "/users/dave")
    page.wait_for_selector(".js-plotly-plot")
    assert recorder.urls, "the recorder saw no requests"
    assert any(urlparse(url).path == "/static/plotly.min.js" for url in recorder.urls)
    assert recorder.foreign() == []
    assert recorder.errors == []
