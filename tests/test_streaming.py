"""Streaming through the real gateway with the official SDKs, against the mock upstream.

Streamed and non-streamed forms of one request must record equal tokens; a client that did
not ask for OpenAI's usage chunk never sees it, yet the record has the provider's usage;
chunks are relayed as they arrive.
"""

from __future__ import annotations

import time
import uuid
from decimal import Decimal
from typing import Any

import httpx

from tests.sdk import anthropic_client, openai_client
from tests.servers import GatewayProcess, MockUpstream

PROVIDER_KEY = "sk-provider-secret-123"
M = Decimal(1_000_000)
GPT_4O_MINI = (Decimal("0.15"), Decimal("0.075"), Decimal("0.6"))  # input, cached input, output
CLAUDE_SONNET_4 = (Decimal("3"), Decimal("0.30"), Decimal("3.75"), Decimal("15"))  # in, read, 5m write, out
O3_MINI = (Decimal("1.10"), Decimal("0.55"), Decimal("4.40"))
TOKEN_COLUMNS = ("prompt_tokens", "completion_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens")


def _ids(**extra: str) -> tuple[str, dict[str, str]]:
    rid = str(uuid.uuid4())
    return rid, {"Helicone-Request-Id": rid, **extra}


def _tokens(row: dict[str, Any]) -> tuple[int, ...]:
    return tuple(row[c] for c in TOKEN_COLUMNS)


def _upstream_body(mock: MockUpstream, marker: str) -> dict[str, Any]:
    import json

    for seen in reversed(mock.received()):
        if seen["headers"].get("x-test-marker") == marker:
            return json.loads(seen["body"])  # type: ignore[no-any-return]
    raise AssertionError(f"the mock never received {marker}")


def test_chat_stream_without_include_usage(gateway: GatewayProcess, key: str, mock_upstream: MockUpstream) -> None:
    client = openai_client(gateway, key, PROVIDER_KEY)
    messages = [{"role": "user", "content": "Stream me a short answer about budgets"}]
    marker = uuid.uuid4().hex
    rid, headers = _ids(**{"X-Test-Marker": marker})
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True,
                                                 extra_headers=headers))
    # The client did not ask: no usage chunk (`choices: []`) and no usage anywhere.
    assert chunks and all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    # ... yet the gateway asked the upstream for it, and recorded the provider's numbers.
    assert _upstream_body(mock_upstream, marker)["stream_options"] == {"include_usage": True}
    streamed = gateway.wait_for_record(key, rid)
    assert streamed["usage_source"] == "provider" and streamed["stream"] is True

    rid2, headers2 = _ids()
    plain = client.chat.completions.create(model="gpt-4o-mini", messages=messages, extra_headers=headers2)
    assert plain.choices[0].message.content == text  # the mock is deterministic
    unstreamed = gateway.wait_for_record(key, rid2)
    assert _tokens(streamed) == _tokens(unstreamed) == (plain.usage.prompt_tokens, plain.usage.completion_tokens,
                                                       0, 0, 0)
    assert streamed["cost_usd"] == unstreamed["cost_usd"]
    expected = (plain.usage.prompt_tokens * GPT_4O_MINI[0] + plain.usage.completion_tokens * GPT_4O_MINI[2]) / M
    assert streamed["cost_usd"] == f"{expected:.9f}"


def test_chat_stream_with_include_usage_keeps_the_usage_chunk(gateway: GatewayProcess, key: str) -> None:
    client = openai_client(gateway, key, PROVIDER_KEY)
    rid, headers = _ids(**{"X-Mock-Cached-Tokens": "8", "X-Mock-Reasoning-Tokens": "5"})
    chunks = list(client.chat.completions.create(
        model="o3-mini", messages=[{"role": "user", "content": "Think, then answer about reasoning tokens please"}],
        stream=True, stream_options={"include_usage": True}, extra_headers=headers,
    ))
    usage = chunks[-1].usage
    assert usage is not None and chunks[-1].choices == []
    assert all(c.usage is None for c in chunks[:-1])
    row = gateway.wait_for_record(key, rid)
    assert _tokens(row) == (usage.prompt_tokens, usage.completion_tokens, 8, 0, 5)
    assert usage.completion_tokens_details.reasoning_tokens == 5
    # Cached input at the cache rate, reasoning as output.
    expected = ((usage.prompt_tokens - 8) * O3_MINI[0] + 8 * O3_MINI[1] + usage.completion_tokens * O3_MINI[2]) / M
    assert row["cost_usd"] == f"{expected.quantize(Decimal('1e-9'))}"


