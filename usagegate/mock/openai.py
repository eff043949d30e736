"""OpenAI answers: chat completions, completions, embeddings, responses and models, streamed and
not, in the real API's shapes (usage included when asked for)."""

from __future__ import annotations

import base64
import functools
import hashlib
from array import array
from typing import Any

from usagegate.mock.answers import (
    CREATED_SLOT,
    ID_SLOTS,
    MODELS,
    PIECE,
    SSE,
    Answer,
    BadRequest,
    Hints,
    Reply,
    answer,
    dumps,
    piece_events,
    sse,
    text_of,
    tokens_for,
)

# --------------------------------------------------------------------------- OpenAI


def _chat_usage(a: Answer) -> dict[str, Any]:
    completion = a.output_tokens + a.reasoning_tokens
    return {
        "prompt_tokens": a.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": a.prompt_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": a.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": a.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def openai_chat(body: dict[str, Any], hints: Hints) -> Reply:
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise BadRequest("'messages' is a required property")
    prompt = "\n".join(text_of(m.get("content")) for m in messages if isinstance(m, dict))
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    a = answer(body, prompt, limit, hints)
    model = body.get("model", "")
    finish = "length" if a.truncated else "stop"
    rid, created = "chatcmpl-" + ID_SLOTS[0], CREATED_SLOT
    if not body.get("stream"):
        return Reply(200, body=dumps({
            "id": rid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": a.text, "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": finish,
            }],
            "usage": _chat_usage(a),
            "service_tier": "default",
            "system_fingerprint": "fp_mock",
        }))
    with_usage = _include_usage(body)

    def chunk(delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
            "service_tier": "default", "system_fingerprint": "fp_mock",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if with_usage:  # OpenAI only adds the key at all when usage was asked for
            data["usage"] = None
        return data

    events = [sse(chunk({"role": "assistant", "content": "", "refusal": None}, None))]
    events += piece_events(chunk({"content": PIECE}, None), a.pieces)
    events.append(sse(chunk({}, finish)))
    if with_usage:
        events.append(sse({
            "id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
            "service_tier": "default", "system_fingerprint": "fp_mock",
            "choices": [], "usage": _chat_usage(a),
        }))
    events.append(b"data: [DONE]\n\n")
    return Reply(200, content_type=SSE, events=events)


def openai_completions(body: dict[str, Any], hints: Hints) -> Reply:
    prompt = body.get("prompt", "")
    prompt_text = text_of(prompt) if isinstance(prompt, list) else str(prompt)
    a = answer(body, prompt_text, body.get("max_tokens", 16), hints)  # the API's default is 16
    model = body.get("model", "")
    finish = "length" if a.truncated else "stop"
    rid, created = "cmpl-" + ID_SLOTS[0], CREATED_SLOT
    usage = {
        "prompt_tokens": a.prompt_tokens,
        "completion_tokens": a.output_tokens,
        "total_tokens": a.prompt_tokens + a.output_tokens,
    }
    if not body.get("stream"):
        return Reply(200, body=dumps({
            "id": rid, "object": "text_completion", "created": created, "model": model,
            "choices": [{"text": a.text, "index": 0, "logprobs": None, "finish_reason": finish}],
            "usage": usage, "system_fingerprint": "fp_mock",
        }))
    with_usage = _include_usage(body)

    def chunk(text: str, finish_reason: str | None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": rid, "object": "text_completion", "created": created, "model": model,
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}],
            "system_fingerprint": "fp_mock",
        }
        if with_usage:
            data["usage"] = None
        return data

    events = piece_events(chunk(PIECE, None), a.pieces)
    events.append(sse(chunk("", finish)))
    if with_usage:
        events.append(sse({
            "id": rid, "object": "text_completion", "created": created, "model": model,
            "choices": [], "usage": usage, "system_fingerprint": "fp_mock",
        }))
    events.append(b"data: [DONE]\n\n")
    return Reply(200, content_type=SSE, events=events)


