"""The mock upstream, exercised as a real subprocess through the official openai/anthropic SDKs."""

from __future__ import annotations

import base64
import json
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "How much did I spend this month?"}]}
MESSAGES = {
    "model": "claude-sonnet-4-20250514",
    "max_tokens": 200,
    "system": "You are terse.",
    "messages": [{"role": "user", "content": "Summarise my usage, please."}],
}


def _start_mock() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "usagegate.mock_upstream", "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until the server accepts connections
    assert line.startswith("mock-upstream listening on http://127.0.0.1:"), line
    return proc, line.strip().rsplit(" ", 1)[1]


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    proc, url = _start_mock()
    try:
        yield url
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


@pytest.fixture
def oai(base: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key="sk-test", base_url=f"{base}/v1", max_retries=0) as client:
        yield client


@pytest.fixture
def claude(base: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(api_key="sk-ant-test", base_url=base, max_retries=0) as client:
        yield client


def _raw_events(base: str, path: str, body: dict[str, object], **headers: str) -> list[bytes]:
    """The stream as the HTTP chunks arrived, split into SSE events."""
    with httpx.stream("POST", base + path, json=body, headers=headers) as r:
        raw = b"".join(r.iter_raw())
    return [e for e in raw.split(b"\n\n") if e]


# --------------------------------------------------------------------------- OpenAI chat


def test_chat_completion_echoes_model_and_reports_usage(oai: openai.OpenAI) -> None:
    r = oai.chat.completions.create(**CHAT, extra_headers={"X-Mock-Cached-Tokens": "4"})  # type: ignore[call-overload]
    assert r.model == "gpt-4o-mini"
    assert r.object == "chat.completion"
    text = r.choices[0].message.content
    assert text and r.choices[0].finish_reason == "stop"
    assert r.usage is not None
    prompt_chars = len(CHAT["messages"][0]["content"])  # type: ignore[index]
    assert r.usage.prompt_tokens == -(-prompt_chars // 4)
    assert r.usage.completion_tokens == len(text.split())
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.usage.prompt_tokens_details is not None and r.usage.prompt_tokens_details.cached_tokens == 4
    assert r.usage.completion_tokens_details is not None
    assert r.usage.completion_tokens_details.reasoning_tokens == 0


def test_chat_stream_with_include_usage_matches_non_stream(oai: openai.OpenAI) -> None:
    plain = oai.chat.completions.create(**CHAT)  # type: ignore[call-overload]
    chunks = list(oai.chat.completions.create(**CHAT, stream=True, stream_options={"include_usage": True}))  # type: ignore[call-overload]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage == plain.usage
    assert all(c.usage is None for c in chunks[:-1])
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_chat_stream_without_include_usage_has_no_usage_anywhere(oai: openai.OpenAI, base: str) -> None:
    chunks = list(oai.chat.completions.create(**CHAT, stream=True))  # type: ignore[call-overload]
    assert chunks and all(c.usage is None and c.choices for c in chunks)
    events = _raw_events(base, "/v1/chat/completions", {**CHAT, "stream": True})
    assert events[-1] == b"data: [DONE]"
    assert not any(b'"usage"' in e for e in events)


def test_same_body_gives_same_answer_and_max_tokens_truncates(oai: openai.OpenAI) -> None:
    first = oai.chat.completions.create(**CHAT)  # type: ignore[call-overload]
    second = oai.chat.completions.create(**CHAT)  # type: ignore[call-overload]
    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.usage == second.usage
    other = oai.chat.completions.create(**{**CHAT, "model": "gpt-4o"})  # type: ignore[call-overload]
    assert other.model == "gpt-4o"
    short = oai.chat.completions.create(**CHAT, max_tokens=2)  # type: ignore[call-overload]
    assert short.choices[0].finish_reason == "length"
    assert short.usage is not None and short.usage.completion_tokens == 2


def test_ids_are_fresh_and_created_is_now_even_for_a_repeated_body(oai: openai.OpenAI) -> None:
    first = oai.chat.completions.create(**CHAT, extra_headers={"X-Mock-Cached-Tokens": "5"})  # type: ignore[call-overload]
    second = oai.chat.completions.create(**CHAT)  # type: ignore[call-overload]
    assert first.id != second.id and first.id.startswith("chatcmpl-") and len(first.id) == len(second.id)
    assert abs(second.created - time.time()) < 5
    # The hint header of the first request must not leak into the (cached) answer of the second.
    assert second.usage is not None and second.usage.prompt_tokens_details is not None
    assert second.usage.prompt_tokens_details.cached_tokens == 0


def test_reasoning_tokens_count_in_completion_tokens(oai: openai.OpenAI) -> None:
    plain = oai.chat.completions.create(**CHAT)  # type: ignore[call-overload]
    r = oai.chat.completions.create(**CHAT, extra_headers={"X-Mock-Reasoning-Tokens": "7"})  # type: ignore[call-overload]
    assert plain.usage is not None and r.usage is not None
    assert r.usage.completion_tokens == plain.usage.completion_tokens + 7
    assert r.usage.completion_tokens_details is not None
    assert r.usage.completion_tokens_details.reasoning_tokens == 7


def test_legacy_completions_stream_and_not_agree(oai: openai.OpenAI) -> None:
    kwargs = {"model": "gpt-3.5-turbo-instruct", "prompt": "Say hi", "max_tokens": 50}
    plain = oai.completions.create(**kwargs)  # type: ignore[call-overload]
    chunks = list(oai.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))  # type: ignore[call-overload]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == plain.choices[0].text
    assert chunks[-1].usage == plain.usage and plain.usage is not None
    assert plain.usage.prompt_tokens == 2


# --------------------------------------------------------------------------- embeddings, responses, models


def test_embeddings_base64_by_default_and_float_on_request(oai: openai.OpenAI, base: str) -> None:
    r = oai.embeddings.create(model="text-embedding-3-small", input=["hello world", "second input"])
    assert [d.index for d in r.data] == [0, 1]
    assert len(r.data[0].embedding) == 1536
    assert r.usage.prompt_tokens == r.usage.total_tokens == 3 + 3
    sent = json.loads(_last_request(base)["body"])
    assert sent["encoding_format"] == "base64"  # the SDK's default, decoded back to floats above
    floats = oai.embeddings.create(
        model="text-embedding-3-small", input="hello world", encoding_format="float", dimensions=64
    )
    assert len(floats.data[0].embedding) == 64
    assert floats.data[0].embedding == pytest.approx(r.data[0].embedding[:64])
    raw = httpx.post(f"{base}/v1/embeddings", json={"model": "m", "input": "x", "encoding_format": "base64"}).json()
    assert isinstance(raw["data"][0]["embedding"], str)
    assert len(base64.b64decode(raw["data"][0]["embedding"])) == 1536 * struct.calcsize("f")


def test_responses_stream_and_not_agree(oai: openai.OpenAI) -> None:
    kwargs = {"model": "gpt-4.1", "input": "Write a haiku about invoices", "instructions": "Be brief"}
    plain = oai.responses.create(**kwargs, extra_headers={"X-Mock-Cached-Tokens": "2"})  # type: ignore[call-overload]
    assert plain.model == "gpt-4.1" and plain.status == "completed"
    assert plain.output_text
    assert plain.usage is not None
    assert plain.usage.output_tokens == len(plain.output_text.split())
    assert plain.usage.input_tokens_details.cached_tokens == 2
    assert plain.usage.total_tokens == plain.usage.input_tokens + plain.usage.output_tokens
    events = list(oai.responses.create(**kwargs, stream=True, extra_headers={"X-Mock-Cached-Tokens": "2"}))  # type: ignore[call-overload]
    types = [e.type for e in events]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == plain.output_text
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].response.usage == plain.usage  # type: ignore[union-attr]


