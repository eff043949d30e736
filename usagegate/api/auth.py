"""Who is calling /api: `Authorization: Bearer <usagegate key>` → org id."""

from __future__ import annotations

from fastapi import Request

from usagegate.api.params import ApiError
from usagegate.context import AppContext


def context(request: Request) -> AppContext:
    return request.app.state.ctx  # type: ignore[no-any-return]


async def org_of(request: Request) -> str:
    """The caller's org id; raises ApiError 401 for a missing or unknown key. Async, though it
    does not await: FastAPI runs a plain-def dependency on a worker thread, a hop per request."""
    header = request.headers.get("authorization", "")
    key = header[7:].strip() if header[:7].lower() == "bearer " else ""
    org = context(request).keyring.org_for(key) if key else None
    if org is None:
        raise ApiError(401, "Missing or invalid usagegate key: send 'Authorization: Bearer <key>'.")
    return org


async def config_changed(request: Request) -> None:
    """The proxy workers would notice within a second; telling them now makes the API's answer
    true at once (a limit set by a 200 is enforced on the next request)."""
    notify = getattr(request.app.state, "notify_proxies", None)
    if notify is not None:
        await notify()
