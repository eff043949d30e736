"""The JSON analytics API (FastAPI, OpenAPI at /docs), one error shape for every failure."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from usagegate.api import alerts as alerts_routes
from usagegate.api import anomalies as anomalies_routes
from usagegate.api import breakdown as breakdown_routes
from usagegate.api import export as export_routes
from usagegate.api import imports as import_routes
from usagegate.api import limits as limits_routes
from usagegate.api import plans as plans_routes
from usagegate.api import prices as prices_routes
from usagegate.api import requests as requests_routes
from usagegate.api import user_tokens as user_tokens_routes
from usagegate.api import users as users_routes
from usagegate.api.params import ApiError
from usagegate.errors import UsagegateError

log = logging.getLogger("usagegate.api")


def error_response(status: int, message: str, param: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "message": message, "param": param}}, status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.param)

    @app.exception_handler(UsagegateError)
    async def _our_error(request: Request, exc: UsagegateError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.param)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return error_response(500, "Internal error; the gateway log has the details.")

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = first.get("loc", ())
        param = str(loc[-1]) if loc else None
        return error_response(400, f"Invalid parameter {param}: {first.get('msg', 'invalid')}.", param)


ROUTERS = [requests_routes.router, limits_routes.router, user_tokens_routes.router, anomalies_routes.router,
           prices_routes.router, alerts_routes.router, users_routes.router, breakdown_routes.router,
           plans_routes.router, export_routes.router, import_routes.router]
