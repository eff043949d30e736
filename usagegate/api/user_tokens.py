"""User-scoped tokens (`POST /api/users/{id}/tokens`) and what they can read (`GET /api/usage/me`).

Listing and revoking live under `/api/user-tokens`, not `/api/users/{id}/...`, so they can never
be shadowed by (or mistaken for) the per-user analytics routes such as `DELETE /api/users/{id}`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Depends, Request

from usagegate.api.auth import context, org_of
from usagegate.api.params import ApiError, bad_param, time_range
# A module import: usagegate.own_usage imports api.params, which loads this package first.
from usagegate import own_usage as usage
from usagegate.user_tokens import UserToken, create_user_token, list_user_tokens, revoke_user_token, user_for_token

router = APIRouter()
USAGE_ME_PARAMS = {"from", "to"}


def _render(info: UserToken) -> dict[str, Any]:
    return {
        "id": info.token_id, "user_id": info.user_id, "prefix": info.prefix + "…",
        "created_at": datetime.fromtimestamp(info.created_at, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "revoked": info.revoked,
    }


@router.post("/api/users/{user_id:path}/tokens", status_code=201)
async def create_token(user_id: str, request: Request, org: str = Depends(org_of)) -> dict[str, Any]:
    """A new token that reads only this user's usage; `token` is shown once and stored hashed."""
    if len(user_id) > 256:
        raise bad_param("user_id", "User ids are at most 256 characters.")
    token, info = create_user_token(context(request).config.conn, org, user_id)
    return {**_render(info), "token": token}


@router.get("/api/user-tokens")
async def list_tokens(request: Request, user_id: str | None = None, org: str = Depends(org_of)) -> dict[str, Any]:
    """The org's user tokens (never the tokens themselves), optionally for one user."""
    return {"tokens": [_render(t) for t in list_user_tokens(context(request).config.conn, org, user_id)]}


@router.delete("/api/user-tokens/{token_id}")
async def revoke_token(token_id: str, request: Request, org: str = Depends(org_of)) -> dict[str, Any]:
    """Revoke a user token at once."""
    if not revoke_user_token(context(request).config.conn, org, token_id):
        raise ApiError(404, f"No active user token {token_id!r}.", "token_id")
    return {"revoked": True, "id": token_id}


def user_of(request: Request) -> tuple[str, str]:
    """(org_id, user_id) of a user token in `Authorization: Bearer`; 401 otherwise (org keys too)."""
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header[:7].lower() == "bearer " else ""
    found = user_for_token(context(request).config.conn, token) if token else None
    if found is None:
        raise ApiError(401, "Missing or invalid user token: send 'Authorization: Bearer <user token>' "
                            "(an app creates one with POST /api/users/{id}/tokens).")
    return found


@router.get("/api/usage/me")
async def usage_me(request: Request, who: tuple[str, str] = Depends(user_of)) -> dict[str, Any]:
    """The token's user's own usage for [from, to) (default this month) and remaining budget."""
    for name in request.query_params:
        if name not in USAGE_ME_PARAMS:
            raise bad_param(name, f"Unknown parameter {name!r}: a user token reads only its own usage; "
                                  "parameters are 'from' and 'to'.")
    span = time_range(request.query_params.get("from"), request.query_params.get("to"))
    ctx = context(request)
    return await usage.own_usage(ctx.store, ctx.config.conn, who[0], who[1], span)
