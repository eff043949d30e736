"""`GET /api/breakdown?by=model|property.<name>`: cost per group and per user within it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from usagegate import analytics
from usagegate.api.auth import context, org_of
from usagegate.api.params import bad_param
from usagegate.api.scope import range_out, read_scope, render

router = APIRouter(tags=["users"])


@router.get("/api/breakdown")
async def breakdown(
    request: Request,
    org: str = Depends(org_of),
    by: str | None = Query(None, description="model or property.<name> (e.g. property.plan)."),
    from_: str | None = Query(None, alias="from", description="Inclusive start (default: this UTC month)."),
    to: str | None = Query(None, description="Exclusive end."),
) -> dict[str, Any]:
    """Per group: users, requests, cost, and mean / median / p90 cost per user. Grouping is
    per request, so a user who changed plan counts in both groups; requests without the
    property form the group whose value is null."""
    by = request.query_params.get("by")
    if by == "model":
        prop = None
    elif by and by.startswith("property.") and by[len("property."):].strip():
        prop = by[len("property."):].strip().lower()
    else:
        raise bad_param("by", "'by' must be 'model' or 'property.<name>'.")
    scope = await read_scope(request, org)
    groups = await analytics.breakdown(context(request).store, scope, prop)
    return {**range_out(scope), "by": by, "groups": render(groups)}
