"""usagegate.providers on the real recorded responses in the shared fixtures directory
(numbers from its README), streamed in arbitrary chunkings."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from usagegate.providers import (
    StreamTracker,
    estimate_prompt_tokens,
    prepare_stream_request,
    request_facts,
    stream_tracker,
    usage_from_cut_body,
    usage_from_json,
)
from usagegate.providers import body as body_module
from usagegate.providers._json import loads_object
from usagegate.records import Usage
from usagegate.tokenizer import count_tokens


def _fixtures_dir() -> Path:
    for candidate in (
        os.environ.get("USAGEGATE_PROVIDER_FIXTURES"),
        Path(__file__).parent / "fixtures" / "providers",
        Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "providers",
        "/work/shared/fixtures/providers",
    ):
        if candidate and (Path(candidate) / "manifest.json").is_file():
            return Path(candidate)
    raise RuntimeError("provider fixtures not found; set USAGEGATE_PROVIDER_FIXTURES")


FIXTURES = _fixtures_dir()


def _read(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def _request(name: str) -> dict[str, Any] | None:
    return loads_object(_read(name.rsplit(".", 1)[0] + ".request.json"))


# -- non-streamed bodies -------------------------------------------------------------------

JSON_CASES = [
    pytest.param("openai", "/v1/chat/completions", "openai-chat-json-1.json",
                 Usage(1144, 2, 1024, model="gpt-4.1-2025-04-14"), id="openai-chat-json-1"),
    pytest.param("openai", "/v1/chat/completions", "openai-chat-json-2.json", None, id="openai-chat-json-2-error"),
    pytest.param("openai", "/v1/responses", "openai-responses-json-1.json",
                 Usage(1144, 3, 1024, model="gpt-4.1-2025-04-14"), id="openai-responses-json-1"),
    pytest.param("openai", "/v1/embeddings", "openai-embeddings-json-1.json",
                 Usage(12, 0, model="text-embedding-ada-002-v2"), id="openai-embeddings-json-1"),
    pytest.param("anthropic", "/v1/messages", "anthropic-messages-json-1.json",
                 # input 4 + cache write 1163 = every input token
                 Usage(4 + 1163, 187, 0, 1163, model="claude-3-5-sonnet-20240620"), id="anthropic-messages-json-1"),
    pytest.param("anthropic", "/v1/messages", "anthropic-messages-json-2.json", None,
                 id="anthropic-messages-json-2-error"),
]


@pytest.mark.parametrize(("provider", "path", "name", "expected"), JSON_CASES)
def test_usage_from_json(provider: str, path: str, name: str, expected: Usage | None) -> None:
    assert usage_from_json(provider, path, _read(name)) == expected


@pytest.mark.parametrize(("provider", "path", "name", "expected"), JSON_CASES)
def test_sliced_parse_of_big_bodies_matches_full_parse(
    provider: str, path: str, name: str, expected: Usage | None
) -> None:
    assert body_module.usage_from_json(provider, path, _read(name), slice_above=0) == expected


def test_big_embeddings_body_is_sliced_correctly() -> None:
    rows = ",".join(f'{{"object":"embedding","index":{i},"embedding":[{",".join(["0.0123"] * 200)}]}}' for i in range(50))
    body = f'{{"object":"list","data":[{rows}],"model":"text-embedding-3-small","usage":{{"prompt_tokens":77,"total_tokens":77}}}}'.encode()
    assert len(body) > body_module.SLICE_ABOVE
    assert usage_from_json("openai", "/v1/embeddings", body) == Usage(77, 0, model="text-embedding-3-small")


def test_anthropic_one_hour_cache_writes() -> None:
    body = (
        b'{"model":"claude-sonnet-4-5","usage":{"input_tokens":7,"cache_creation_input_tokens":300,'
        b'"cache_read_input_tokens":50,"cache_creation":{"ephemeral_5m_input_tokens":100,'
        b'"ephemeral_1h_input_tokens":200},"output_tokens":9}}'
    )
    assert usage_from_json("anthropic", "/v1/messages", body) == Usage(
        prompt_tokens=7 + 50 + 300, completion_tokens=9, cache_read_tokens=50,
        cache_write_tokens=300, cache_write_1h_tokens=200, model="claude-sonnet-4-5",
    )


def test_openai_reasoning_is_part_of_completion() -> None:
    body = (
        b'{"model":"o3","usage":{"prompt_tokens":10,"completion_tokens":500,'
        b'"completion_tokens_details":{"reasoning_tokens":448}}}'
    )
    usage = usage_from_json("openai", "/v1/chat/completions", body)
    assert usage == Usage(10, 500, reasoning_tokens=448, model="o3")


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"\xff\xfe", b'{"usage": null}', b'["usage"]', b'{"usage":', b'{"usage": "x"}' * 3000,
     b"<html>usage</html>"],
    ids=["empty", "text", "bad-utf8", "usage-null", "list", "truncated", "usage-string-big", "html"],
)
def test_usage_from_json_without_usage_is_none(body: bytes) -> None:
    assert usage_from_json("openai", "/v1/chat/completions", body) is None
    assert usage_from_json("anthropic", "/v1/messages", body) is None


# -- bodies the upstream broke off ---------------------------------------------------------

@pytest.mark.parametrize(
    ("provider", "path", "name", "after_usage"),
    [
        pytest.param("openai", "/v1/chat/completions", "openai-chat-json-1.json", b',\n  "service_tier"', id="openai-chat"),
        pytest.param("anthropic", "/v1/messages", "anthropic-messages-json-1.json", b"}", id="anthropic"),
    ],
)
def test_cut_body_keeps_a_usage_object_that_arrived_whole(provider: str, path: str, name: str, after_usage: bytes) -> None:
    body = _read(name)
    partial = body[: body.rindex(after_usage)]
    assert partial != body
    assert usage_from_cut_body(provider, path, partial, _request(name)) == usage_from_json(provider, path, body)
    # One byte less and the usage object is incomplete: estimated instead.
    assert usage_from_cut_body(provider, path, partial[:-1], _request(name)).source == "estimated"


def test_cut_body_estimates_the_prompt_and_the_text_that_arrived() -> None:
    name = "anthropic-messages-json-1.json"
    body = _read(name)
    partial = body[: body.index(b"OpenTelemetry")]
    usage = usage_from_cut_body("anthropic", "/v1/messages", partial, _request(name))
    arrived = "Here are concise summaries of the three articles:\n\n1. OpenLLMetry: New open-source library extends "
    assert usage == Usage(
        prompt_tokens=estimate_prompt_tokens(_request(name)), completion_tokens=count_tokens(arrived),
        model="claude-3-5-sonnet-20240620", source="estimated",
    )
    assert usage.prompt_tokens > 1000 and usage.completion_tokens > 10  # the request's articles; the text


def test_cut_body_text_cut_inside_an_escape() -> None:
    name = "anthropic-messages-json-1.json"
    body = _read(name)
    partial = body[: body.index(b"\\n\\n1. OpenLLMetry") + 1]  # ends with a lone backslash
    usage = usage_from_cut_body("anthropic", "/v1/messages", partial, None)
    assert (usage.prompt_tokens, usage.completion_tokens) == (0, count_tokens("Here are concise summaries of the three articles:"))
    body = b'{"model":"gpt-4o","choices":[{"message":{"content":"caf\\u00e9 au lait","tool_calls":[{"function":{"arguments":"{\\"a\\": 1}"}}]}}]}'
    full = usage_from_cut_body("openai", "/v1/chat/completions", body, None)
    assert full.completion_tokens == count_tokens("caf\u00e9 au lait" + '{"a": 1}') and full.model == "gpt-4o"
    cut = usage_from_cut_body("openai", "/v1/chat/completions", body[: body.index(b"e9 au")], None)
    assert cut.completion_tokens == count_tokens("caf\\u00")  # an unfinished escape, counted as it came


# -- streams -------------------------------------------------------------------------------

STREAM_CASES = [
    pytest.param("openai", "/v1/chat/completions", "openai-chat-stream-1.sse",
                 Usage(1144, 2, 1024, model="gpt-4.1-2025-04-14"), id="openai-chat-stream-1"),
    pytest.param("openai", "/v1/chat/completions", "openai-chat-stream-3.sse",
                 Usage(54, 20, 0, model="gpt-4o-mini-2024-07-18"), id="openai-chat-stream-3-tools"),
    pytest.param("openai", "/v1/responses", "openai-responses-stream-1.sse",
                 Usage(3727, 347, 3200, reasoning_tokens=128, model="gpt-5-2025-08-07"), id="openai-responses-stream-1"),
    pytest.param("anthropic", "/v1/messages", "anthropic-messages-stream-1.sse",
                 Usage(10, 4, model="claude-haiku-4-5-20251001"), id="anthropic-messages-stream-1"),
    pytest.param("anthropic", "/v1/messages", "anthropic-messages-stream-2.sse",
                 Usage(4 + 1165, 221, 1165, model="claude-3-5-sonnet-20240620"), id="anthropic-messages-stream-2"),
]


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])]


def _run(tracker: StreamTracker, chunks: list[bytes]) -> bytes:
    return b"".join(tracker.feed(c) for c in chunks) + tracker.flush()


@pytest.mark.parametrize(("provider", "path", "name", "expected"), STREAM_CASES)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(min_value=0, max_value=10**6), max_size=40))
def test_stream_usage_in_any_chunking(
    provider: str, path: str, name: str, expected: Usage, cuts: list[int]
) -> None:
    data = _read(name)
    tracker = stream_tracker(provider, path, strip_usage_chunk=False, request=_request(name))
    assert _run(tracker, _chunks(data, cuts)) == data
    assert tracker.saw_usage
    assert tracker.usage() == expected


@pytest.mark.parametrize(("provider", "path", "name", "expected"), STREAM_CASES)
def test_stream_usage_one_byte_chunks(provider: str, path: str, name: str, expected: Usage) -> None:
    data = _read(name)
    for strip in (False, True):
        tracker = stream_tracker(provider, path, strip_usage_chunk=strip, request=_request(name))
        out = _run(tracker, [data[i : i + 1] for i in range(len(data))])
        assert tracker.usage() == expected
        if not (strip and name.startswith("openai-chat")):
            assert out == data


@pytest.mark.parametrize(("provider", "path", "name", "expected"), STREAM_CASES)
def test_stream_usage_with_crlf_framing(provider: str, path: str, name: str, expected: Usage) -> None:
    data = _read(name).replace(b"\n", b"\r\n")
    tracker = stream_tracker(provider, path, strip_usage_chunk=False, request=None)
    assert _run(tracker, _chunks(data, list(range(0, len(data), 5)))) == data
    assert tracker.usage() == expected


def _events(data: bytes) -> list[bytes]:
    return [e + b"\n\n" for e in data.split(b"\n\n") if e]


def test_usage_chunk_is_the_only_difference_when_stripping() -> None:
    data = _read("openai-chat-stream-1.sse")
    usage_events = [e for e in _events(data) if b'"choices":[]' in e]
    assert len(usage_events) == 1
    expected = data.replace(usage_events[0], b"")
    assert len(expected) == len(data) - len(usage_events[0])
    assert expected.endswith(b"data: [DONE]\n\n")
    tracker = stream_tracker("openai", "/v1/chat/completions", strip_usage_chunk=True, request=None)
    assert _run(tracker, [data]) == expected
    assert tracker.usage() == Usage(1144, 2, 1024, model="gpt-4.1-2025-04-14")


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=10**6), max_size=40))
def test_stripping_in_any_chunking(cuts: list[int]) -> None:
    for name in ("openai-chat-stream-1.sse", "openai-chat-stream-3.sse"):
        data = _read(name)
        usage_event = next(e for e in _events(data) if b'"choices":[]' in e)
        tracker = stream_tracker("openai", "/v1/chat/completions", strip_usage_chunk=True, request=None)
        out = [tracker.feed(c) for c in _chunks(data, cuts)]
        out.append(tracker.flush())
        assert b"".join(out) == data.replace(usage_event, b"")
        assert tracker.saw_usage


def test_strip_forwards_every_complete_event_immediately() -> None:
    data = _read("openai-chat-stream-1.sse")
    first, second = _events(data)[:2]
    tracker = stream_tracker("openai", "/v1/chat/completions", strip_usage_chunk=True, request=None)
    # A whole event plus half of the next: the whole one goes out now, the half is held.
    assert tracker.feed(first + second[:40]) == first
    assert tracker.feed(second[40:]) == second


def test_no_strip_forwards_chunks_unchanged() -> None:
    data = _read("openai-chat-stream-1.sse")
    tracker = stream_tracker("openai", "/v1/chat/completions", strip_usage_chunk=False, request=None)
    chunk = data[:123]
    assert tracker.feed(chunk) is chunk


def test_stream_without_usage_is_estimated() -> None:
    name = "openai-chat-stream-2.sse"
    data = _read(name)
    request = _request(name)
    tracker = stream_tracker("openai", "/v1/chat/completions", strip_usage_chunk=True, request=request)
    assert _run(tracker, _chunks(data, list(range(0, len(data), 17)))) == data  # nothing to strip
    assert not tracker.saw_usage
    usage = tracker.usage()
    text = "Why couldn't the bicycle stand up by itself? Because it was two-tired!"
    assert usage.completion_tokens == count_tokens(text)
    # "Tell me a short joke" + framing for 1 message and the request.
    assert usage.prompt_tokens == count_tokens("Tell me a short joke") + 3 + 3
    assert usage.model == "gpt-3.5-turbo-0125"
    assert usage.source == "estimated"


def test_openai_stream_cut_before_usage_chunk_is_estimated() -> None:
    name = "openai-chat-stream-1.sse"
    data = _read(name)
    cut = data.index(b'"choices":[]')
    tracker = stream_tracker("openai", "/v1/chat/completions", strip_usage_chunk=True, request=_request(name))
    _run(tracker, [data[:cut]])
    usage = tracker.usage()
    assert not tracker.saw_usage
    assert usage.source == "estimated"
    assert usage.completion_tokens == count_tokens("Hello!")
    # The prompt is ~1100 tokens of padding; the estimate must be in that range.
    assert 1000 < usage.prompt_tokens < 1300


def test_anthropic_stream_cut_after_message_start_keeps_reported_input() -> None:
    name = "anthropic-messages-stream-2.sse"
    data = _read(name)
    cut = data.index(b"event: message_delta")
    tracker = stream_tracker("anthropic", "/v1/messages", strip_usage_chunk=False, request=_request(name))
    _run(tracker, _chunks(data[:cut], list(range(0, cut, 50))))
    usage = tracker.usage()
    assert not tracker.saw_usage
    assert (usage.prompt_tokens, usage.cache_read_tokens) == (4 + 1165, 1165)
    texts = [
        loads_object(e.split(b"data: ", 1)[1])["delta"]["text"]  # type: ignore[index]
        for e in _events(data[:cut]) if b"text_delta" in e
    ]
    assert usage.completion_tokens == count_tokens("".join(texts)) > 100
    assert usage.source == "estimated"
    assert usage.model == "claude-3-5-sonnet-20240620"


def test_responses_stream_cut_early_is_estimated() -> None:
    name = "openai-responses-stream-1.sse"
    data = _read(name)
    cut = data.index(b"event: response.completed")
    tracker = stream_tracker("openai", "/v1/responses", strip_usage_chunk=False, request=_request(name))
    _run(tracker, [data[:cut]])
    usage = tracker.usage()
    assert usage.source == "estimated"
    assert usage.model == "gpt-5-2025-08-07"
    assert usage.prompt_tokens == count_tokens("what's 123456 to the power of 123?") + 3 + 3
    assert usage.completion_tokens > 300  # a 600-digit number was streamed


# -- requests ------------------------------------------------------------------------------

REQUEST_CASES = [
    pytest.param("openai", "/v1/chat/completions", "openai-chat-stream-1.request.json", ("gpt-4.1", True, None, None),
                 id="openai-chat-stream-1"),
    pytest.param("openai", "/v1/chat/completions", "openai-chat-json-2.request.json",
                 ("non-existent-model", False, None, None), id="openai-chat-json-2"),
    pytest.param("anthropic", "/v1/messages", "anthropic-messages-stream-1.request.json",
                 ("claude-haiku-4-5-20251001", True, None, 8192), id="anthropic-messages-stream-1"),
    pytest.param("openai", "/v1/responses", "openai-responses-stream-1.request.json", ("gpt-5", True, None, None),
                 id="openai-responses-stream-1"),
]


@pytest.mark.parametrize(("provider", "path", "name", "expected"), REQUEST_CASES)
def test_request_facts_on_fixtures(provider: str, path: str, name: str, expected: tuple[Any, ...]) -> None:
    facts = request_facts(provider, path, _read(name))
    assert (facts.model, facts.stream, facts.user, facts.max_tokens) == expected
    assert facts.parsed == loads_object(_read(name))


@pytest.mark.parametrize(
    ("provider", "body", "user", "max_tokens"),
    [
        ("openai", b'{"user":"alice","max_completion_tokens":50,"max_tokens":99}', "alice", 50),
        ("openai", b'{"user":7,"max_tokens":true}', None, None),
        ("openai", b'{"max_output_tokens":300}', None, 300),
        ("anthropic", b'{"metadata":{"user_id":"u-1"},"max_tokens":1024,"user":"x"}', "u-1", 1024),
        ("anthropic", b'{"metadata":"u-1","max_tokens":"big"}', None, None),
    ],
    ids=["openai-user", "openai-wrong-types", "responses-max", "anthropic-metadata", "anthropic-wrong-types"],
)
def test_request_facts_user_and_max_tokens(provider: str, body: bytes, user: str | None, max_tokens: int | None) -> None:
    facts = request_facts(provider, "/v1/x", body)
    assert (facts.user, facts.max_tokens) == (user, max_tokens)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["model", "stream", "user", "metadata", "user_id", "max_tokens", "max_output_tokens", "x"]),
        inner, max_size=5),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=200) | _json_values.map(lambda v: __import__("json").dumps(v).encode()),
       provider=st.sampled_from(["openai", "anthropic"]))
def test_request_facts_never_raises(body: bytes, provider: str) -> None:
    facts = request_facts(provider, "/v1/chat/completions", body)
    assert facts.model is None or isinstance(facts.model, str)
    assert isinstance(facts.stream, bool)
    assert facts.user is None or isinstance(facts.user, str)
    assert facts.max_tokens is None or (type(facts.max_tokens) is int and facts.max_tokens >= 0)
    assert facts.parsed is None or isinstance(facts.parsed, dict)


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=300))
def test_usage_from_json_and_trackers_never_raise_on_garbage(body: bytes) -> None:
    for provider, path in (("openai", "/v1/chat/completions"), ("openai", "/v1/responses"), ("anthropic", "/v1/messages")):
        usage_from_json(provider, path, body)
        usage_from_json(provider, path, b'{"usage":' + body)
        assert isinstance(usage_from_cut_body(provider, path, b'{"content":"' + body, None), Usage)
        assert isinstance(usage_from_cut_body(provider, path, body, {"messages": [{"content": "hi"}]}), Usage)
        tracker = stream_tracker(provider, path, strip_usage_chunk=True, request=None)
        out = tracker.feed(body) + tracker.flush()
        assert out == body  # garbage is never a usage chunk
        assert isinstance(tracker.usage(), Usage)


@pytest.mark.parametrize(
    ("provider", "path", "body", "expected_options"),
    [
        ("openai", "/v1/chat/completions", {"model": "m", "stream": True}, {"include_usage": True}),
        ("openai", "/v1/completions", {"stream": True, "stream_options": {"include_obfuscation": False}},
         {"include_obfuscation": False, "include_usage": True}),
        ("openai", "/v1/chat/completions", {"stream": True, "stream_options": {"include_usage": False}},
         {"include_usage": True}),
        ("openai", "/v1/chat/completions", {"stream": True, "stream_options": None}, {"include_usage": True}),
        ("openai", "/v1/chat/completions", {"stream": True, "stream_options": {"include_usage": True}}, None),
        ("openai", "/v1/chat/completions", {"stream": False}, None),
        ("openai", "/v1/responses", {"stream": True}, None),
        ("openai", "/v1/embeddings", {"stream": True}, None),
        ("anthropic", "/v1/messages", {"stream": True}, None),
    ],
    ids=["inject", "keep-other-options", "false-to-true", "null-options", "already-asked", "not-streaming",
         "responses", "embeddings", "anthropic"],
)
def test_prepare_stream_request(provider: str, path: str, body: dict[str, Any], expected_options: dict[str, Any] | None) -> None:
    new = prepare_stream_request(provider, path, body)
    if expected_options is None:
        assert new is None
        return
    assert new is not None
    parsed = loads_object(new)
    assert parsed == {**body, "stream_options": expected_options}
    assert list(parsed)[: len(body)] == list(body)  # key order kept


def test_prepare_stream_request_on_fixture_without_usage_option() -> None:
    request = _request("openai-chat-stream-2.sse")
    assert request is not None
    new = prepare_stream_request("openai", "/v1/chat/completions", request)
    assert new is not None and loads_object(new) == {**request, "stream_options": {"include_usage": True}}


def test_count_tokens() -> None:
    assert count_tokens("") == 0
    assert count_tokens("hello world") == 2
    long_text = "word " * 300_000  # over bpe-openai's 1M-character single-call limit
    assert count_tokens(long_text) == pytest.approx(300_000, rel=0.01)


def test_strip_forwards_an_oversized_incomplete_event_early() -> None:
    # A 200 KB content chunk cannot be the usage-only chunk: it is not held back whole.
    big = b'data: {"choices":[{"index":0,"delta":{"content":"' + b"x" * 200_000 + b'"}}],"usage":null}\n\n'
    usage_event = b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7}}\n\n'
    data = big + usage_event + b"data: [DONE]\n\n"
    tracker = stream_tracker("openai", "/v1/chat/completions", strip_usage_chunk=True, request=None)
    pieces = _chunks(data, list(range(0, len(data), 10_000)))
    out = [tracker.feed(p) for p in pieces]
    assert sum(len(o) for o in out[:10]) == 100_000  # forwarded while the event was incomplete
    assert b"".join(out) + tracker.flush() == big + b"data: [DONE]\n\n"
    assert tracker.usage() == Usage(5, 7)
