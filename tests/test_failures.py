"""Every failure answered in the provider's shape, quickly, recorded with its status (DESIGN §1)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.servers import GatewayProcess, MockUpstream, create_key, free_port
from tests.store_probe import files_holding, secret_traces

PROVIDER_KEY = "sk-failures-provider-secret"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "tell me a long story about failure"}]}


@pytest.fixture(scope="module")
def dead_port() -> int:
    return free_port()  # nothing listens here: connection refused


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, mock_upstream: MockUpstream, dead_port: int) -> Iterator[GatewayProcess]:
    data_dir = tmp_path_factory.mktemp("failures") / "data"
    # OpenAI routes go to the mock; Anthropic routes to a port nobody listens on.
    gateway = GatewayProcess(data_dir, mock_upstream.url, "--anthropic-base-url", f"http://127.0.0.1:{dead_port}",
                             "--upstream-timeout", "1", "--max-body-mb", "1")
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def key(gw: GatewayProcess) -> str:
    return create_key(gw.data_dir)


def headers(key: str, rid: str, **extra: str) -> dict[str, str]:
    return {"Helicone-Auth": f"Bearer {key}", "Helicone-Request-Id": rid, "Helicone-User-Id": "faulty",
            "Authorization": f"Bearer {PROVIDER_KEY}", **extra}


def record(gw: GatewayProcess, key: str, rid: str) -> dict[str, Any]:
    return gw.wait_for_record(key, rid)


def cost_of(row: dict[str, Any]) -> str:
    """gpt-4o-mini's published price (USD 0.15 / 0.60 per 1M input / output tokens) x the row's tokens."""
    usd = (row["prompt_tokens"] * Decimal("0.15") + row["completion_tokens"] * Decimal("0.6")) / 1_000_000
    return f"{usd.quantize(Decimal('1e-9'))}"


def assert_openai_error_shape(body: dict[str, Any]) -> None:
    assert set(body["error"]) >= {"message", "type", "param", "code"} and body["error"]["message"]


def test_upstream_down_is_502_in_the_providers_shape(gw: GatewayProcess, key: str) -> None:
    rid = str(uuid.uuid4())
    client = anthropic.Anthropic(base_url=gw.url + "/anthropic", api_key=PROVIDER_KEY, max_retries=0,
                                 default_headers=headers(key, rid))
    started = time.monotonic()
    with pytest.raises(anthropic.APIStatusError) as info:
        client.messages.create(model="claude-3-5-haiku-20241022", max_tokens=10,
                               messages=[{"role": "user", "content": "anyone there?"}])
    assert time.monotonic() - started < 5
    assert info.value.status_code == 502
    assert info.value.body["type"] == "error" and "unreachable" in info.value.body["error"]["message"]
    row = record(gw, key, rid)
    assert row["status"] == 502 and row["provider"] == "anthropic" and "unreachable" in row["error"]
    assert row["user_id"] == "faulty"


def test_upstream_slower_than_the_timeout_is_504_quickly(gw: GatewayProcess, key: str) -> None:
    rid = str(uuid.uuid4())
    started = time.monotonic()
    response = httpx.post(gw.url + "/v1/chat/completions", json=CHAT, timeout=30,
                          headers=headers(key, rid, **{"X-Mock-Delay-Ms": "8000"}))
    elapsed = time.monotonic() - started
    assert response.status_code == 504
    assert_openai_error_shape(response.json())
    assert response.headers["helicone-id"] == rid
    assert 0.9 < elapsed < 5, elapsed  # --upstream-timeout 1, not the mock's 8 s
    row = record(gw, key, rid)
    assert row["status"] == 504 and "--upstream-timeout" in row["error"]


@pytest.mark.parametrize("status", [429, 500, 503], ids=["429", "500", "503"])
def test_upstream_errors_pass_through_unchanged(gw: GatewayProcess, key: str, mock_upstream: MockUpstream,
                                                status: int) -> None:
    rid = str(uuid.uuid4())
    direct = httpx.post(mock_upstream.url + "/v1/chat/completions", json=CHAT, headers={"X-Mock-Status": str(status)})
    response = httpx.post(gw.url + "/v1/chat/completions", json=CHAT,
                          headers=headers(key, rid, **{"X-Mock-Status": str(status)}))
    assert response.status_code == status
    assert response.content == direct.content  # the provider's body, byte for byte
    if status == 429:
        assert response.headers["retry-after"] == direct.headers["retry-after"]
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=PROVIDER_KEY, max_retries=0,
                           default_headers=headers(key, str(uuid.uuid4()), **{"X-Mock-Status": str(status)}))
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(**CHAT)  # type: ignore[call-overload]
    assert info.value.status_code == status
    row = record(gw, key, rid)
    assert row["status"] == status and row["cost_usd"] == "0.000000000"
    assert f"Mock error {status}" in row["error"]


def test_stream_cut_after_3_chunks_ends_cleanly_and_is_recorded_as_502(gw: GatewayProcess, key: str) -> None:
    rid = str(uuid.uuid4())
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=PROVIDER_KEY, max_retries=0,
                           default_headers=headers(key, rid, **{"X-Mock-Break-After": "3"}))
    started = time.monotonic()
    chunks = list(client.chat.completions.create(**CHAT, stream=True))  # type: ignore[call-overload]
    assert time.monotonic() - started < 5
    # The client's stream ended without an exception; it saw what the upstream sent before the cut.
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert 1 <= len(chunks) <= 3 and text
    row = record(gw, key, rid)
    assert row["status"] == 502 and row["stream"] is True
    assert "broke off" in row["error"]
    assert row["completion_tokens"] >= 1 and row["prompt_tokens"] >= 1  # the tokens seen, estimated
    assert row["usage_source"] == "estimated"
    # Billed, not 0: the provider generated those tokens (exact counts: test_broken_answers.py).
    assert row["cost_usd"] == cost_of(row)


def test_stream_stalling_past_the_timeout_is_recorded_as_504(gw: GatewayProcess, key: str) -> None:
    rid = str(uuid.uuid4())
    started = time.monotonic()
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json={**CHAT, "stream": True}, timeout=30,
                      headers=headers(key, rid, **{"X-Mock-Chunk-Delay-Ms": "3000"})) as response:
        body = response.read()
    assert response.status_code == 200 and time.monotonic() - started < 6
    assert b"data:" in body
    row = record(gw, key, rid)
    assert row["status"] == 504 and row["stream"] is True
    # The first event came before the stall; what was streamed is billed.
    assert row["prompt_tokens"] >= 1 and row["cost_usd"] == cost_of(row) != "0.000000000"


def test_body_over_max_body_mb_is_413_and_recorded(gw: GatewayProcess, key: str) -> None:
    rid = str(uuid.uuid4())
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * (1024 * 1024 + 10)}]}
    response = httpx.post(gw.url + "/v1/chat/completions", json=big, headers=headers(key, rid), timeout=30)
    assert response.status_code == 413
    assert_openai_error_shape(response.json())
    assert "--max-body-mb" in response.json()["error"]["message"]
    row = record(gw, key, rid)
    assert row["status"] == 413 and row["user_id"] == "faulty"


def test_bad_header_is_400_and_recorded_under_the_org(gw: GatewayProcess, key: str) -> None:
    rid = str(uuid.uuid4())
    response = httpx.post(gw.url + "/v1/chat/completions", json=CHAT,
                          headers={**headers(key, rid), "Helicone-Property-Plan": "p" * 2000})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "helicone-property-plan"
    # The bad header stopped parsing, so the request id is a fresh one, named in Helicone-Id.
    row = record(gw, key, response.headers["helicone-id"])
    assert row["status"] == 400 and "limit is 1024" in row["error"]


def test_gateway_stays_healthy_after_every_failure(gw: GatewayProcess, key: str) -> None:
    health = httpx.get(gw.url + "/health")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    ok = httpx.post(gw.url + "/v1/chat/completions", json=CHAT, headers=headers(key, str(uuid.uuid4())))
    assert ok.status_code == 200 and ok.json()["usage"]["total_tokens"] > 0


def test_provider_key_is_nowhere_in_the_data_dir_after_the_failures(gw: GatewayProcess, key: str) -> None:
    # Error paths build messages from exceptions; none of them may quote the provider key.
    gw.stop()
    assert secret_traces(gw.data_dir, PROVIDER_KEY) == {"files": [], "rows": {}}
    assert not files_holding(gw.data_dir.parent, PROVIDER_KEY)
    assert secret_traces(gw.data_dir, "faulty")["rows"]["requests"] >= 5  # control: stored data is found
