"""`POST /api/import`: append records (past usage, or usage logged elsewhere) to the log pipeline."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request

from usagegate.api.auth import context, org_of
from usagegate.api.params import ApiError, bad_param
from usagegate.importer import MAX_RECORDS, spool_record

router = APIRouter(tags=["import"])

IMPORT_BODY = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["records"],
        "properties": {"records": {"type": "array", "maxItems": MAX_RECORDS, "items": {
            "type": "object", "required": ["model", "created_at"],
            "properties": {
                "user_id": {"type": "string"}, "created_at": {"type": "string", "format": "date-time"},
                "provider": {"type": "string", "enum": ["openai", "anthropic"]}, "model": {"type": "string"},
                "prompt_tokens": {"type": "integer"}, "completion_tokens": {"type": "integer"},
                "cache_read_tokens": {"type": "integer"}, "cache_write_tokens": {"type": "integer"},
                "reasoning_tokens": {"type": "integer"}, "status": {"type": "integer"},
                "latency_ms": {"type": "integer"}, "properties": {"type": "object"},
                "request_id": {"type": "string", "format": "uuid"}, "rate_limited": {"type": "boolean"},
            }}}},
    }}}}
}


@router.post("/api/import", openapi_extra=IMPORT_BODY)
async def import_records(request: Request, org: str = Depends(org_of)) -> dict[str, Any]:
    """Log up to 10,000 records for this org with their own `created_at`; they are priced from
    tokens and model by the batch writer, like proxied requests, and appear within seconds.
    Re-sending a record with the same `request_id` adds a second row: send ids you keep."""
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise bad_param("body", "The body must be JSON: {\"records\": [...]}.") from None
    items = body.get("records") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise bad_param("records", "The body must be {\"records\": [...]}.")
    if len(items) > MAX_RECORDS:
        raise bad_param("records", f"At most {MAX_RECORDS} records per call.")
    records = [spool_record(item, org, i) for i, item in enumerate(items)]  # all validated before any is written
    spool = context(request).spool
    for record in records:
        if not spool.append(record):
            raise ApiError(503, f"The spool cannot be written: {spool.last_error}")
    return {"imported": len(records)}
