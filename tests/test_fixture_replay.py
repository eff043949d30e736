"""Every recorded provider response (tests/fixtures/providers) replayed through the real gateway.

A test upstream serves each recording (JSON whole with its recorded status, SSE in 97-byte
chunks); the recorded request goes through the gateway; the record must hold the tokens of
the fixture README in every column, the status, the usage source, and the exact cost:
published prices (USD per 1M tokens, from the providers' price pages) × tokens.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest

from tests.fixture_upstream import FixtureUpstream
from tests.servers import GatewayProcess, create_key

M = Decimal(1_000_000)

# Published prices, USD per 1M tokens: (input, cached input / cache read, 5-minute cache write, output).
GPT_41 = (Decimal("2.00"), Decimal("0.50"), None, Decimal("8.00"))
GPT_5 = (Decimal("1.25"), Decimal("0.125"), None, Decimal("10.00"))
GPT_4O_MINI = (Decimal("0.15"), Decimal("0.075"), None, Decimal("0.60"))
GPT_35_TURBO = (Decimal("0.50"), Decimal("0.50"), None, Decimal("1.50"))
ADA_002 = (Decimal("0.10"), Decimal("0.10"), None, Decimal("0"))
CLAUDE_35_SONNET = (Decimal("3"), Decimal("0.30"), Decimal("3.75"), Decimal("15"))
CLAUDE_HAIKU_45 = (Decimal("1"), Decimal("0.10"), Decimal("1.25"), Decimal("5"))


def price(rates: tuple[Decimal, Decimal, Decimal | None, Decimal], prompt: int, completion: int,
          cache_read: int = 0, cache_write: int = 0) -> Decimal:
    """The provider's bill: uncached input + cache reads + cache writes + output (incl. reasoning)."""
    uncached = prompt - cache_read - cache_write
    cost = uncached * rates[0] + cache_read * rates[1] + cache_write * (rates[2] or rates[0]) + completion * rates[3]
    return (cost / M).quantize(Decimal("0.000000001"))


# fixture -> (gateway path, status, model, prompt, completion, cache_read, cache_write, reasoning, source, cost)
# Token numbers are the README's, normalised (DESIGN §2): Anthropic prompt = input + cache read + cache write.
EXPECTED: dict[str, tuple[str, int, str, int, int, int, int, int, str, Decimal | None]] = {
    "openai-chat-json-1": ("/v1/chat/completions", 200, "gpt-4.1-2025-04-14", 1144, 2, 1024, 0, 0, "provider",
                           price(GPT_41, 1144, 2, cache_read=1024)),
    "openai-chat-json-2": ("/v1/chat/completions", 404, "non-existent-model", 0, 0, 0, 0, 0, "provider", Decimal(0)),
    "openai-chat-stream-1": ("/v1/chat/completions", 200, "gpt-4.1-2025-04-14", 1144, 2, 1024, 0, 0, "provider",
                             price(GPT_41, 1144, 2, cache_read=1024)),
    # No usage anywhere: estimated offline (o200k): "Tell me a short joke" is 5 tokens + 3 message
    # framing + 3 reply priming; the 70-character joke is 16 tokens.
    "openai-chat-stream-2": ("/v1/chat/completions", 200, "gpt-3.5-turbo-0125", 11, 16, 0, 0, 0, "estimated",
                             price(GPT_35_TURBO, 11, 16)),
    "openai-chat-stream-3": ("/v1/chat/completions", 200, "gpt-4o-mini-2024-07-18", 54, 20, 0, 0, 0, "provider",
                             price(GPT_4O_MINI, 54, 20)),
    "openai-responses-json-1": ("/v1/responses", 200, "gpt-4.1-2025-04-14", 1144, 3, 1024, 0, 0, "provider",
                                price(GPT_41, 1144, 3, cache_read=1024)),
    "openai-responses-stream-1": ("/v1/responses", 200, "gpt-5-2025-08-07", 3727, 347, 3200, 0, 128, "provider",
                                  price(GPT_5, 3727, 347, cache_read=3200)),
    "openai-embeddings-json-1": ("/v1/embeddings", 200, "text-embedding-ada-002-v2", 12, 0, 0, 0, 0, "provider",
                                 price(ADA_002, 12, 0)),
    "anthropic-messages-json-1": ("/anthropic/v1/messages", 200, "claude-3-5-sonnet-20240620", 4 + 1163, 187, 0, 1163,
                                  0, "provider", price(CLAUDE_35_SONNET, 4 + 1163, 187, cache_write=1163)),
    "anthropic-messages-json-2": ("/anthropic/v1/messages", 404, "invalid-model-name", 0, 0, 0, 0, 0, "provider",
                                  Decimal(0)),
    "anthropic-messages-stream-1": ("/anthropic/v1/messages", 200, "claude-haiku-4-5-20251001", 10, 4, 0, 0, 0,
                                    "provider", price(CLAUDE_HAIKU_45, 10, 4)),
    "anthropic-messages-stream-2": ("/anthropic/v1/messages", 200, "claude-3-5-sonnet-20240620", 4 + 1165, 221, 1165,
                                    0, 0, "provider", price(CLAUDE_35_SONNET, 4 + 1165, 221, cache_read=1165)),
}

