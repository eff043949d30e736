"""Answers cut short are recorded with the tokens the provider bills for them (DESIGN §1).

- The upstream breaks off mid-answer (mock `X-Mock-Break-After`): status 502, and the tokens seen so
  far — the provider generated and bills them — priced at the published rates. A non-streamed
  answer cut mid-body: 502, the provider's usage if it arrived whole, else the request's prompt and
  the text that did arrive, estimated.
- The client hangs up while the upstream is still thinking (mock `X-Mock-Delay-Ms`): status 499,
  the upstream request cancelled, the prompt (which the provider did read) estimated and billed.

Expected numbers are worked out here, independently of the gateway: the offline estimate is the
`o200k_base` count of the prompt text + 3 per message + 3 per request (docs/billing.md), the output
estimate the `o200k_base` count of the text the client received, and the cost tokens x the published
per-token price.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import anthropic
import bpe_openai
import httpx
import openai
import pytest

from tests.sdk import anthropic_client, openai_client
from tests.servers import GatewayProcess, MockUpstream

PROVIDER_KEY = "sk-broken-answers-secret"
M = Decimal(1_000_000)
NANO = Decimal("1e-9")
GPT_4O_MINI = (Decimal("0.15"), Decimal("0.6"))  # USD per 1M input, output tokens
CLAUDE_SONNET_4 = (Decimal("3"), Decimal("15"))
PROMPT = "Tell me a long story about an upstream that fails half way"
MESSAGES = [{"role": "user", "content": PROMPT}]
_O200K = bpe_openai.get_encoding("o200k_base")


def count(text: str) -> int:
    return len(_O200K.encode_ordinary(text))


def prompt_estimate(*texts: str, messages: int) -> int:
    return 3 + 3 * messages + count("\n".join(texts))


def cost(prompt: int, completion: int, rates: tuple[Decimal, Decimal]) -> str:
    return f"{((prompt * rates[0] + completion * rates[1]) / M).quantize(NANO)}"


def ids() -> tuple[str, str, dict[str, str]]:
    """A fresh request id and user id (so 'exactly one record' can be counted), as headers."""
    rid, user = str(uuid.uuid4()), f"broken-{uuid.uuid4().hex[:12]}"
    return rid, user, {"Helicone-Request-Id": rid, "Helicone-User-Id": user}


def only_record(gw: GatewayProcess, key: str, rid: str, user: str) -> dict[str, Any]:
    row = gw.wait_for_record(key, rid)
    rows = gw.api(key, "/api/requests", user_id=user).json()["requests"]
    assert [r["request_id"] for r in rows] == [rid], rows
    return row


# -- the upstream breaks off a stream --------------------------------------------------------------


def test_openai_stream_cut_by_the_upstream_bills_the_tokens_seen(gateway: GatewayProcess, key: str) -> None:
    rid, user, headers = ids()
    chunks = list(openai_client(gateway, key, PROVIDER_KEY).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True,  # type: ignore[arg-type]
        extra_headers={**headers, "X-Mock-Break-After": "4"},
    ))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) == 4 and count(text) == 3  # role chunk + 3 words, then the cut: no usage chunk
    row = only_record(gateway, key, rid, user)
    assert row["status"] == 502 and "broke off" in row["error"] and row["stream"] is True
    assert row["usage_source"] == "estimated"
    prompt = prompt_estimate(PROMPT, messages=1)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (prompt, count(text))
    # Billed: the provider generated those tokens before the connection died.
    assert row["cost_usd"] == cost(prompt, count(text), GPT_4O_MINI)


def test_anthropic_stream_cut_keeps_the_providers_input_count(gateway: GatewayProcess, key: str) -> None:
    rid, user, headers = ids()
    events = list(anthropic_client(gateway, key, PROVIDER_KEY).messages.create(
        model="claude-sonnet-4-20250514", max_tokens=100, messages=MESSAGES, stream=True,  # type: ignore[arg-type]
        extra_headers={**headers, "X-Mock-Break-After": "6"},
    ))
    starts = [e for e in events if e.type == "message_start"]
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta")  # type: ignore[union-attr]
    # message_start, content_block_start, (ping: the SDK skips it), 3 deltas; no message_delta
    # (which carries the output count) came.
    assert len(events) == 5 and len(starts) == 1 and count(text) == 3
    assert not any(e.type == "message_delta" for e in events)
    input_tokens = starts[0].message.usage.input_tokens
    row = only_record(gateway, key, rid, user)
    assert row["status"] == 502 and row["stream"] is True and row["usage_source"] == "estimated"
    assert (row["prompt_tokens"], row["completion_tokens"]) == (input_tokens, count(text))
    assert row["cost_usd"] == cost(input_tokens, count(text), CLAUDE_SONNET_4)


# -- the upstream breaks off a non-streamed answer mid-body ----------------------------------------


def _half_text(mock: MockUpstream, path: str, body: dict[str, Any], text_key: bytes) -> str:
    """The generated text inside the first half of the mock's answer to `body`: what the gateway
    receives when `X-Mock-Break-After` cuts the answer (the mock sends the head and half the body,
    and its answers are deterministic)."""
    full = httpx.post(mock.url + path, json=body).content
    half = full[: len(full) // 2]
    at = half.index(text_key) + len(text_key)
    end = half.find(b'"', at)
    return half[at : end if end >= 0 else len(half)].decode()


def test_openai_answer_cut_mid_body_is_estimated_and_billed(gateway: GatewayProcess, key: str,
                                                           mock_upstream: MockUpstream) -> None:
    body = {"model": "gpt-4o-mini", "messages": MESSAGES}
    arrived = _half_text(mock_upstream, "/v1/chat/completions", body, b'"content":"')
    rid, user, headers = ids()
    with pytest.raises(openai.APIStatusError) as info:
        openai_client(gateway, key, PROVIDER_KEY).chat.completions.create(**body, extra_headers={**headers, "X-Mock-Break-After": "1"})
    assert info.value.status_code == 502 and "broke off" in info.value.message
    row = only_record(gateway, key, rid, user)
    assert row["status"] == 502 and row["stream"] is False and "broke off" in row["error"]
    # The usage object (at the end of the body) never arrived: the prompt is estimated from the
    # request, the output from the text that did arrive.
    assert row["usage_source"] == "estimated"
    prompt = prompt_estimate(PROMPT, messages=1)
    assert count(arrived) >= 3
    assert (row["prompt_tokens"], row["completion_tokens"]) == (prompt, count(arrived))
    assert row["cost_usd"] == cost(prompt, count(arrived), GPT_4O_MINI)


def test_anthropic_answer_cut_mid_text_is_estimated_and_billed(gateway: GatewayProcess, key: str,
                                                              mock_upstream: MockUpstream) -> None:
    body = {"model": "claude-sonnet-4-20250514", "max_tokens": 100, "system": "Be brief.", "messages": MESSAGES}
    arrived = _half_text(mock_upstream, "/v1/messages", body, b'"text":"')
    rid, user, headers = ids()
    with pytest.raises(anthropic.APIStatusError) as info:
        anthropic_client(gateway, key, PROVIDER_KEY).messages.create(**body, extra_headers={**headers, "X-Mock-Break-After": "1"})
    assert info.value.status_code == 502
    row = only_record(gateway, key, rid, user)
    assert row["status"] == 502 and row["usage_source"] == "estimated"
    prompt = prompt_estimate("Be brief.", PROMPT, messages=1)
    assert count(arrived) >= 3
    assert (row["prompt_tokens"], row["completion_tokens"]) == (prompt, count(arrived))
    assert row["cost_usd"] == cost(prompt, count(arrived), CLAUDE_SONNET_4)


# -- the client hangs up before the upstream's headers arrive -------------------------------------

HANG_UP_CASES = [
    pytest.param("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": MESSAGES}, GPT_4O_MINI,
                 id="openai-chat"),
    pytest.param("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}, GPT_4O_MINI,
                 id="openai-chat-stream"),
    pytest.param("/anthropic/v1/messages", {"model": "claude-sonnet-4-20250514", "max_tokens": 100,
                                            "messages": MESSAGES}, CLAUDE_SONNET_4, id="anthropic"),
    pytest.param("/anthropic/v1/messages", {"model": "claude-sonnet-4-20250514", "max_tokens": 100,
                                            "messages": MESSAGES, "stream": True}, CLAUDE_SONNET_4,
                 id="anthropic-stream"),
]
UPSTREAM_DELAY_S = 2.0
HANG_UP_AFTER_S = 0.3


def _send_then_hang_up(gw: GatewayProcess, path: str, body: dict[str, Any], headers: dict[str, str],
                       wait: Callable[[], object] = lambda: time.sleep(HANG_UP_AFTER_S)) -> float:
    """POST on a raw socket, `wait()` without reading, close: a client timing out while the
    upstream is slow. Returns when the request was sent (time.monotonic())."""
    payload = json.dumps(body).encode()
    head = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{gw.port}", "Content-Type: application/json",
            f"Content-Length: {len(payload)}", *(f"{k}: {v}" for k, v in headers.items())]
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall("\r\n".join(head).encode() + b"\r\n\r\n" + payload)
        sent = time.monotonic()
        wait()
        sock.setblocking(False)
        try:
            early = sock.recv(1)
        except BlockingIOError:
            early = b""
        assert early == b"", "the gateway answered before the upstream did"
    return sent


def _upstream_saw(mock: MockUpstream, marker: str, closed: bool = True, timeout: float = 5.0) -> dict[str, Any]:
    """The mock's log entry for the request carrying `marker`, once it has it (and, with `closed`,
    has seen the connection closed)."""
    deadline = time.monotonic() + timeout
    seen: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        seen = [r for r in mock.received() if r["headers"].get("x-test-marker") == marker]
        if seen and (seen[0]["closed_early"] or not closed):
            return seen[0]
        time.sleep(0.005 if not closed else 0.05)
    raise AssertionError(f"the upstream request was not {'cancelled' if closed else 'sent'}: {seen}")


@pytest.mark.parametrize(("path", "body", "rates"), HANG_UP_CASES)
def test_client_gone_before_the_upstream_answers_is_499_with_the_prompt_billed(
    gateway: GatewayProcess, key: str, mock_upstream: MockUpstream, path: str, body: dict[str, Any],
    rates: tuple[Decimal, Decimal],
) -> None:
    rid, user, headers = ids()
    marker = uuid.uuid4().hex
    sent = _send_then_hang_up(gateway, path, body, {
        **headers, "Helicone-Auth": f"Bearer {key}", "Authorization": f"Bearer {PROVIDER_KEY}",
        "x-api-key": PROVIDER_KEY, "anthropic-version": "2023-06-01",
        "X-Mock-Delay-Ms": str(int(UPSTREAM_DELAY_S * 1000)), "X-Test-Marker": marker,
    })
    # The gateway closed its upstream request instead of leaving it to run (and bill) for nothing.
    assert _upstream_saw(mock_upstream, marker)["closed_early"] is True
    row = gateway.wait_for_record(key, rid)
    assert row["status"] == 499 and "disconnected" in row["error"]
    assert row["model"] == row["request_model"] == body["model"]
    # The provider received and read the prompt; no output is known.
    assert row["usage_source"] == "estimated"
    prompt = prompt_estimate(PROMPT, messages=1)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (prompt, 0)
    assert row["cost_usd"] == cost(prompt, 0, rates)
    # Latency is the time until the hang-up, not the upstream's 2 s.
    assert HANG_UP_AFTER_S * 1000 - 50 <= row["latency_ms"] < UPSTREAM_DELAY_S * 1000 - 500, row["latency_ms"]
    # Once the upstream's delay has passed, still exactly one record.
    time.sleep(max(0.0, sent + UPSTREAM_DELAY_S + 0.5 - time.monotonic()))
    assert only_record(gateway, key, rid, user)["status"] == 499


def test_client_gone_as_soon_as_the_request_is_forwarded(gateway: GatewayProcess, key: str,
                                                        mock_upstream: MockUpstream) -> None:
    """The gateway starts watching for hang-ups only after 50 ms without an answer (a watch costs
    a task per request); a client gone sooner is seen then, not missed."""
    rid, user, headers = ids()
    marker = uuid.uuid4().hex
    body = {"model": "gpt-4o-mini", "messages": MESSAGES}
    _send_then_hang_up(gateway, "/v1/chat/completions", body, {
        **headers, "Helicone-Auth": f"Bearer {key}", "Authorization": f"Bearer {PROVIDER_KEY}",
        "X-Mock-Delay-Ms": str(int(UPSTREAM_DELAY_S * 1000)), "X-Test-Marker": marker,
    }, wait=lambda: _upstream_saw(mock_upstream, marker, closed=False, timeout=2))
    assert _upstream_saw(mock_upstream, marker)["closed_early"] is True
    row = gateway.wait_for_record(key, rid)
    assert row["status"] == 499 and row["latency_ms"] < UPSTREAM_DELAY_S * 1000 - 500, row
    prompt = prompt_estimate(PROMPT, messages=1)
    assert (row["prompt_tokens"], row["completion_tokens"], row["cost_usd"]) == (prompt, 0, cost(prompt, 0, GPT_4O_MINI))
    assert only_record(gateway, key, rid, user)["status"] == 499


def test_client_gone_before_sending_its_whole_body_costs_nothing(gateway: GatewayProcess, key: str,
                                                                mock_upstream: MockUpstream) -> None:
    """Nothing was forwarded, so nothing was billed: cost 0, not NULL ("price unknown")."""
    rid, user, headers = ids()
    marker = uuid.uuid4().hex
    payload = json.dumps({"model": "gpt-4o-mini", "messages": MESSAGES}).encode()
    head = ["POST /v1/chat/completions HTTP/1.1", f"Host: 127.0.0.1:{gateway.port}",
            "Content-Type: application/json", f"Content-Length: {len(payload)}", f"Helicone-Auth: Bearer {key}",
            f"X-Test-Marker: {marker}", *(f"{k}: {v}" for k, v in headers.items())]
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall("\r\n".join(head).encode() + b"\r\n\r\n" + payload[:20])
        time.sleep(HANG_UP_AFTER_S)
    row = only_record(gateway, key, rid, user)
    assert row["status"] == 499 and "whole body" in row["error"]
    assert (row["prompt_tokens"], row["completion_tokens"], row["cost_usd"]) == (0, 0, "0.000000000")
    assert not [r for r in mock_upstream.received() if r["headers"].get("x-test-marker") == marker]