def test_models_list(oai: openai.OpenAI) -> None:
    ids = [m.id for m in oai.models.list()]
    assert "gpt-4o" in ids and "claude-sonnet-4-20250514" in ids


# --------------------------------------------------------------------------- Anthropic


def test_messages_non_stream(claude: anthropic.Anthropic) -> None:
    m = claude.messages.create(
        **MESSAGES, extra_headers={"X-Mock-Cached-Tokens": "3", "X-Mock-Cache-Creation-Tokens": "2"}  # type: ignore[arg-type]
    )
    assert m.model == MESSAGES["model"] and m.stop_reason == "end_turn"
    text = m.content[0].text  # type: ignore[union-attr]
    assert m.usage.output_tokens == len(text.split())
    assert m.usage.cache_read_input_tokens == 3 and m.usage.cache_creation_input_tokens == 2
    prompt = -(-len("You are terse.\nSummarise my usage, please.") // 4)
    # Anthropic's input_tokens excludes the cached part.
    assert m.usage.input_tokens == prompt - 3 - 2


def test_messages_stream_matches_non_stream(claude: anthropic.Anthropic, base: str) -> None:
    plain = claude.messages.create(**MESSAGES)  # type: ignore[arg-type]
    with claude.messages.stream(**MESSAGES) as stream:  # type: ignore[arg-type]
        kinds = [e.type for e in stream]
        final = stream.get_final_message()
    assert final.content[0].text == plain.content[0].text  # type: ignore[union-attr]
    assert final.usage.output_tokens == plain.usage.output_tokens
    assert final.usage.input_tokens == plain.usage.input_tokens
    assert kinds[0] == "message_start" and "message_stop" in kinds
    raw = _raw_events(base, "/v1/messages", {**MESSAGES, "stream": True})
    names = [e.split(b"\n", 1)[0] for e in raw]
    assert names[:3] == [b"event: message_start", b"event: content_block_start", b"event: ping"]
    assert names[-3:] == [b"event: content_block_stop", b"event: message_delta", b"event: message_stop"]
    start = json.loads(raw[0].split(b"data: ", 1)[1])
    assert start["message"]["usage"]["output_tokens"] == 1  # placeholder, as the real API sends


def test_messages_max_tokens_stop_reason(claude: anthropic.Anthropic) -> None:
    m = claude.messages.create(**{**MESSAGES, "max_tokens": 1})  # type: ignore[arg-type]
    assert m.stop_reason == "max_tokens" and m.usage.output_tokens == 1


# --------------------------------------------------------------------------- faults and errors


def test_status_429_is_provider_shaped_with_retry_after(oai: openai.OpenAI, claude: anthropic.Anthropic) -> None:
    with pytest.raises(openai.RateLimitError) as o:
        oai.chat.completions.create(**CHAT, extra_headers={"X-Mock-Status": "429"})  # type: ignore[call-overload]
    assert o.value.response.headers["retry-after"] == "1"
    assert set(o.value.body) == {"message", "type", "param", "code"}  # type: ignore[arg-type]
    with pytest.raises(anthropic.RateLimitError) as a:
        claude.messages.create(**MESSAGES, extra_headers={"X-Mock-Status": "429"})  # type: ignore[arg-type]
    assert a.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]


