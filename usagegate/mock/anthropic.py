"""Anthropic answers: messages, streamed (message_start … message_delta events) and not."""

from __future__ import annotations

from typing import Any

from usagegate.mock.answers import (
    ID_SLOTS,
    PIECE,
    SSE,
    BadRequest,
    Hints,
    Reply,
    answer,
    dumps,
    piece_events,
    sse,
    text_of,
)

# --------------------------------------------------------------------------- Anthropic


def anthropic_messages(body: dict[str, Any], hints: Hints) -> Reply:
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise BadRequest("messages: Field required")
    prompt = "\n".join(text_of(m.get("content")) for m in messages if isinstance(m, dict))
    system = body.get("system")
    if system:
        prompt = text_of(system) + "\n" + prompt
    a = answer(body, prompt, body.get("max_tokens"), hints)
    model = body.get("model", "")
    mid = "msg_" + ID_SLOTS[0]
    stop = "max_tokens" if a.truncated else "end_turn"
    # Anthropic's input_tokens excludes cache reads and writes, unlike OpenAI's prompt_tokens.
    usage_in = {
        "input_tokens": a.prompt_tokens - a.cached_tokens - a.cache_creation_tokens,
        "cache_creation_input_tokens": a.cache_creation_tokens,
        "cache_read_input_tokens": a.cached_tokens,
    }

    def message(content: list[Any], stop_reason: str | None, output_tokens: int) -> dict[str, Any]:
        return {
            "id": mid, "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": stop_reason, "stop_sequence": None,
            "usage": {**usage_in, "output_tokens": output_tokens, "service_tier": "standard"},
        }

    if not body.get("stream"):
        return Reply(200, body=dumps(message([{"type": "text", "text": a.text}], stop, a.output_tokens)))

    def event(kind: str, **data: Any) -> bytes:
        return sse({"type": kind, **data}, event=kind)

    events = [
        # The real API reports a placeholder output count here and the total in message_delta.
        event("message_start", message=message([], None, 1)),
        event("content_block_start", index=0, content_block={"type": "text", "text": ""}),
        event("ping"),
    ]
    events += piece_events(
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": PIECE}},
        a.pieces,
        event="content_block_delta",
    )
    events += [
        event("content_block_stop", index=0),
        event("message_delta", delta={"stop_reason": stop, "stop_sequence": None},
              usage={"output_tokens": a.output_tokens}),
        event("message_stop"),
    ]
    return Reply(200, content_type=SSE, events=events)
