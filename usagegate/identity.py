"""Who a request is for: the org (usagegate key), the end user, properties, session, request id.

`parse_helicone_headers` reads the `Helicone-*` headers of one request in a single pass and
validates them (DESIGN §1); everything else is forwarded untouched by the gateway.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass, field

from usagegate.errors import BadRequest

MAX_USER_ID = 256
MAX_PROPERTY_VALUE = 1024
MAX_PROPERTY_NAME = 128
_CONTROL = re.compile("[\x00-\x1f\x7f]")  # one C-level scan instead of a generator per header
_PROPERTY_PREFIX = "helicone-property-"


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


class RequestIds:
    """Random (version 4) UUID strings, 256 per `os.urandom` call.

    `str(uuid.uuid4())` costs a syscall per request, which py-spy put at ~10% of the proxy's loop
    time under load; ids only need to be unique and unguessable-enough, not per-call entropy.
    """

    def __init__(self, batch: int = 256) -> None:
        self._batch = batch
        self._hex = ""
        self._pos = 0

    def __call__(self) -> str:
        if self._pos >= len(self._hex):
            self._hex = os.urandom(16 * self._batch).hex()
            self._pos = 0
        h = self._hex[self._pos:self._pos + 32]
        self._pos += 32
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


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
    return _CONTROL.search(value) is not None


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
