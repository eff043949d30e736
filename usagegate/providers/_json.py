"""JSON decoding for the hot path: orjson when installed, the stdlib otherwise.

`loads_object` never raises: anything that is not a JSON object (invalid JSON, invalid
UTF-8, a list, nesting too deep, integers too large for orjson) comes back as None.
"""

from __future__ import annotations

from typing import Any

try:
    import orjson

    _loads = orjson.loads

    def dumps(obj: Any) -> bytes:
        """Compact JSON bytes, key order kept."""
        return orjson.dumps(obj)

except ImportError:  # pragma: no cover - orjson is a declared dependency
    import json

    _loads = json.loads  # type: ignore[assignment]

    def dumps(obj: Any) -> bytes:
        """Compact JSON bytes, key order kept."""
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def loads_object(data: bytes | bytearray | memoryview) -> dict[str, Any] | None:
    """The JSON object in `data`, or None when `data` is not one."""
    try:
        obj = _loads(data)
    except (ValueError, TypeError, RecursionError):
        # orjson.JSONDecodeError and UnicodeDecodeError are ValueErrors.
        return None
    return obj if isinstance(obj, dict) else None


def count(value: object) -> int:
    """A token count from a JSON value: non-negative ints only, anything else is 0."""
    if type(value) is int and value > 0:
        return value
    return 0


def child(obj: dict[str, Any], key: str) -> dict[str, Any]:
    """`obj[key]` when it is an object, else an empty dict (for `*_details` lookups)."""
    value = obj.get(key)
    return value if isinstance(value, dict) else {}
