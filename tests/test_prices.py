"""Per-org price overrides: /api/prices, re-pricing of unknown-cost rows, the `prices` CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import anthropic
import httpx
import openai

from tests.servers import GatewayProcess, create_key

M = Decimal(1_000_000)
NANO = Decimal("0.000000001")
PROVIDER_KEY = "sk-provider-secret-123"


def _put(gateway: GatewayProcess, key: str, model: str, body: Any) -> httpx.Response:
    return httpx.put(f"{gateway.url}/api/prices/{model}", json=body, headers={"Authorization": f"Bearer {key}"},
                     timeout=30)


def _delete(gateway: GatewayProcess, key: str, model: str) -> httpx.Response:
    return httpx.delete(f"{gateway.url}/api/prices/{model}", headers={"Authorization": f"Bearer {key}"}, timeout=30)




def _chat(gateway: GatewayProcess, key: str, model: str, text: str, **headers: str) -> tuple[str, Any]:
    rid = str(uuid.uuid4())
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=PROVIDER_KEY, max_retries=0,
                           default_headers={"Helicone-Auth": f"Bearer {key}", "Helicone-Request-Id": rid, **headers})
    return rid, client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}])


def _bill(rates: dict[str, str], prompt: int, completion: int, read: int = 0, write: int = 0) -> str:
    """Hand-computed: uncached input + cache reads + cache writes + output, half-even to 9 places."""
    i, o = Decimal(rates["input_mtok"]), Decimal(rates["output_mtok"])
    r = Decimal(rates.get("cache_read_mtok") or rates["input_mtok"])
    w = Decimal(rates.get("cache_write_mtok") or rates["input_mtok"])
    cost = ((prompt - read - write) * i + read * r + write * w + completion * o) / M
    return format(cost.quantize(NANO, ROUND_HALF_EVEN), "f")


def test_override_reprices_unknown_cost_rows(gateway: GatewayProcess, key: str) -> None:
    model = f"acme/custom-llm-{uuid.uuid4().hex[:6]}"  # a `/` in the name, as self-hosted models have
    old = [_chat(gateway, key, model, f"question number {n} about custom models", **{"X-Mock-Cached-Tokens": "3"})
           for n in range(3)]
    rows = [gateway.wait_for_record(key, rid) for rid, _ in old]
    assert all(r["cost_usd"] is None for r in rows)  # unknown price: NULL, never a silent 0
    # 10 decimal places of exact cost, so half-even rounding to 9 places is exercised.
    rates = {"input_mtok": "1.2345", "output_mtok": "2.5", "cache_read_mtok": "0.12345"}
    response = _put(gateway, key, model, rates)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["repriced_requests"] == 3
    assert (body["model"], body["input_mtok"], body["output_mtok"], body["cache_read_mtok"], body["cache_write_mtok"]) \
        == (model, "1.234500000", "2.500000000", "0.123450000", None)
    for rid, completion in old:
        row = gateway.api(key, f"/api/requests/{rid}").json()  # visible at once, no waiting
        u = completion.usage
        assert row["cache_read_tokens"] == 3
        assert row["cost_usd"] == _bill(rates, u.prompt_tokens, u.completion_tokens, read=3)
    # New requests are priced with the override on arrival, to the same nanodollar.
    rid, completion = _chat(gateway, key, model, "question number 0 about custom models",
                            **{"X-Mock-Cached-Tokens": "3"})
    assert gateway.wait_for_record(key, rid)["cost_usd"] == gateway.api(key, f"/api/requests/{old[0][0]}").json()["cost_usd"]
    # Nothing left to reprice.
    assert _put(gateway, key, model, rates).json()["repriced_requests"] == 0


def test_half_even_rounding_in_sql_and_on_arrival(gateway: GatewayProcess, key: str) -> None:
    model = f"tiny-{uuid.uuid4().hex[:6]}"
    # At these rates a request costs (5 x prompt + 15 x completion) x 1e-10 USD: a tie at the
    # 10th place whenever prompt + 3 x completion is odd, which half-even must round to even.
    rates = {"input_mtok": "0.0005", "output_mtok": "0.0015"}
    sent = [_chat(gateway, key, model, "round me" + " please" * n) for n in range(6)]
    ties = [c for _, c in sent if (c.usage.prompt_tokens + 3 * c.usage.completion_tokens) % 2 == 1]
    assert ties, "no request landed on a rounding tie; change the prompts"
    for rid, _ in sent:
        assert gateway.wait_for_record(key, rid)["cost_usd"] is None
    assert _put(gateway, key, model, rates).json()["repriced_requests"] == len(sent)
    for n, (rid, c) in enumerate(sent):
        exact = (c.usage.prompt_tokens * Decimal("0.0005") + c.usage.completion_tokens * Decimal("0.0015")) / M
        repriced = gateway.api(key, f"/api/requests/{rid}").json()["cost_usd"]
        assert repriced == format(exact.quantize(NANO, ROUND_HALF_EVEN), "f")
        assert repriced == _bill(rates, c.usage.prompt_tokens, c.usage.completion_tokens)
        # The same request priced on arrival (in Python) gives the same nanodollars.
        rid2, _ = _chat(gateway, key, model, "round me" + " please" * n)
        assert gateway.wait_for_record(key, rid2)["cost_usd"] == repriced


def test_anthropic_cache_writes_repriced_at_the_write_rate(gateway: GatewayProcess, key: str) -> None:
    model = f"claude-private-{uuid.uuid4().hex[:6]}"
    rid = str(uuid.uuid4())
    client = anthropic.Anthropic(base_url=gateway.url + "/anthropic", api_key=PROVIDER_KEY, max_retries=0,
                                 default_headers={"Helicone-Auth": f"Bearer {key}", "Helicone-Request-Id": rid,
                                                  "X-Mock-Cached-Tokens": "5", "X-Mock-Cache-Creation-Tokens": "4"})
    message = client.messages.create(model=model, max_tokens=50, messages=[{"role": "user", "content": "cache me " * 20}])
    row = gateway.wait_for_record(key, rid)
    assert row["cost_usd"] is None and (row["cache_read_tokens"], row["cache_write_tokens"]) == (5, 4)
    rates = {"input_mtok": "3", "output_mtok": "15", "cache_read_mtok": "0.3", "cache_write_mtok": "3.75"}
    assert _put(gateway, key, model, rates).json()["repriced_requests"] == 1
    u = message.usage
    expected = _bill(rates, u.input_tokens + 9, u.output_tokens, read=5, write=4)
    assert gateway.api(key, f"/api/requests/{rid}").json()["cost_usd"] == expected


def test_override_does_not_touch_rows_with_a_cost(gateway: GatewayProcess, key: str) -> None:
    rid, _ = _chat(gateway, key, "gpt-4o-mini", "priced already")
    before = gateway.wait_for_record(key, rid)["cost_usd"]
    assert before is not None and Decimal(before) > 0
    rates = {"input_mtok": "100", "output_mtok": "100"}
    assert _put(gateway, key, "gpt-4o-mini", rates).json()["repriced_requests"] == 0
    assert gateway.api(key, f"/api/requests/{rid}").json()["cost_usd"] == before
    # ... but new requests of that model use the org's price.
    rid2, completion = _chat(gateway, key, "gpt-4o-mini", "priced already")
    assert gateway.wait_for_record(key, rid2)["cost_usd"] == _bill(rates, completion.usage.prompt_tokens,
                                                           completion.usage.completion_tokens)
    assert _delete(gateway, key, "gpt-4o-mini").status_code == 200
    rid3, _ = _chat(gateway, key, "gpt-4o-mini", "priced already")
    assert gateway.wait_for_record(key, rid3)["cost_usd"] == before  # the published price again


def test_get_list_delete_and_org_isolation(gateway: GatewayProcess, key: str) -> None:
    model = f"vendor/family/model-{uuid.uuid4().hex[:6]}"
    other = create_key(gateway.data_dir, org="prices-other-org")
    rid_other, _ = _chat(gateway, other, model, "someone else's request")
    assert gateway.wait_for_record(other, rid_other)["cost_usd"] is None
    assert gateway.api(key, f"/api/prices/{model}").status_code == 404
    assert _put(gateway, key, model, {"input_mtok": "1", "output_mtok": "2"}).json()["repriced_requests"] == 0
    got = gateway.api(key, f"/api/prices/{model}").json()
    assert (got["model"], got["input_mtok"], got["output_mtok"]) == (model, "1.000000000", "2.000000000")
    assert got["updated_at"].endswith("Z")
    assert model in [p["model"] for p in gateway.api(key, "/api/prices").json()["prices"]]
    # The other org sees none of it, and its unpriced row stays unpriced.
    assert gateway.api(other, f"/api/prices/{model}").status_code == 404
    assert gateway.api(other, "/api/prices").json()["prices"] == []
    assert gateway.api(other, f"/api/requests/{rid_other}").json()["cost_usd"] is None
    assert _delete(gateway, other, model).status_code == 404
    assert _delete(gateway, key, model).json() == {"deleted": True, "model": model}
    assert gateway.api(key, f"/api/prices/{model}").status_code == 404
    assert _delete(gateway, key, model).status_code == 404


def test_bad_bodies_are_400_naming_the_field(gateway: GatewayProcess, key: str) -> None:
    cases = [
        ({"input_mtok": "abc", "output_mtok": "2"}, "input_mtok"),
        ({"input_mtok": 1.5, "output_mtok": "2"}, "input_mtok"),  # a float: money is never a float
        ({"input_mtok": "1"}, "output_mtok"),
        ({"input_mtok": "1", "output_mtok": "-2"}, "output_mtok"),
        ({"input_mtok": "1", "output_mtok": "2", "cache_read_mtok": "NaN"}, "cache_read_mtok"),
        ({"input_mtok": "1", "output_mtok": "2", "cache_write_mtok": "0.0000000001"}, "cache_write_mtok"),
        ({"input_mtok": "1", "output_mtok": "2", "inputs_mtok": "1"}, "inputs_mtok"),
        (["1", "2"], "body"),
    ]
    for body, param in cases:
        response = _put(gateway, key, "some-model", body)
        assert response.status_code == 400, (body, response.text)
        error = response.json()["error"]
        assert error["param"] == param and error["status"] == 400, (body, error)
        assert param in error["message"] or param == "body"
    assert httpx.put(f"{gateway.url}/api/prices/some-model", content=b"{not json",
                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"}).status_code == 400
    assert httpx.put(f"{gateway.url}/api/prices/x", json={"input_mtok": "1", "output_mtok": "1"}).status_code == 401
    assert gateway.api(key, "/api/prices/some-model").status_code == 404  # nothing was stored


def _cli(*args: str, url: str, key: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("USAGEGATE_")}
    env["USAGEGATE_URL"] = url
    if key is not None:
        env["USAGEGATE_KEY"] = key
    return subprocess.run([sys.executable, "-m", "usagegate", "prices", *args], capture_output=True, text=True,
                          env=env, timeout=60)


def test_prices_cli(gateway: GatewayProcess, key: str) -> None:
    model = f"cli/model-{uuid.uuid4().hex[:6]}"
    rid, completion = _chat(gateway, key, model, "priced from the command line")
    assert gateway.wait_for_record(key, rid)["cost_usd"] is None
    done = _cli("set", model, "--input", "0.8", "--output", "3.2", "--cache-read", "0.08", url=gateway.url, key=key)
    assert done.returncode == 0, done.stderr
    assert "re-priced 1 request" in done.stdout
    u = completion.usage
    assert gateway.api(key, f"/api/requests/{rid}").json()["cost_usd"] == _bill(
        {"input_mtok": "0.8", "output_mtok": "3.2"}, u.prompt_tokens, u.completion_tokens)
    listed = _cli("list", url=gateway.url, key=key)
    assert listed.returncode == 0
    lines = [line.split("\t") for line in listed.stdout.splitlines()]
    assert lines[0][:5] == ["model", "input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok"]
    assert [model, "0.800000000", "3.200000000", "0.080000000", ""] in [line[:5] for line in lines[1:]]
    bad = _cli("set", model, "--input", "cheap", "--output", "1", url=gateway.url, key=key)
    assert bad.returncode == 1 and "input_mtok" in bad.stderr and "Traceback" not in bad.stderr
    assert _cli("delete", model, url=gateway.url, key=key).returncode == 0
    again = _cli("delete", model, url=gateway.url, key=key)
    assert again.returncode == 1 and "No price override" in again.stderr and "Traceback" not in again.stderr
    nokey = _cli("list", url=gateway.url, key=None)
    assert nokey.returncode == 1 and "USAGEGATE_KEY" in nokey.stderr
    down = _cli("list", url="http://127.0.0.1:9", key=key)
    assert down.returncode == 1 and "Cannot reach the gateway" in down.stderr and "Traceback" not in down.stderr