# The hand-computed costs, written out, so a wrong `price()` cannot hide a wrong gateway.
WRITTEN_OUT = {
    "openai-chat-json-1": "0.000768000",  # 120×2 + 1024×0.5 + 2×8 = 768 µ$
    "openai-chat-stream-2": "0.000029500",  # 11×0.5 + 16×1.5
    "openai-chat-stream-3": "0.000020100",  # 54×0.15 + 20×0.6
    "openai-responses-json-1": "0.000776000",
    "openai-responses-stream-1": "0.004528750",  # 527×1.25 + 3200×0.125 + 347×10
    "openai-embeddings-json-1": "0.000001200",
    "anthropic-messages-json-1": "0.007178250",  # 4×3 + 1163×3.75 + 187×15
    "anthropic-messages-stream-1": "0.000030000",
    "anthropic-messages-stream-2": "0.003676500",  # 4×3 + 1165×0.3 + 221×15
}


@pytest.fixture(scope="module")
def upstream() -> Iterator[FixtureUpstream]:
    server = FixtureUpstream()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def replay_gateway(tmp_path_factory: pytest.TempPathFactory, upstream: FixtureUpstream) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(tmp_path_factory.mktemp("replay") / "data", upstream.url)
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def replay_key(replay_gateway: GatewayProcess) -> str:
    return create_key(replay_gateway.data_dir, "replay")




def test_every_fixture_has_an_expectation(upstream: FixtureUpstream) -> None:
    assert set(upstream.recordings) == set(EXPECTED)
    for name, cost in WRITTEN_OUT.items():
        assert str(EXPECTED[name][-1]) == cost, name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_replayed_through_gateway(
    name: str, upstream: FixtureUpstream, replay_gateway: GatewayProcess, replay_key: str
) -> None:
    path, status, model, prompt, completion, cache_read, cache_write, reasoning, source, cost = EXPECTED[name]
    rec = upstream.recordings[name]
    rid = str(uuid.uuid4())
    headers = {
        "Helicone-Auth": f"Bearer {replay_key}", "Helicone-Request-Id": rid, "Helicone-User-Id": "fixture-user",
        "X-Fixture": name, "Content-Type": "application/json", "Authorization": "Bearer sk-test",
    }
    response = httpx.post(replay_gateway.url + path, content=rec.request, headers=headers, timeout=30)
    assert response.status_code == status
    # The client gets the recorded bytes unchanged: a client that asked for the usage chunk
    # keeps it; a stream without usage has nothing to remove.
    assert response.content == rec.body
    row = replay_gateway.wait_for_record(replay_key, rid)
    got = {k: row[k] for k in ("status", "model", "prompt_tokens", "completion_tokens", "cache_read_tokens",
                               "cache_write_tokens", "reasoning_tokens", "usage_source", "stream", "user_id")}
    assert got == {
        "status": status, "model": model, "prompt_tokens": prompt, "completion_tokens": completion,
        "cache_read_tokens": cache_read, "cache_write_tokens": cache_write, "reasoning_tokens": reasoning,
        "usage_source": source, "stream": rec.stream, "user_id": "fixture-user",
    }
    assert row["cost_usd"] == (None if cost is None else f"{cost:.9f}")
    assert row["total_tokens"] == prompt + completion
    if status >= 400:
        assert row["error"]  # the provider's error body is kept
    if rec.stream:
        assert row["ttft_ms"] is not None


def test_usage_injected_for_a_stream_that_did_not_ask(
    upstream: FixtureUpstream, replay_gateway: GatewayProcess, replay_key: str
) -> None:
    """openai-chat-stream-2 asked for no usage: the gateway asks the upstream for it anyway
    (this recording has none, so the record is estimated: see the replay test)."""
    name = "openai-chat-stream-2"
    httpx.post(replay_gateway.url + "/v1/chat/completions", content=upstream.recordings[name].request,
               headers={"Helicone-Auth": f"Bearer {replay_key}", "X-Fixture": name}, timeout=30)
    sent = upstream.last_body(name)
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["messages"] == [{"role": "user", "content": "Tell me a short joke"}]
    # A request that asked keeps its own stream_options untouched.
    name = "openai-chat-stream-1"
    original = upstream.recordings[name].request
    httpx.post(replay_gateway.url + "/v1/chat/completions", content=original,
               headers={"Helicone-Auth": f"Bearer {replay_key}", "X-Fixture": name}, timeout=30)
    assert upstream.received[-1][2] == original


def test_upstream_date_and_server_headers_are_relayed_once(
    upstream: FixtureUpstream, replay_gateway: GatewayProcess, replay_key: str
) -> None:
    """The gateway relays the provider's Date/Server; the ASGI server must not add a second of each."""
    name = "openai-chat-json-1"
    response = httpx.post(replay_gateway.url + "/v1/chat/completions", content=upstream.recordings[name].request,
                          headers={"Helicone-Auth": f"Bearer {replay_key}", "X-Fixture": name}, timeout=30)
    assert response.status_code == 200
    assert len(response.headers.get_list("date")) == 1
    assert len(response.headers.get_list("server")) == 1 and "uvicorn" not in response.headers["server"]
