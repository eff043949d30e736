"""Outbound address checks: no open relay, no SSRF (Helicone-Target-URL, alert webhooks).

A URL is refused when its host resolves to a link-local address (cloud metadata lives there)
or, unless the operator opted in, to a private, loopback or otherwise non-global address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from urllib.parse import urlsplit

from usagegate.errors import BadRequest

_RESOLVE_TTL = 60.0


def normalise_base(url: str) -> str:
    """scheme://host[:port][/path] without a trailing slash, lowercased scheme and host."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url[:200]!r}")
    host = parts.hostname.lower()
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"


def address_refusal(address: str, *, allow_private: bool) -> str | None:
    """Why connecting to `address` is refused, or None when it is fine."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if ip.is_link_local or ip.is_multicast or ip.is_unspecified:
        return f"{ip} is a link-local/multicast/unspecified address"
    if ip.is_loopback or ip.is_private:
        # Checked before `is_reserved`: Python counts ::1 (inside ::/8) as reserved too.
        return None if allow_private else f"{ip} is a private or loopback address"
    if ip.is_reserved or not ip.is_global:
        return f"{ip} is a reserved or non-global address"
    return None


def literal_or_localhost(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class AddressGuard:
    """Resolves hosts (cached) and refuses forbidden destinations with a 400 naming `param`."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int], tuple[float, list[str]]] = {}

    async def resolve(self, host: str, port: int) -> list[str]:
        now = time.monotonic()
        hit = self._cache.get((host, port))
        if hit is not None and now - hit[0] < _RESOLVE_TTL:
            return hit[1]
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = sorted({str(info[4][0]) for info in infos})
        self._cache[(host, port)] = (now, addresses)
        return addresses

    async def check(self, url: str, *, allow_private: bool, param: str) -> None:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            addresses = await self.resolve(host, port)
        except OSError as exc:
            raise BadRequest(f"{param} host {host!r} does not resolve: {exc}", param=param) from exc
        for address in addresses:
            reason = address_refusal(address, allow_private=allow_private)
            if reason is not None:
                raise BadRequest(f"{param} {url[:200]!r} is refused: {reason}.", param=param)