def test_completions_stream_and_not_record_equal_tokens(gateway: GatewayProcess, key: str) -> None:
    client = openai_client(gateway, key, PROVIDER_KEY)
    rid, headers = _ids()
    chunks = list(client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Once upon a time",
                                            max_tokens=30, stream=True, extra_headers=headers))
    assert all(c.usage is None for c in chunks) and all(c.choices for c in chunks)
    streamed = gateway.wait_for_record(key, rid)
    rid2, headers2 = _ids()
    plain = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Once upon a time", max_tokens=30,
                                      extra_headers=headers2)
    assert "".join(c.choices[0].text for c in chunks) == plain.choices[0].text
    unstreamed = gateway.wait_for_record(key, rid2)
    assert streamed["usage_source"] == unstreamed["usage_source"] == "provider"
    assert _tokens(streamed) == _tokens(unstreamed) == (plain.usage.prompt_tokens, plain.usage.completion_tokens,
                                                       0, 0, 0)
    assert streamed["cost_usd"] == unstreamed["cost_usd"] is not None


def test_anthropic_messages_stream(gateway: GatewayProcess, key: str) -> None:
    client = anthropic_client(gateway, key, PROVIDER_KEY)
    params: dict[str, Any] = {
        "model": "claude-sonnet-4-20250514", "max_tokens": 200, "system": "You are terse.",
        "messages": [{"role": "user", "content": "Summarise my usage, please, with cache"}],
    }
    hints = {"X-Mock-Cached-Tokens": "6", "X-Mock-Cache-Creation-Tokens": "4"}
    rid, headers = _ids(**hints)
    with client.messages.stream(**params, extra_headers=headers) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    streamed = gateway.wait_for_record(key, rid)
    rid2, headers2 = _ids(**hints)
    plain = client.messages.create(**params, extra_headers=headers2)
    assert plain.content[0].text == text
    assert final.usage.output_tokens == plain.usage.output_tokens
    unstreamed = gateway.wait_for_record(key, rid2)
    u = plain.usage
    read, write = u.cache_read_input_tokens or 0, u.cache_creation_input_tokens or 0
    assert (read, write) == (6, 4)
    # prompt_tokens counts every input token: Anthropic's input_tokens exclude cache reads and writes.
    assert _tokens(streamed) == _tokens(unstreamed) == (u.input_tokens + read + write, u.output_tokens, read, write, 0)
    expected = (u.input_tokens * CLAUDE_SONNET_4[0] + read * CLAUDE_SONNET_4[1] + write * CLAUDE_SONNET_4[2]
                + u.output_tokens * CLAUDE_SONNET_4[3]) / M
    assert streamed["cost_usd"] == unstreamed["cost_usd"] == f"{expected.quantize(Decimal('1e-9'))}"
    assert streamed["stream"] is True and unstreamed["stream"] is False


def test_responses_stream(gateway: GatewayProcess, key: str) -> None:
    client = openai_client(gateway, key, PROVIDER_KEY)
    rid, headers = _ids(**{"X-Mock-Reasoning-Tokens": "7"})
    with client.responses.stream(model="gpt-4o-mini", input="Stream a line about responses",
                                 extra_headers=headers) as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    streamed = gateway.wait_for_record(key, rid)
    rid2, headers2 = _ids(**{"X-Mock-Reasoning-Tokens": "7"})
    plain = client.responses.create(model="gpt-4o-mini", input="Stream a line about responses", extra_headers=headers2)
    assert final.output_text == plain.output_text
    unstreamed = gateway.wait_for_record(key, rid2)
    u = plain.usage
    assert (final.usage.input_tokens, final.usage.output_tokens) == (u.input_tokens, u.output_tokens)
    assert _tokens(streamed) == _tokens(unstreamed) == (u.input_tokens, u.output_tokens, 0, 0, 7)
    assert streamed["usage_source"] == "provider" and streamed["cost_usd"] == unstreamed["cost_usd"] is not None


def test_chunks_are_relayed_as_they_arrive(gateway: GatewayProcess, key: str) -> None:
    """With 150 ms between upstream events the first chunk must reach the client long before
    the stream ends (timings are generous: the machine is shared)."""
    body = {"model": "gpt-4o-mini", "stream": True, "max_tokens": 12,
            "messages": [{"role": "user", "content": "Tell me about slow streams, one word at a time"}]}
    headers = {"Helicone-Auth": f"Bearer {key}", "X-Mock-Chunk-Delay-Ms": "150", "Authorization": "Bearer sk-x"}
    started = time.monotonic()
    first_at = None
    events = 0
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body, headers=headers, timeout=30) as response:
        assert response.status_code == 200
        rid = response.headers["helicone-id"]
        for chunk in response.iter_raw():
            if first_at is None and chunk:
                first_at = time.monotonic() - started
            events += chunk.count(b"data: ")
    total = time.monotonic() - started
    assert first_at is not None and events >= 6
    # >= 5 gaps of 150 ms follow the first event.
    assert total - first_at >= 0.5, (first_at, total)
    row = gateway.wait_for_record(key, rid)
    assert row["ttft_ms"] is not None and row["latency_ms"] - row["ttft_ms"] >= 500


