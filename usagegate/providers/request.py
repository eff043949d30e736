"""What the proxy needs from a request body, parsed once.

`request_facts` never raises; `prepare_stream_request` rewrites an OpenAI streaming body so
the upstream reports usage; `estimate_prompt_tokens` counts a prompt offline when the
upstream never said how many tokens it read, and `estimate_usage` makes the whole estimated
`Usage` of an answer (a stream without usage, an answer cut short, a client gone before it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..records import Usage
from ..tokenizer import count_tokens
from ._json import dumps, loads_object

# Paths whose streams accept `stream_options.include_usage`.
_USAGE_OPTION_PATHS = ("/chat/completions", "/completions")
_OPENAI_MAX_KEYS = ("max_completion_tokens", "max_tokens", "max_output_tokens")
_ANTHROPIC_MAX_KEYS = ("max_tokens",)
# Parts of a request that are prompt text, and keys under them that are not.
_PROMPT_KEYS = ("system", "instructions", "messages", "prompt", "input", "tools", "functions")
_NOT_TEXT = frozenset(
    {"role", "type", "id", "tool_call_id", "tool_use_id", "cache_control", "image_url", "url",
     "data", "file_data", "source", "file_id", "detail", "media_type", "signature", "encrypted_content"}
)
# Per-message framing tokens (role markers), as in OpenAI's token-counting guide.
_PER_MESSAGE = 3
_PER_REQUEST = 3


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """Fields of a request body; each is None when absent or of the wrong type."""

    model: str | None = None
    stream: bool = False
    # OpenAI body `user`, Anthropic `metadata.user_id`.
    user: str | None = None
    # max_completion_tokens / max_tokens / max_output_tokens (OpenAI), max_tokens (Anthropic).
    max_tokens: int | None = None
    # The body as a dict; None when it is not a JSON object.
    parsed: dict[str, Any] | None = None


_NO_FACTS = RequestFacts()


def request_facts(provider: str, path: str, body: bytes) -> RequestFacts:
    """Parse a request body once. Never raises: garbage gives `RequestFacts()`."""
    if not body or not isinstance(body, (bytes, bytearray, memoryview)):
        return _NO_FACTS
    obj = loads_object(body)
    if obj is None:
        return _NO_FACTS
    model = obj.get("model")
    if provider == "anthropic":
        metadata = obj.get("metadata")
        user = metadata.get("user_id") if isinstance(metadata, dict) else None
        max_keys: tuple[str, ...] = _ANTHROPIC_MAX_KEYS
    else:
        user = obj.get("user")
        max_keys = _OPENAI_MAX_KEYS
    max_tokens = None
    for key in max_keys:
        value = obj.get(key)
        if type(value) is int and value >= 0:
            max_tokens = value
            break
    return RequestFacts(
        model=model if isinstance(model, str) else None,
        stream=obj.get("stream") is True,
        user=user if isinstance(user, str) else None,
        max_tokens=max_tokens,
        parsed=obj,
    )


def prepare_stream_request(provider: str, path: str, parsed: dict[str, Any]) -> bytes | None:
    """The body to send instead, with `stream_options.include_usage = true`, or None.

    Only OpenAI chat/completions and completions streams that did not ask for usage are
    rewritten (other `stream_options` keys are kept); a non-None result means the client did
    not ask for the usage chunk, so the stream tracker must strip it (`strip_usage_chunk`).
    """
    if provider == "anthropic" or parsed.get("stream") is not True:
        return None
    if not path.endswith(_USAGE_OPTION_PATHS):
        return None
    options = parsed.get("stream_options")
    if isinstance(options, dict):
        if options.get("include_usage") is True:
            return None
        options = {**options, "include_usage": True}
    else:
        options = {"include_usage": True}
    return dumps({**parsed, "stream_options": options})


def estimate_prompt_tokens(request: dict[str, Any] | None) -> int:
    """Offline estimate of the input tokens of a request (messages, prompt, input, system,
    instructions, tool definitions). 0 when there is no request."""
    if not request:
        return 0
    texts: list[str] = []
    framing = 0
    for key in _PROMPT_KEYS:
        value = request.get(key)
        if value is None:
            continue
        if key in ("messages", "input") and isinstance(value, list):
            framing += _PER_MESSAGE * len(value)
        if key == "prompt" and isinstance(value, list) and value and all(type(v) is int for v in value):
            framing += len(value)  # a prompt given as token ids
            continue
        _collect_text(value, texts, 0)
    if not texts and not framing:
        return 0
    return _PER_REQUEST + framing + count_tokens("\n".join(texts))


def estimate_usage(request: dict[str, Any] | None, generated: str = "", model: str | None = None) -> Usage:
    """Offline estimate (`source="estimated"`) of an answer's usage: the request's prompt and the
    text `generated` so far. `model` defaults to the request's."""
    if model is None and request:
        asked = request.get("model")
        model = asked if isinstance(asked, str) else None
    return Usage(
        prompt_tokens=estimate_prompt_tokens(request),
        completion_tokens=count_tokens(generated),
        model=model,
        source="estimated",
    )


def _collect_text(value: object, out: list[str], depth: int) -> None:
    if depth > 32:
        return
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, list):
        for item in value:
            _collect_text(item, out, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key in _NOT_TEXT:
                continue
            if isinstance(item, (dict, list)) and key in ("parameters", "input_schema", "input"):
                # Tool schemas and tool-call inputs are sent as JSON text.
                out.append(dumps(item).decode())
            else:
                _collect_text(item, out, depth + 1)
