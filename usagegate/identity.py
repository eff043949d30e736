"""Who a request is for: the org (usagegate key), the end user, properties, session, request id.

`parse_helicone_headers` reads the `Helicone-*` headers of one request in a single pass and
validates them (DESIGN §1); everything else is forwarded untouched by the gateway.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from usagegate.errors import BadRequest

MAX_USER_ID = 256
MAX_PROPERTY_VALUE = 1024
MAX_PROPERTY_NAME = 128
_CONTROL = {chr(c) for c in range(32)} | {chr(127)}
_PROPERTY_PREFIX = "helicone-property-"


@dataclass(slots=True)
class Identity:
    auth: str | None = None
    user_id: str | None = None
    properties: dict[str, str] = field(default_factory=dict)
    request_id: str | None = None
    session_id: str = ""
    session_path: str = ""
    session_name: str = ""
    omit_request: bool = False
    omit_response: bool = False
    target_url: str | None = None
    rate_limit_policy: str | None = None


def _text(raw: bytes, header: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"Header {header} is not valid UTF-8.", param=header) from None


def _has_control(value: str) -> bool:
    return any(ch in _CONTROL for ch in value)


def clean_user_id(value: str, source: str) -> str:
    """Trim and validate an end-user id; raises BadRequest naming `source`."""
    value = value.strip()
    if len(value) > MAX_USER_ID:
        raise BadRequest(f"{source} is {len(value)} characters long; the limit is {MAX_USER_ID}.", param=source)
    if _has_control(value):
        raise BadRequest(f"{source} contains control characters.", param=source)
    return value


def parse_helicone_headers(names_values: list[tuple[bytes, bytes]]) -> Identity:
    """Read the Helicone-* headers (ASGI gives lowercase names); raises BadRequest."""
    ident = Identity()
    for name, raw in names_values:
        if not name.startswith(b"helicone-"):
            continue
        key = name.decode("latin-1")
        if key == "helicone-auth":
            value = _text(raw, "Helicone-Auth").strip()
            ident.auth = value[7:].strip() if value[:7].lower() == "bearer " else value
        elif key == "helicone-user-id":
            value = clean_user_id(_text(raw, "Helicone-User-Id"), "Helicone-User-Id")
            ident.user_id = value or None
        elif key.startswith(_PROPERTY_PREFIX):
            prop = key[len(_PROPERTY_PREFIX):]
            if not prop or len(prop) > MAX_PROPERTY_NAME:
                raise BadRequest(f"Header {key} has an empty or over-long property name.", param=key)
            value = _text(raw, key).strip()
            if len(value) > MAX_PROPERTY_VALUE:
                raise BadRequest(
                    f"Header {key} is {len(value)} characters long; the limit is {MAX_PROPERTY_VALUE}.", param=key
                )
            if _has_control(value):
                raise BadRequest(f"Header {key} contains control characters.", param=key)
            ident.properties[prop] = value
        elif key == "helicone-request-id":
            value = _text(raw, "Helicone-Request-Id").strip()
            try:
                ident.request_id = str(uuid.UUID(value))
            except ValueError:
                raise BadRequest(f"Helicone-Request-Id must be a UUID, got {value[:64]!r}.", param="Helicone-Request-Id") from None
        elif key == "helicone-session-id":
            ident.session_id = _text(raw, "Helicone-Session-Id").strip()[:256]
        elif key == "helicone-session-path":
            ident.session_path = _text(raw, "Helicone-Session-Path").strip()[:1024]
        elif key == "helicone-session-name":
            ident.session_name = _text(raw, "Helicone-Session-Name").strip()[:256]
        elif key == "helicone-omit-request":
            ident.omit_request = raw.strip().lower() == b"true"
        elif key == "helicone-omit-response":
            ident.omit_response = raw.strip().lower() == b"true"
        elif key == "helicone-target-url":
            ident.target_url = _text(raw, "Helicone-Target-URL").strip().rstrip("/")
        elif key == "helicone-ratelimit-policy":
            ident.rate_limit_policy = _text(raw, "Helicone-RateLimit-Policy").strip()
    return ident