def _read_then_hang_up(gateway: GatewayProcess, path: str, body: dict[str, Any], headers: dict[str, str],
                       events: int) -> tuple[str, float]:
    """POST a streaming request on a raw socket, read until `events` SSE events arrived, then
    really close the connection. Returns (request id, time of the close)."""
    import json
    import socket

    payload = json.dumps(body).encode()
    head = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{gateway.port}", "Content-Type: application/json",
            f"Content-Length: {len(payload)}", *(f"{k}: {v}" for k, v in headers.items())]
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    try:
        sock.sendall("\r\n".join(head).encode() + b"\r\n\r\n" + payload)
        received = b""
        deadline = time.monotonic() + 10
        while received.count(b"\n\n") < events + 1 and time.monotonic() < deadline:  # +1: the header block
            data = sock.recv(65536)
            assert data, "gateway closed the stream early"
            received += data.replace(b"\r\n\r\n", b"\n\n", 1) if b"HTTP/1.1" in data else data
        assert received.startswith(b"HTTP/1.1 200")
        rid = next(line.split(b":", 1)[1].strip().decode() for line in received.split(b"\r\n")
                   if line.lower().startswith(b"helicone-id:"))
    finally:
        sock.close()
    return rid, time.monotonic()


def test_client_disconnect_mid_stream_is_499_with_tokens_so_far(gateway: GatewayProcess, key: str) -> None:
    body = {"model": "gpt-4o-mini", "stream": True, "max_tokens": 40,
            "messages": [{"role": "user", "content": "A long story about a user who hangs up early, please"}]}
    headers = {"Helicone-Auth": f"Bearer {key}", "X-Mock-Chunk-Delay-Ms": "100", "Authorization": "Bearer sk-x"}
    rid, _ = _read_then_hang_up(gateway, "/v1/chat/completions", body, headers, events=4)
    row = gateway.wait_for_record(key, rid)
    assert row["status"] == 499 and row["error"]
    full = openai_client(gateway, key, PROVIDER_KEY).chat.completions.create(**{k: v for k, v in body.items() if k != "stream"})
    # The upstream never sent its usage chunk: tokens seen so far are counted offline.
    assert row["usage_source"] == "estimated"
    assert 0 < row["completion_tokens"] < full.usage.completion_tokens
    assert row["prompt_tokens"] > 0
    # 499 is billed: the provider produced (and charges for) those tokens.
    expected = (row["prompt_tokens"] * GPT_4O_MINI[0] + row["completion_tokens"] * GPT_4O_MINI[2]) / M
    assert row["cost_usd"] == f"{expected.quantize(Decimal('1e-9'))}"


def test_anthropic_disconnect_keeps_provider_input_count(gateway: GatewayProcess, key: str) -> None:
    body = {"model": "claude-sonnet-4-20250514", "max_tokens": 60, "stream": True,
            "messages": [{"role": "user", "content": "Tell a long tale that I will not wait for"}]}
    headers = {"Helicone-Auth": f"Bearer {key}", "X-Mock-Chunk-Delay-Ms": "100", "x-api-key": PROVIDER_KEY,
               "anthropic-version": "2023-06-01"}
    rid, _ = _read_then_hang_up(gateway, "/anthropic/v1/messages", body, headers, events=5)
    row = gateway.wait_for_record(key, rid)
    full = anthropic_client(gateway, key, PROVIDER_KEY).messages.create(**{k: v for k, v in body.items() if k != "stream"})
    assert row["status"] == 499
    # message_start carried the provider's input count; output so far is estimated.
    assert row["prompt_tokens"] == full.usage.input_tokens
    assert 0 < row["completion_tokens"] < full.usage.output_tokens


def test_disconnect_during_a_long_upstream_silence_is_noticed_at_once(gateway: GatewayProcess, key: str) -> None:
    """A client that leaves while the upstream is silent (a model thinking) must not keep the
    upstream stream (and its bill) running until the next chunk."""
    body = {"model": "gpt-4o-mini", "stream": True, "max_tokens": 5,
            "messages": [{"role": "user", "content": "Think for a long time between words"}]}
    headers = {"Helicone-Auth": f"Bearer {key}", "X-Mock-Chunk-Delay-Ms": "4000", "Authorization": "Bearer sk-x"}
    rid, closed_at = _read_then_hang_up(gateway, "/v1/chat/completions", body, headers, events=1)
    row = gateway.wait_for_record(key, rid, timeout=15)
    noticed = time.monotonic() - closed_at
    assert row["status"] == 499
    assert noticed < 3.5, noticed  # the next upstream chunk was 4 s away
