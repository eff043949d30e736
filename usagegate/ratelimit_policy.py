"""`Helicone-RateLimit-Policy` parsing, exactly Helicone's syntax (DESIGN §1).

`<quota>;w=<seconds>[;u=request|cents][;s=user|<property>]`, window 60 s … 1 year.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from usagegate.errors import BadRequest

_POLICY = re.compile(r"^(\d+);w=(\d+)(?:;u=(request|cents))?(?:;s=([\w-]+))?$")
MIN_WINDOW = 60
MAX_WINDOW = 365 * 24 * 3600
HEADER = "Helicone-RateLimit-Policy"


@dataclass(frozen=True, slots=True)
class Policy:
    quota: int
    window: int
    unit: str  # "request" or "cents"
    segment: str  # "user", a property name (lowercased), or "" for the whole org

    def header_value(self) -> str:
        text = f"{self.quota};w={self.window};u={self.unit}"
        return text + (f";s={self.segment}" if self.segment else "")


_cache: dict[str, Policy] = {}


def parse_policy(text: str) -> Policy:
    """Parse a policy header value; raises BadRequest naming what is wrong."""
    cached = _cache.get(text)
    if cached is not None:
        return cached
    match = _POLICY.match(text.strip())
    if match is None:
        raise BadRequest(
            f"{HEADER} {text[:100]!r} is malformed: expected '<quota>;w=<seconds>[;u=request|cents][;s=user|<property>]'.",
            param=HEADER,
        )
    quota, window = int(match.group(1)), int(match.group(2))
    if not MIN_WINDOW <= window <= MAX_WINDOW:
        raise BadRequest(f"{HEADER} window w={window} must be between {MIN_WINDOW} and {MAX_WINDOW} seconds.", param=HEADER)
    if quota <= 0:
        raise BadRequest(f"{HEADER} quota must be a positive integer.", param=HEADER)
    policy = Policy(quota, window, match.group(3) or "request", (match.group(4) or "").lower())
    if len(_cache) < 1024:  # policies repeat; the cache keeps parsing off the hot path
        _cache[text] = policy
    return policy