def test_any_status_can_be_injected(claude: anthropic.Anthropic, oai: openai.OpenAI) -> None:
    with pytest.raises(anthropic.APIStatusError) as a:
        claude.messages.create(**MESSAGES, extra_headers={"X-Mock-Status": "529"})  # type: ignore[arg-type]
    assert a.value.status_code == 529
    assert a.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    with pytest.raises(openai.InternalServerError) as o:
        oai.embeddings.create(model="m", input="x", extra_headers={"X-Mock-Status": "503"})
    assert o.value.status_code == 503


def test_unknown_route_is_openai_404(base: str) -> None:
    r = httpx.post(f"{base}/v2/nothing", json={})
    assert r.status_code == 404
    assert r.json() == {
        "error": {"message": "Invalid URL (POST /v2/nothing)", "type": "invalid_request_error",
                  "param": None, "code": "not_found"}
    }
    assert httpx.get(f"{base}/v1/chat/completions").status_code == 404


def test_delay_does_not_block_other_connections(base: str) -> None:
    done: dict[str, float] = {}

    def slow() -> None:
        httpx.post(f"{base}/v1/chat/completions", json=CHAT, headers={"X-Mock-Delay-Ms": "1000"})
        done["slow"] = time.monotonic()

    t0 = time.monotonic()
    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.05)
    assert httpx.post(f"{base}/v1/chat/completions", json=CHAT).status_code == 200
    fast = time.monotonic() - t0
    thread.join()
    assert fast < 0.5
    assert done["slow"] - t0 >= 1.0


