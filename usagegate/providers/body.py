"""Usage from a complete (non-streamed) JSON response body.

Small bodies are parsed whole. Big ones (embeddings with thousands of floats, long
completions) are not: the usage object is the last `"usage":` key in every OpenAI and
Anthropic response and holds only numbers, small strings and nested count objects, so we
parse just that slice, and take the model from the first `"model":` key, which precedes any
nested object that could have one. Anything unexpected falls back to the full parse.

`usage_from_cut_body` is for the rare body the upstream broke off mid-way (never on the normal
path): the usage object when it arrived whole, else an estimate from the request and the
generated text that did arrive.
"""

from __future__ import annotations

import re
from typing import Any

from ..records import Usage
from . import anthropic, openai
from ._json import loads_object
from .request import estimate_usage

# Bodies up to this size are parsed whole (a few µs); bigger ones by slices.
SLICE_ABOVE = 16 * 1024
_USAGE_KEY = b'"usage"'
_MODEL_KEY = b'"model"'
_HEAD = 4096
# A string value holding generated text, in any OpenAI or Anthropic response body (message
# content and refusals, completion and content-block text, tool-call arguments, thinking); the
# last one may be cut before its closing quote. Keys holding objects (Anthropic tool `input`) or
# ids are not text the model wrote as such, or not matched.
_TEXT_VALUE = re.compile(rb'"(?:content|text|refusal|arguments|thinking)"\s*:\s*"((?:[^"\\]|\\.)*)')


def usage_from_json(provider: str, path: str, body: bytes, *, slice_above: int = SLICE_ABOVE) -> Usage | None:
    """Normalised usage of a response body; None when it has none (errors, not JSON)."""
    if not body or not isinstance(body, (bytes, bytearray)):
        return None
    at = body.rfind(_USAGE_KEY)
    if at < 0:
        return None
    normalise = anthropic.normalise if provider == "anthropic" else openai.normalise
    is_usage = anthropic.is_usage if provider == "anthropic" else openai.is_usage
    if len(body) > slice_above:
        usage = _object_at(body, at + len(_USAGE_KEY))
        if usage is not None and is_usage(usage):
            return normalise(usage, _model(body, at))
    obj = loads_object(body)
    if obj is None:
        return None
    usage_obj = obj.get("usage")
    if not isinstance(usage_obj, dict):
        return None
    model = obj.get("model")
    return normalise(usage_obj, model if isinstance(model, str) else None)


def usage_from_cut_body(provider: str, path: str, partial: bytes, request: dict[str, Any] | None) -> Usage:
    """Usage of a response body that broke off after `partial`: the provider's usage object
    if it arrived whole (`source="provider"`), else an estimate (`source="estimated"`) of the
    request's prompt and the generated text in `partial`. A lower bound either way: a
    non-streamed answer was generated whole before it was sent."""
    normalise = anthropic.normalise if provider == "anthropic" else openai.normalise
    is_usage = anthropic.is_usage if provider == "anthropic" else openai.is_usage
    at = partial.rfind(_USAGE_KEY)
    if at >= 0:
        usage = _object_at(partial, at + len(_USAGE_KEY))
        if usage is not None and is_usage(usage):
            return normalise(usage, _model(partial, at))
    found = _string_value(partial, _MODEL_KEY, 0, min(len(partial), _HEAD))
    text = "".join(_string_text(raw) for raw in _TEXT_VALUE.findall(partial))
    return estimate_usage(request, text, found[0] if found is not None else None)


def _string_text(raw: bytes) -> str:
    """A JSON string's content (without quotes), which may end mid-escape or mid-character."""
    loaded = loads_object(b'{"s":"' + raw + b'"}')
    if loaded is not None and isinstance(loaded.get("s"), str):
        return loaded["s"]  # type: ignore[no-any-return]
    # Cut inside an escape or a UTF-8 sequence: near enough for a count.
    return raw.decode("utf-8", "replace")


def _object_at(body: bytes | bytearray, after_key: int) -> dict[str, Any] | None:
    """The JSON object value following a key that ends at `after_key`, if it is one."""
    colon = body.find(b":", after_key, after_key + 16)
    if colon < 0:
        return None
    start = colon + 1
    while start < len(body) and body[start] in b" \t\r\n":
        start += 1
    if body[start : start + 1] != b"{":
        return None
    # Usage objects hold no strings with braces, so counting braces finds the end.
    depth = 0
    pos = start
    while True:
        opening = body.find(b"{", pos)
        closing = body.find(b"}", pos)
        if closing < 0:
            return None
        if 0 <= opening < closing:
            depth += 1
            pos = opening + 1
        else:
            depth -= 1
            pos = closing + 1
            if depth == 0:
                return loads_object(body[start:pos])
        if pos - start > 8192:
            return None


def _model(body: bytes | bytearray, usage_at: int) -> str | None:
    """The top-level `model` string: the first `"model":` key near the top (chat, messages,
    responses), else one right before the usage key (embeddings), else the first anywhere."""
    found = _string_value(body, _MODEL_KEY, 0, min(len(body), _HEAD))
    if found is not None:
        return found[0]
    found = _string_value(body, _MODEL_KEY, max(0, usage_at - _HEAD), usage_at)
    if found is not None and not body[found[1] : usage_at].strip(b", \t\r\n"):
        return found[0]
    found = _string_value(body, _MODEL_KEY, 0, len(body))
    return found[0] if found is not None else None


def _string_value(body: bytes | bytearray, key: bytes, start: int, end: int) -> tuple[str, int] | None:
    """(value, offset after it) of the first `key: "value"` in body[start:end] whose value is
    a plain string (no escapes)."""
    at = body.find(key, start, end)
    while at >= 0:
        pos = at + len(key)
        while body[pos : pos + 1] in (b" ", b"\t", b"\r", b"\n"):
            pos += 1
        if body[pos : pos + 1] == b":":
            pos += 1
            while body[pos : pos + 1] in (b" ", b"\t", b"\r", b"\n"):
                pos += 1
            if body[pos : pos + 1] == b'"':
                close = body.find(b'"', pos + 1, pos + 512)
                if close > 0 and b"\\" not in body[pos + 1 : close]:
                    try:
                        return body[pos + 1 : close].decode(), close + 1
                    except UnicodeDecodeError:
                        return None
            return None
        at = body.find(key, at + 1, end)
    return None
