"""OpenAI bodies and SSE events -> normalised `Usage`.

Chat completions, completions and embeddings report `prompt_tokens` / `completion_tokens`
(with `prompt_tokens_details.cached_tokens` and `completion_tokens_details.reasoning_tokens`);
the Responses API reports `input_tokens` / `output_tokens` with `*_details`. Both already
count cached tokens in the input and reasoning tokens in the output, which is our convention
(DESIGN §2), so normalising is renaming. OpenAI has no separately billed cache writes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..records import Usage
from ._json import child, count

# Responses API stream events whose `response` carries the final usage.
RESPONSE_FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


def normalise(usage: dict[str, Any], model: str | None) -> Usage:
    """`Usage` from an OpenAI `usage` object of either shape (chat-style or Responses-style)."""
    if "prompt_tokens" in usage or "completion_tokens" in usage:
        prompt = count(usage.get("prompt_tokens"))
        completion = count(usage.get("completion_tokens"))
        cached = count(child(usage, "prompt_tokens_details").get("cached_tokens"))
        reasoning = count(child(usage, "completion_tokens_details").get("reasoning_tokens"))
    else:
        prompt = count(usage.get("input_tokens"))
        completion = count(usage.get("output_tokens"))
        cached = count(child(usage, "input_tokens_details").get("cached_tokens"))
        reasoning = count(child(usage, "output_tokens_details").get("reasoning_tokens"))
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        cache_read_tokens=cached,
        reasoning_tokens=reasoning,
        model=model,
    )


def is_usage(usage: dict[str, Any]) -> bool:
    """Whether an object found under a `usage` key looks like an OpenAI usage object."""
    return "prompt_tokens" in usage or "input_tokens" in usage or "completion_tokens" in usage


def usage_from_body(body: dict[str, Any]) -> Usage | None:
    """Usage of a non-streamed response body (any endpoint), None when it has none."""
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return None
    model = body.get("model")
    return normalise(usage, model if isinstance(model, str) else None)


def chat_event_model(event: dict[str, Any]) -> str | None:
    model = event.get("model")
    return model if isinstance(model, str) else None


def chat_event_text(event: dict[str, Any]) -> Iterator[str]:
    """Generated text in a chat.completion.chunk or text_completion chunk."""
    choices = event.get("choices")
    if not isinstance(choices, list):
        return
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        text = choice.get("text")  # /v1/completions
        if isinstance(text, str):
            yield text
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            continue
        for key in ("content", "refusal", "reasoning_content"):
            value = delta.get(key)
            if isinstance(value, str):
                yield value
        calls = delta.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            if isinstance(call, dict):
                yield from _function_text(call.get("function"))
        yield from _function_text(delta.get("function_call"))


def _function_text(function: object) -> Iterator[str]:
    if isinstance(function, dict):
        for key in ("name", "arguments"):
            value = function.get(key)
            if isinstance(value, str):
                yield value


def responses_event_text(event: dict[str, Any]) -> Iterator[str]:
    """Generated text in a Responses API `*.delta` event (output text, refusals, arguments...)."""
    kind = event.get("type")
    delta = event.get("delta")
    if isinstance(kind, str) and kind.endswith(".delta") and isinstance(delta, str):
        yield delta


def responses_event_model(event: dict[str, Any]) -> str | None:
    response = event.get("response")
    if isinstance(response, dict):
        model = response.get("model")
        if isinstance(model, str):
            return model
    return None