def test_stream_wire_format_is_one_http_chunk_per_event(base: str) -> None:
    body = json.dumps({**CHAT, "stream": True}).encode()
    with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1]))) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"transfer-encoding: chunked" in head and b"content-type: text/event-stream" in head
    sizes_and_events = []
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        sizes_and_events.append(rest[:size])
        assert rest[size : size + 2] == b"\r\n"
        rest = rest[size + 2 :]
    assert rest == b"\r\n"
    assert all(e.startswith(b"data: ") and e.endswith(b"\n\n") and e.count(b"\n\n") == 1 for e in sizes_and_events)
    assert sizes_and_events[-1] == b"data: [DONE]\n\n"


def test_break_after_cuts_a_stream_after_n_events(base: str, oai: openai.OpenAI) -> None:
    received: list[bytes] = []
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.stream(
            "POST", f"{base}/v1/chat/completions", json={**CHAT, "stream": True},
            headers={"X-Mock-Break-After": "3"},
        ) as r:
            for chunk in r.iter_raw():
                received.append(chunk)
    events = [e for e in b"".join(received).split(b"\n\n") if e]
    assert len(events) == 3 and b"[DONE]" not in events[-1]
    with pytest.raises(openai.APIError):
        list(oai.chat.completions.create(**CHAT, stream=True, extra_headers={"X-Mock-Break-After": "3"}))  # type: ignore[call-overload]


def test_break_after_cuts_a_plain_body(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.APIConnectionError):
        oai.chat.completions.create(**CHAT, extra_headers={"X-Mock-Break-After": "1"})  # type: ignore[call-overload]


@pytest.mark.parametrize("delay_ms", ["0", "20"], ids=["yield-only", "20ms"])
def test_chunk_delay_paces_stream_events(base: str, delay_ms: str) -> None:
    arrivals: list[float] = []
    with httpx.stream(
        "POST", f"{base}/v1/messages", json={**MESSAGES, "stream": True},
        headers={"X-Mock-Chunk-Delay-Ms": delay_ms},
    ) as r:
        raw = b""
        for chunk in r.iter_raw():
            arrivals.append(time.monotonic())
            raw += chunk
    assert raw.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    if delay_ms == "20":
        # Each paced event is its own read, so the stream spans at least (events - 1) delays.
        assert len(arrivals) >= 8
        assert arrivals[-1] - arrivals[0] >= 0.02 * (len(arrivals) - 2)


# --------------------------------------------------------------------------- introspection and lifecycle


def _last_request(base: str) -> dict[str, object]:
    log = httpx.get(f"{base}/_mock/requests").json()
    return log[-1]  # type: ignore[no-any-return]


def test_request_log_records_headers_and_can_be_cleared(base: str, oai: openai.OpenAI) -> None:
    oai.chat.completions.create(**CHAT, extra_headers={"X-Custom-Thing": "abc"})  # type: ignore[call-overload]
    last = _last_request(base)
    assert last["method"] == "POST" and last["path"] == "/v1/chat/completions"
    headers = last["headers"]
    assert isinstance(headers, dict)
    assert headers["x-custom-thing"] == "abc" and headers["authorization"] == "Bearer sk-test"
    assert json.loads(str(last["body"])) == CHAT
    assert httpx.delete(f"{base}/_mock/requests").status_code == 200
    assert httpx.get(f"{base}/_mock/requests").json() == []


def test_request_log_is_bounded(base: str) -> None:
    with httpx.Client() as client:
        for _ in range(205):
            client.get(f"{base}/v1/models")
    assert len(httpx.get(f"{base}/_mock/requests").json()) == 200


def test_sigterm_exits_cleanly_with_open_connection() -> None:
    proc, url = _start_mock()
    with httpx.Client() as client:  # keeps a keep-alive connection open across the signal
        assert client.get(f"{url}/v1/models").status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    assert proc.stdout is not None
    proc.stdout.close()
