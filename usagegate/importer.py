"""Records logged elsewhere (or history) → spool records, validated (`POST /api/import`).

An imported record goes through the same pipeline as a proxied one: spool → batch writer
(which prices it from its tokens and model) → raw table and rollups. Like Helicone's async
logging, this lets usage made outside the proxy, or past usage, count per user.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from usagegate.errors import BadRequest
from usagegate.identity import MAX_PROPERTY_VALUE, clean_user_id

MAX_RECORDS = 10_000
PROVIDERS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}
TOKEN_FIELDS = ("prompt_tokens", "completion_tokens", "cache_read_tokens", "cache_write_tokens",
                "cache_write_1h_tokens", "reasoning_tokens")


def spool_record(item: Any, org_id: str, index: int) -> dict[str, Any]:
    """One validated spool record; raises BadRequest naming `records[i].field`."""
    where = f"records[{index}]"
    if not isinstance(item, dict):
        raise BadRequest(f"{where} must be an object.", param=where)

    def field(name: str) -> str:
        return f"{where}.{name}"

    provider = item.get("provider", "openai")
    if provider not in PROVIDERS:
        raise BadRequest(f"{field('provider')} must be one of: {', '.join(PROVIDERS)}.", param=field("provider"))
    model = item.get("model")
    if not isinstance(model, str) or not model.strip():
        raise BadRequest(f"{field('model')} is required (the model that answered).", param=field("model"))
    user = item.get("user_id", "")
    if not isinstance(user, str):
        raise BadRequest(f"{field('user_id')} must be a string.", param=field("user_id"))
    record: dict[str, Any] = {
        "request_id": _request_id(item.get("request_id"), field("request_id")),
        "org_id": org_id,
        "created_at": _millis(item.get("created_at"), field("created_at")),
        "user_id": clean_user_id(user, field("user_id")),
        "provider": provider,
        "model": model.strip(),
        "request_model": str(item.get("request_model") or model).strip(),
        "method": "POST",
        "path": str(item.get("path") or PROVIDERS[provider]),
        "status": _int(item.get("status", 200), field("status"), 100, 599),
        "rate_limited": bool(item.get("rate_limited", False)),
        "stream": bool(item.get("stream", False)),
        "usage_source": "provider",
        "latency_ms": _int(item.get("latency_ms", 0), field("latency_ms"), 0, 2**32 - 1),
        "ttft_ms": None if item.get("ttft_ms") is None else _int(item["ttft_ms"], field("ttft_ms"), 0, 2**32 - 1),
        "properties": _properties(item.get("properties", {}), field("properties")),
        "session_id": str(item.get("session_id", ""))[:256],
        "session_path": "", "session_name": "",
        "error": str(item.get("error", ""))[:1024],
        "request_body": "", "response_body": "",
    }
    for name in TOKEN_FIELDS:
        record[name] = _int(item.get(name, 0), field(name), 0, 2**63 - 1)
    return record


def _request_id(value: Any, param: str) -> str:
    if value is None:
        return str(uuid.uuid4())
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise BadRequest(f"{param} must be a UUID.", param=param) from None


def _millis(value: Any, param: str) -> int:
    """created_at as epoch milliseconds (int) or ISO 8601 (UTC when no offset) → epoch ms."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
            return int(moment.timestamp() * 1000)
    raise BadRequest(f"{param} must be an ISO 8601 datetime or epoch milliseconds.", param=param)


def _int(value: Any, param: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(f"{param} must be an integer from {low} to {high}.", param=param)
    return value


def _properties(value: Any, param: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise BadRequest(f"{param} must be an object of strings.", param=param)
    out = {}
    for name, item in value.items():
        if not isinstance(item, str) or len(item) > MAX_PROPERTY_VALUE:
            raise BadRequest(f"{param}.{name} must be a string of at most {MAX_PROPERTY_VALUE} characters.", param=param)
        out[str(name).strip().lower()] = item.strip()
    return out
