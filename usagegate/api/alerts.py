"""`POST/GET/DELETE /api/alerts`, `GET /api/alerts/{id}`, `GET /api/alerts/{id}/history`.

The signing secret is in the POST answer only. Webhook destinations are checked here (400 for
private/loopback addresses unless the gateway runs with --allow-private-webhooks; link-local
always) and again by the evaluator at every send.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Request

from usagegate import alerts
from usagegate.api.auth import context, org_of
from usagegate.api.params import parse_limit
from usagegate.netguard import AddressGuard

router = APIRouter()
_guard = AddressGuard()


@router.post("/api/alerts", status_code=201)
async def create_alert(request: Request, body: Any = Body(...), org: str = Depends(org_of)) -> dict[str, Any]:
    """Create a rule; the answer's `secret` signs its webhooks and is not shown again."""
    kind, threshold, window, url = alerts.parse_rule(body)
    ctx = context(request)
    await _guard.check(url, allow_private=ctx.settings.allow_private_webhooks, param="webhook_url")
    rule = alerts.create_rule(ctx.config.conn, org, kind, threshold, window, url)
    return {**rule.as_json(), "secret": rule.secret,
            "signature": f"{alerts.SIGNATURE_HEADER}: sha256=<hex HMAC-SHA256 of the raw body with this secret>"}


@router.get("/api/alerts")
async def list_alerts(request: Request, org: str = Depends(org_of)) -> dict[str, Any]:
    """The org's rules (without secrets)."""
    return {"alerts": [r.as_json() for r in alerts.list_rules(context(request).config.conn, org)]}


@router.get("/api/alerts/{rule_id}")
async def read_alert(rule_id: str, request: Request, org: str = Depends(org_of)) -> dict[str, Any]:
    return alerts.get_rule(context(request).config.conn, org, rule_id).as_json()


@router.get("/api/alerts/{rule_id}/history")
async def alert_history(rule_id: str, request: Request, limit: str | None = None,
                        org: str = Depends(org_of)) -> dict[str, Any]:
    """The rule's deliveries, newest first: user, payload, status, attempts, last error."""
    return {"deliveries": alerts.history(context(request).config.conn, org, rule_id, parse_limit(limit))}


@router.delete("/api/alerts/{rule_id}")
async def delete_alert(rule_id: str, request: Request, org: str = Depends(org_of)) -> dict[str, Any]:
    """Delete a rule and its history; pending deliveries are dropped."""
    alerts.delete_rule(context(request).config.conn, org, rule_id)
    return {"deleted": True, "id": rule_id}
