"""The dashboard: server-rendered Jinja2 pages on the same FastAPI app as /api (never the proxy path).

Map: `sessions` (server-side sessions in config.db), `auth` (sign-in/out, the signed-in and CSRF
checks), `pages` (Users tab, user page, profitability), `charts` (plotly figure specs built from
analytics results), `assets` (CSS/JS from `usagegate/static`, plotly.js from the plotly wheel).
Pages call `usagegate.analytics` in-process; no SQL lives here.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from usagegate.web import assets, auth, pages
from usagegate.web.auth import CsrfRejected, LoginRequired
from usagegate.web.render import install_filters

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def install(app: FastAPI) -> None:
    """Add the dashboard routes, the static assets and the sign-in redirect to `app`."""
    templates = Jinja2Templates(directory=str(TEMPLATES))
    install_filters(templates.env)
    templates.env.globals["asset_version"] = assets.asset_version()
    app.state.templates = templates
    app.include_router(assets.router, include_in_schema=False)
    app.include_router(auth.router, include_in_schema=False)
    app.include_router(pages.router, include_in_schema=False)

    @app.exception_handler(LoginRequired)
    async def _login_required(request: Request, exc: LoginRequired) -> Response:
        return RedirectResponse(auth.login_url(request), status_code=303)

    @app.exception_handler(CsrfRejected)
    async def _csrf_rejected(request: Request, exc: CsrfRejected) -> Response:
        return HTMLResponse(
            "<!doctype html><title>Refused</title><p>This form has expired or did not come from the "
            "dashboard (missing or wrong CSRF token). Go back, reload the page and try again.</p>",
            status_code=403,
        )
