"""A small HTTP client for a running gateway's /api (used by the CLI's analytics commands).

Every failure becomes a UsagegateError with a message a user can act on (no tracebacks).
"""

from __future__ import annotations

from typing import Any

import httpx

from usagegate.errors import UsagegateError

DEFAULT_URL = "http://127.0.0.1:8787"


class ApiClient:
    def __init__(self, url: str, key: str | None, *, timeout: float = 60.0) -> None:
        if not key:
            raise UsagegateError("No usagegate key: pass --key or set USAGEGATE_KEY.")
        self.url = url.rstrip("/")
        self._client = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout)

    def get(self, path: str, params: list[tuple[str, str]] | None = None) -> httpx.Response:
        try:
            response = self._client.get(path, params=params)  # type: ignore[arg-type]  # list is invariant
        except httpx.TransportError as exc:
            raise UsagegateError(
                f"Cannot reach the gateway at {self.url} ({exc.__class__.__name__}); is `usagegate serve` running? "
                "Set --url or USAGEGATE_URL."
            ) from None
        if response.status_code >= 400:
            raise UsagegateError(_message(response))
        return response

    def json(self, path: str, params: list[tuple[str, str]] | None = None) -> Any:
        return self.get(path, params).json()

    def close(self) -> None:
        self._client.close()


def _message(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        text = str(error["message"])
    except (ValueError, KeyError, TypeError):
        text = response.text[:200] or response.reason_phrase
    return f"{text} (HTTP {response.status_code})"
