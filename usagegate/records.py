"""Value types shared by the proxy, the log pipeline and the store.

`Usage` is what a provider said (or we estimated) a request consumed, already normalised
across providers (DESIGN §2): `prompt_tokens` counts every input token, cache reads and
cache writes included; `completion_tokens` includes `reasoning_tokens`.

A logged request travels through the spool as a plain dict whose keys are `RECORD_FIELDS`
(plus the bodies); the writer adds `cost_usd`. One more key lives only in the spool: `billed`
(absent = False) marks an error row the provider bills all the same — the upstream answered 2xx,
then broke off, and the row carries the tokens produced before the cut (status 502/504).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    # The part of cache_write_tokens written with a 1-hour TTL (priced higher than 5-minute writes).
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0
    # The model the provider says answered, when the body names it.
    model: str | None = None
    # "provider" when the numbers came from the upstream, "estimated" when we counted them.
    source: str = "provider"

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


# Columns of one spooled record, in store order (bodies and cost are added separately).
RECORD_FIELDS: tuple[str, ...] = (
    "request_id",
    "org_id",
    "created_at",  # epoch milliseconds, UTC
    "user_id",
    "provider",
    "model",
    "request_model",
    "method",
    "path",
    "status",
    "rate_limited",
    "stream",
    "prompt_tokens",
    "completion_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "reasoning_tokens",
    "usage_source",
    "latency_ms",
    "ttft_ms",
    "properties",
    "session_id",
    "session_path",
    "session_name",
    "error",
    "request_body",
    "response_body",
)