def openai_embeddings(body: dict[str, Any], hints: Hints) -> Reply:
    raw = body.get("input")
    if raw is None:
        raise BadRequest("'input' is a required property")
    # A token array (list of ints) is one input; a list of strings or of token arrays is many.
    items: list[Any] = raw if isinstance(raw, list) and raw and not isinstance(raw[0], int) else [raw]
    model = str(body.get("model", ""))
    dims = body.get("dimensions")
    if not isinstance(dims, int) or dims <= 0:
        dims = 3072 if "large" in model else 1536
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    prompt_tokens = 0
    for index, item in enumerate(items):
        if isinstance(item, list):
            prompt_tokens += max(1, len(item))
            seed_bytes = dumps(item)
        else:
            prompt_tokens += tokens_for(str(item))
            seed_bytes = str(item).encode()
        vector = _vector(seed_bytes + model.encode(), dims)
        embedding: Any = base64.b64encode(vector.tobytes()).decode() if as_base64 else vector.tolist()
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    return Reply(200, body=dumps({
        "object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }))


def _vector(seed: bytes, dims: int) -> array[float]:
    """A deterministic float32 vector in [-1, 1): hash bytes mapped to floats, then repeated."""
    digest = hashlib.blake2b(seed, digest_size=64).digest()
    base = [(b - 128) / 128.0 for b in digest]
    return array("f", (base * (dims // 64 + 1))[:dims])


def _responses_usage(a: Answer) -> dict[str, Any]:
    output = a.output_tokens + a.reasoning_tokens
    return {
        "input_tokens": a.prompt_tokens,
        "input_tokens_details": {"cached_tokens": a.cached_tokens},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": a.reasoning_tokens},
        "total_tokens": a.prompt_tokens + output,
    }


def openai_responses(body: dict[str, Any], hints: Hints) -> Reply:
    raw = body.get("input", "")
    prompt = text_of(raw) if isinstance(raw, list) else str(raw)
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        prompt = instructions + "\n" + prompt
    limit = body.get("max_output_tokens")
    a = answer(body, prompt, limit, hints)
    rid, mid, created = "resp_" + ID_SLOTS[0], "msg_" + ID_SLOTS[1], CREATED_SLOT
    part_done = {"type": "output_text", "text": a.text, "annotations": [], "logprobs": []}
    item_done = {
        "id": mid, "type": "message", "status": "incomplete" if a.truncated else "completed",
        "role": "assistant", "content": [part_done],
    }

    def response(status: str, output: list[Any], usage: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "id": rid, "object": "response", "created_at": created, "status": status,
            "background": False, "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": instructions, "max_output_tokens": limit, "model": body.get("model", ""),
            "output": output, "parallel_tool_calls": True, "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None}, "service_tier": "default", "store": True,
            "temperature": 1.0, "text": {"format": {"type": "text"}}, "tool_choice": "auto",
            "tools": [], "top_p": 1.0, "truncation": "disabled", "usage": usage, "user": None,
            "metadata": {},
        }

    final_status = "incomplete" if a.truncated else "completed"
    final = response(final_status, [item_done], _responses_usage(a))
    if not body.get("stream"):
        return Reply(200, body=dumps(final))
    seq = iter(range(1 << 30))

    def event(kind: str, **data: Any) -> bytes:
        return sse({"type": kind, "sequence_number": next(seq), **data}, event=kind)

    where = {"item_id": mid, "output_index": 0, "content_index": 0}
    events = [
        event("response.created", response=response("in_progress", [], None)),
        event("response.in_progress", response=response("in_progress", [], None)),
        event("response.output_item.added", output_index=0, item={
            "id": mid, "type": "message", "status": "in_progress", "role": "assistant", "content": [],
        }),
        event("response.content_part.added", **where, part={
            "type": "output_text", "text": "", "annotations": [], "logprobs": [],
        }),
    ]
    events += [event("response.output_text.delta", **where, delta=p, logprobs=[]) for p in a.pieces]
    events += [
        event("response.output_text.done", **where, text=a.text, logprobs=[]),
        event("response.content_part.done", **where, part=part_done),
        event("response.output_item.done", output_index=0, item=item_done),
        event("response." + final_status, response=final),
    ]
    return Reply(200, content_type=SSE, events=events)


@functools.cache
def _models_body() -> bytes:
    data = [{"id": m, "object": "model", "created": 1700000000, "owned_by": "mock"} for m in MODELS]
    return dumps({"object": "list", "data": data})


def openai_models() -> Reply:
    return Reply(200, body=_models_body())
