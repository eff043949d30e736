"""The record path end to end: official SDKs → gateway → mock upstream; every request logged
under its user with exact cost (DESIGN §1, §2, §4)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from tests.sdk import openai_client
from tests.servers import GatewayProcess, MockUpstream, create_key

# Published prices, USD per 1M tokens (input, output, cached input).
GPT_4O_MINI = (Decimal("0.15"), Decimal("0.6"), Decimal("0.075"))
GPT_41_MINI = (Decimal("0.4"), Decimal("1.6"), Decimal("0.1"))
EMBED_3_SMALL = Decimal("0.02")
HAIKU_35 = (Decimal("0.8"), Decimal("4"))
M = Decimal(1_000_000)
PROVIDER_KEY = "sk-provider-secret-123"


def test_openai_chat_recorded_under_header_user_with_exact_cost(gateway: GatewayProcess, key: str) -> None:
    rid = str(uuid.uuid4())
    client = openai_client(gateway, key, PROVIDER_KEY, **{
        "Helicone-User-Id": "alice@example.com", "Helicone-Property-Plan": "pro",
        "helicone-property-FEATURE": "chat", "Helicone-Request-Id": rid})
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hello to the record path"}], user="body-user"
    )
    completion = raw.parse()
    assert raw.headers["helicone-id"] == rid
    assert completion.choices[0].message.content
    row = gateway.wait_for_record(key, rid)
    assert row["user_id"] == "alice@example.com"  # the header wins over body `user`
    assert row["properties"] == {"plan": "pro", "feature": "chat"}
    assert row["status"] == 200 and row["provider"] == "openai" and row["path"] == "/v1/chat/completions"
    assert row["prompt_tokens"] == completion.usage.prompt_tokens
    assert row["completion_tokens"] == completion.usage.completion_tokens
    assert row["model"] == "gpt-4o-mini" and row["usage_source"] == "provider"
    expected = (Decimal(row["prompt_tokens"]) * GPT_4O_MINI[0] + Decimal(row["completion_tokens"]) * GPT_4O_MINI[1]) / M
    assert Decimal(row["cost_usd"]) == expected.quantize(Decimal("1e-9"))
    assert len(row["cost_usd"].split(".")[1]) == 9
    assert row["created_at"].endswith("Z") and "." in row["created_at"]
    assert "Say hello to the record path" in row["request_body"]


def test_body_user_is_the_fallback(gateway: GatewayProcess, key: str) -> None:
    raw = openai_client(gateway, key, PROVIDER_KEY).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "fallback"}], user="bob"
    )
    assert gateway.wait_for_record(key, raw.headers["helicone-id"])["user_id"] == "bob"


def test_no_user_is_anonymous(gateway: GatewayProcess, key: str) -> None:
    raw = openai_client(gateway, key, PROVIDER_KEY).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "who am I"}]
    )
    assert gateway.wait_for_record(key, raw.headers["helicone-id"])["user_id"] == ""


def test_embeddings_recorded_with_cost(gateway: GatewayProcess, key: str) -> None:
    raw = openai_client(gateway, key, PROVIDER_KEY, **{"Helicone-User-Id": "carol"}).embeddings.with_raw_response.create(
        model="text-embedding-3-small", input="embed me please"
    )
    result = raw.parse()
    assert len(result.data[0].embedding) > 0
    row = gateway.wait_for_record(key, raw.headers["helicone-id"])
    assert row["user_id"] == "carol" and row["path"] == "/v1/embeddings"
    assert row["prompt_tokens"] == result.usage.prompt_tokens > 0
    assert Decimal(row["cost_usd"]) == (Decimal(row["prompt_tokens"]) * EMBED_3_SMALL / M).quantize(Decimal("1e-9"))


def test_responses_api_recorded_with_cost(gateway: GatewayProcess, key: str) -> None:
    raw = openai_client(gateway, key, PROVIDER_KEY, **{"Helicone-User-Id": "dave"}).responses.with_raw_response.create(
        model="gpt-4.1-mini", input="Write one line"
    )
    result = raw.parse()
    assert result.output_text
    row = gateway.wait_for_record(key, raw.headers["helicone-id"])
    assert (row["prompt_tokens"], row["completion_tokens"]) == (result.usage.input_tokens, result.usage.output_tokens)
    expected = (Decimal(row["prompt_tokens"]) * GPT_41_MINI[0] + Decimal(row["completion_tokens"]) * GPT_41_MINI[1]) / M
    assert Decimal(row["cost_usd"]) == expected.quantize(Decimal("1e-9"))


def test_anthropic_messages_use_metadata_user(gateway: GatewayProcess, key: str) -> None:
    client = anthropic.Anthropic(
        base_url=gateway.url + "/anthropic", api_key=PROVIDER_KEY,
        default_headers={"Helicone-Auth": f"Bearer {key}", "Helicone-Property-Plan": "free"},
    )
    raw = client.messages.with_raw_response.create(
        model="claude-3-5-haiku-20241022", max_tokens=50, messages=[{"role": "user", "content": "hi claude"}],
        metadata={"user_id": "erin"},
    )
    message = raw.parse()
    row = gateway.wait_for_record(key, raw.headers["helicone-id"])
    assert row["user_id"] == "erin" and row["provider"] == "anthropic" and row["path"] == "/v1/messages"
    assert row["prompt_tokens"] == message.usage.input_tokens
    assert row["completion_tokens"] == message.usage.output_tokens
    expected = (Decimal(row["prompt_tokens"]) * HAIKU_35[0] + Decimal(row["completion_tokens"]) * HAIKU_35[1]) / M
    assert Decimal(row["cost_usd"]) == expected.quantize(Decimal("1e-9"))


def test_missing_or_wrong_key_is_401_and_nothing_forwarded(gateway: GatewayProcess, mock_upstream: MockUpstream) -> None:
    mock_upstream.clear()
    for headers in ({}, {"Helicone-Auth": "Bearer ug_not-a-key"}):
        client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=PROVIDER_KEY, default_headers=headers, max_retries=0)
        with pytest.raises(openai.AuthenticationError) as info:
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
        assert "usagegate key" in str(info.value)
    bad = httpx.post(gateway.url + "/anthropic/v1/messages", json={"model": "m"})
    assert bad.status_code == 401 and bad.json()["type"] == "error"
    assert mock_upstream.received() == []


@pytest.mark.parametrize(
    "headers, param",
    [
        ({"Helicone-User-Id": "u" * 257}, "Helicone-User-Id"),
        ({"Helicone-Request-Id": "not-a-uuid"}, "Helicone-Request-Id"),
        ({"Helicone-Property-Plan": "p" * 1025}, "helicone-property-plan"),
    ],
    ids=["long-user-id", "non-uuid-request-id", "long-property"],
)
def test_bad_usagegate_headers_are_400(gateway: GatewayProcess, key: str, headers: dict, param: str) -> None:
    response = httpx.post(
        gateway.url + "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": []},
        headers={"Helicone-Auth": f"Bearer {key}", **headers},
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_usagegate_key_never_reaches_upstream(gateway: GatewayProcess, key: str, mock_upstream: MockUpstream) -> None:
    mock_upstream.clear()
    openai_client(gateway, key, PROVIDER_KEY, **{"Helicone-User-Id": "frank", "Helicone-Session-Id": "s1"}).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "secret check"}]
    )
    (seen,) = [r for r in mock_upstream.received() if r["path"] == "/v1/chat/completions"]
    assert seen["headers"]["authorization"] == f"Bearer {PROVIDER_KEY}"
    assert not any(name.startswith("helicone-") for name in seen["headers"])
    assert key not in str(seen)


def test_key_created_while_running_works_at_once(gateway: GatewayProcess) -> None:
    new_key = create_key(gateway.data_dir, org="newcorp")
    raw = openai_client(gateway, new_key, PROVIDER_KEY).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "fresh key"}]
    )
    assert raw.http_response.status_code == 200
    assert gateway.wait_for_record(new_key, raw.headers["helicone-id"])["org_id"].startswith("org_")


def test_orgs_see_only_their_own_requests(gateway: GatewayProcess, key: str) -> None:
    other = create_key(gateway.data_dir, org="othercorp")
    raw = openai_client(gateway, key, PROVIDER_KEY).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "private"}]
    )
    rid = raw.headers["helicone-id"]
    gateway.wait_for_record(key, rid)
    assert gateway.api(other, f"/api/requests/{rid}").status_code == 404
    assert all(r["request_id"] != rid for r in gateway.api(other, "/api/requests").json()["requests"])


def test_api_requires_a_key(gateway: GatewayProcess) -> None:
    response = httpx.get(gateway.url + "/api/requests")
    assert response.status_code == 401
    assert set(response.json()["error"]) == {"status", "message", "param"}


def test_an_upstream_cookie_reaches_its_client_only(tmp_path: Path, mock_upstream: MockUpstream) -> None:
    # One upstream session serves every client: a cookie set for one (as a CDN in front of a
    # provider does) must not ride along on the next client's request. The upstream is named by
    # host name here, since cookie jars ignore cookies from bare IP addresses.
    named = mock_upstream.url.replace("127.0.0.1", "localhost")
    gateway = GatewayProcess(tmp_path / "data", named)
    try:
        key = create_key(gateway.data_dir)
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "cookie"}]}
        first = httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=30,
                           headers={"Helicone-Auth": f"Bearer {key}", "Authorization": "Bearer sk-a", "X-Mock-Set-Cookie": "7"})
        assert first.status_code == 200 and first.headers["set-cookie"].startswith("mock_session=7")
        marker = str(uuid.uuid4())
        second = httpx.post(gateway.url + "/v1/chat/completions", json={**body, "user": marker}, timeout=30,
                            headers={"Helicone-Auth": f"Bearer {key}", "Authorization": "Bearer sk-b"})
        assert second.status_code == 200
        seen = [r for r in mock_upstream.received() if marker in r["body"]]
        assert len(seen) == 1 and "cookie" not in seen[0]["headers"]
    finally:
        gateway.stop()
