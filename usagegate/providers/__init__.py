"""Usage extraction for OpenAI and Anthropic traffic, the proxy's hot path.

- `request_facts(provider, path, body)`: model, stream, user, max_tokens of a request, parsed once.
- `prepare_stream_request(provider, path, parsed)`: the body with `include_usage` injected, or None.
- `usage_from_json(provider, path, body)`: `Usage` of a non-streamed response, or None.
- `usage_from_cut_body(provider, path, partial, request)`: `Usage` of a response the upstream
  broke off mid-body (provider's if it arrived, else estimated); `estimate_usage(request, text)`.
- `stream_tracker(provider, path, strip_usage_chunk=..., request=...)`: a `StreamTracker`
  that relays SSE chunks (`feed`, `flush`) and reports `usage()` / `saw_usage`.

One module per provider (`openai`, `anthropic`) maps its usage objects onto `Usage`
(DESIGN §2); `body` and `stream` hold the parsing, `request` the request side.
"""

from __future__ import annotations

from .body import usage_from_cut_body, usage_from_json
from .request import (
    RequestFacts,
    estimate_prompt_tokens,
    estimate_usage,
    prepare_stream_request,
    request_facts,
)
from .stream import StreamTracker, stream_tracker

__all__ = [
    "RequestFacts",
    "StreamTracker",
    "estimate_prompt_tokens",
    "estimate_usage",
    "prepare_stream_request",
    "request_facts",
    "stream_tracker",
    "usage_from_cut_body",
    "usage_from_json",
]
