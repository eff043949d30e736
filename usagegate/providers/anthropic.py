"""Anthropic bodies and SSE events -> normalised `Usage`.

Anthropic's `input_tokens` EXCLUDE `cache_read_input_tokens` and
`cache_creation_input_tokens`; we add them so `prompt_tokens` counts every input token
(DESIGN §2). `cache_creation.ephemeral_1h_input_tokens` is the 1-hour part of the writes.
Extended-thinking tokens are inside `output_tokens` and not reported separately.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..records import Usage
from ._json import child, count


def normalise(usage: dict[str, Any], model: str | None) -> Usage:
    """`Usage` from an Anthropic `usage` object."""
    uncached = count(usage.get("input_tokens"))
    read = count(usage.get("cache_read_input_tokens"))
    creation = child(usage, "cache_creation")
    write_1h = count(creation.get("ephemeral_1h_input_tokens"))
    if "cache_creation_input_tokens" in usage:
        write = count(usage.get("cache_creation_input_tokens"))
    else:
        write = count(creation.get("ephemeral_5m_input_tokens")) + write_1h
    return Usage(
        prompt_tokens=uncached + read + write,
        completion_tokens=count(usage.get("output_tokens")),
        cache_read_tokens=read,
        cache_write_tokens=write,
        cache_write_1h_tokens=min(write_1h, write),
        model=model,
    )


def is_usage(usage: dict[str, Any]) -> bool:
    return "input_tokens" in usage or "output_tokens" in usage


def usage_from_body(body: dict[str, Any]) -> Usage | None:
    """Usage of a non-streamed Messages response, None when it has none (errors)."""
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return None
    model = body.get("model")
    return normalise(usage, model if isinstance(model, str) else None)


def merge_stream_usage(start: dict[str, Any] | None, delta: dict[str, Any] | None) -> dict[str, Any]:
    """One usage object from `message_start.message.usage` and the last `message_delta.usage`.

    `message_delta` counts are cumulative and win; older streams put only `output_tokens`
    there, so input and cache counts then come from `message_start`.
    """
    merged = dict(start or {})
    for key, value in (delta or {}).items():
        if value is not None:
            merged[key] = value
    return merged


def event_text(event: dict[str, Any]) -> Iterator[str]:
    """Generated text in a `content_block_delta` (text, tool input JSON, thinking)."""
    if event.get("type") != "content_block_delta":
        return
    delta = event.get("delta")
    if isinstance(delta, dict):
        for key in ("text", "partial_json", "thinking"):
            value = delta.get(key)
            if isinstance(value, str):
                yield value
