"""The error tree. Each error carries the HTTP status it maps to and a message a user can act on.

`provider_error_body` renders an error in the shape the client's provider SDK expects, so an
OpenAI or Anthropic SDK raises its usual exception type with our message.
"""

from __future__ import annotations

import orjson


class UsagegateError(Exception):
    status: int = 500
    error_type: str = "api_error"

    def __init__(
        self, message: str, *, param: str | None = None, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        # Extra response headers (Retry-After, Helicone-RateLimit-*) for the proxy's answer.
        self.headers = headers or []


class ConfigError(UsagegateError):
    status = 500


class BadRequest(UsagegateError):
    status = 400
    error_type = "invalid_request_error"


class Unauthorized(UsagegateError):
    status = 401
    error_type = "authentication_error"


class NotFound(UsagegateError):
    status = 404
    error_type = "not_found_error"


class PayloadTooLarge(UsagegateError):
    status = 413
    error_type = "request_too_large"


class ClientClosed(UsagegateError):
    """The client went away before the gateway could answer (nginx's 499; never actually sent)."""

    status = 499
    error_type = "client_closed_request"


class RateLimited(UsagegateError):
    status = 429
    error_type = "rate_limit_error"


class UpstreamError(UsagegateError):
    status = 502
    error_type = "api_error"


class UpstreamTimeout(UsagegateError):
    status = 504
    error_type = "timeout_error"


class StoreUnavailable(UsagegateError):
    status = 503
    error_type = "overloaded_error"


def provider_error_body(provider: str, error: UsagegateError) -> bytes:
    """The error as the provider would send it (OpenAI and Anthropic shapes differ)."""
    if provider == "anthropic":
        return orjson.dumps({"type": "error", "error": {"type": error.error_type, "message": error.message}})
    return orjson.dumps(
        {"error": {"message": error.message, "type": error.error_type, "param": error.param, "code": None}}
    )
