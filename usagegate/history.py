"""Write records with past `created_at` through the log pipeline (tests, demos, imports).

Records go into a new spool segment in `<data_dir>/spool/`, in exactly the format the gateway
appends (see `Gateway._forward`'s record dict), so the BatchWriter prices and inserts them like
live traffic: same ingest code, same dedup tokens, nothing written to the store directly.

Call it while no gateway runs on `data_dir`; the gateway replays the segment when it starts.
(A running BatchWriter retires a caught-up segment as soon as a newer one appears, which would
orphan the live gateway's own segment.)
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from usagegate.logpipe import _segment_name, _segments


def history_record(
    *, org_id: str, user_id: str, created_at: datetime, model: str = "gpt-4o-mini", provider: str = "openai",
    prompt_tokens: int = 0, completion_tokens: int = 0, status: int = 200, latency_ms: int = 500,
    properties: dict[str, str] | None = None, path: str | None = None, error: str = "",
) -> dict[str, Any]:
    """One spool record as the gateway would have written it at `created_at` (an aware datetime)."""
    return {
        "request_id": str(uuid.uuid4()),
        "org_id": org_id,
        "created_at": int(created_at.timestamp() * 1000),
        "user_id": user_id,
        "provider": provider,
        "model": model,
        "request_model": model,
        "method": "POST",
        "path": path or ("/v1/messages" if provider == "anthropic" else "/v1/chat/completions"),
        "status": status,
        "rate_limited": False,
        "stream": False,
        "usage_source": "provider",
        "ttft_ms": None,
        "properties": properties or {},
        "session_id": "", "session_path": "", "session_name": "",
        "error": error,
        "request_body": "", "response_body": "",
        "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
        "cache_read_tokens": 0, "cache_write_tokens": 0, "cache_write_1h_tokens": 0, "reasoning_tokens": 0,
        "latency_ms": latency_ms,
    }


def write_history(data_dir: Path, records: Iterable[dict[str, Any]]) -> Path:
    """Append the records to a new spool segment (fsynced); returns its path."""
    spool = data_dir / "spool"
    spool.mkdir(parents=True, exist_ok=True)
    existing = _segments(spool)
    path = spool / _segment_name((existing[-1] + 1) if existing else 1)
    with open(path, "xb") as handle:
        for record in records:
            handle.write(orjson.dumps(record) + b"\n")
        handle.flush()
        os.fsync(handle.fileno())
    return path
