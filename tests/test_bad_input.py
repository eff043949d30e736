"""Bad input everywhere gets a clear 4xx in the provider's error shape, and the gateway stays up."""

from __future__ import annotations

import socket
import uuid

import httpx
import pytest

from tests.servers import GatewayProcess

CHAT = "/v1/chat/completions"


def _auth(key: str, **extra: str) -> dict[str, str]:
    return {"Helicone-Auth": f"Bearer {key}", **extra}


def _healthy(gateway: GatewayProcess) -> bool:
    return httpx.get(gateway.url + "/health", timeout=10).status_code == 200


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[1, 2, 3]", b'"a string"', b"\xff\xfe\x00garbage", b"", b'{"model": 5, "messages": "x", "user": {"a": 1}}',
     b'{"model": null, "stream": "yes", "max_tokens": "many"}', b'{"metadata": [], "user": 12}'],
    ids=["malformed", "array", "string", "invalid-utf8", "empty", "wrong-types", "nulls", "odd-user"],
)
def test_garbage_bodies_are_forwarded_or_refused_never_crash(gateway: GatewayProcess, key: str, body: bytes) -> None:
    # The provider decides what a bad body means; the gateway must relay its answer and log it.
    rid = str(uuid.uuid4())
    response = httpx.post(gateway.url + CHAT, content=body,
                          headers=_auth(key, **{"content-type": "application/json", "Helicone-Request-Id": rid}))
    assert response.status_code < 500
    assert response.headers["helicone-id"] == rid
    assert _healthy(gateway)
    for _ in range(100):
        got = gateway.api(key, f"/api/requests/{rid}")
        if got.status_code == 200:
            break
        import time

        time.sleep(0.05)
    assert got.status_code == 200, "every proxied request is recorded, even a garbage one"


@pytest.mark.parametrize(
    "headers, param",
    [
        ({"Helicone-User-Id": "bad\tid"}, "Helicone-User-Id"),
        ({"Helicone-Property-Plan": "x\ty"}, "helicone-property-plan"),
        ({"Helicone-Request-Id": "1234"}, "Helicone-Request-Id"),
        ({"Helicone-User-Id": "u" * 300}, "Helicone-User-Id"),
        ({"Helicone-RateLimit-Policy": "10;w=5"}, "Helicone-RateLimit-Policy"),
        ({"Helicone-Target-URL": "http://169.254.169.254"}, "Helicone-Target-URL"),
        ({"Helicone-Target-URL": "https://evil.example.com"}, "Helicone-Target-URL"),
    ],
    ids=["control-user", "control-property", "short-request-id", "long-user", "bad-policy", "metadata-ip", "not-allowed"],
)
def test_bad_headers_are_400_naming_the_header(gateway: GatewayProcess, key: str, headers: dict, param: str) -> None:
    response = httpx.post(gateway.url + CHAT, json={"model": "gpt-4o-mini", "messages": []}, headers=_auth(key, **headers))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and error["message"]


def test_invalid_utf8_header_is_400(gateway: GatewayProcess, key: str) -> None:
    raw = (
        f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nHelicone-Auth: Bearer {key}\r\n".encode()
        + b"Helicone-User-Id: \xff\xfe\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    )
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(raw)
        answer = b""
        while b"Helicone-User-Id" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400")
    assert b"Helicone-User-Id" in answer


def test_body_user_with_control_characters_is_400(gateway: GatewayProcess, key: str) -> None:
    response = httpx.post(gateway.url + CHAT, headers=_auth(key),
                          json={"model": "gpt-4o-mini", "messages": [], "user": "evil\nuser"})
    assert response.status_code == 400 and "control" in response.json()["error"]["message"]


def test_oversized_headers_are_refused_and_gateway_stays_up(gateway: GatewayProcess, key: str) -> None:
    try:
        response = httpx.post(gateway.url + CHAT, json={}, headers=_auth(key, **{"X-Huge": "a" * 200_000}), timeout=10)
        assert response.status_code in (400, 413, 431)
    except httpx.HTTPError:
        pass  # the server may close the connection; what matters is that it stays up
    assert _healthy(gateway)


def test_garbage_on_the_socket_does_not_hurt(gateway: GatewayProcess, key: str) -> None:
    for junk in (b"\x00\x01\x02" * 1000, b"GET / HTTP/9.9\r\n\r\n", b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 99999999\r\n\r\nshort",
                 b"\r\n\r\n\r\n", b"GARBAGE" * 5000 + b"\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
            try:
                sock.sendall(junk)
                sock.shutdown(socket.SHUT_WR)
                sock.recv(1024)
            except OSError:
                pass
    assert _healthy(gateway)
    ok = httpx.post(gateway.url + CHAT, headers=_auth(key),
                    json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "still alive"}]})
    assert ok.status_code == 200


def test_body_over_limit_is_413(gateway: GatewayProcess, key: str) -> None:
    # The module gateway runs with the default 32 MB limit; send 33 MB.
    body = b'{"model": "gpt-4o-mini", "messages": [], "pad": "' + b"a" * (33 * 1024 * 1024) + b'"}'
    response = httpx.post(gateway.url + CHAT, content=body, headers=_auth(key, **{"content-type": "application/json"}), timeout=60)
    assert response.status_code == 413
    assert "32" in response.json()["error"]["message"]
    assert _healthy(gateway)


def test_unknown_api_route_and_method_use_the_api_error_shape(gateway: GatewayProcess, key: str) -> None:
    response = httpx.get(gateway.url + "/api/nope", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 404 and set(response.json()["error"]) == {"status", "message", "param"}
    response = httpx.delete(gateway.url + "/api/requests", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 405 and response.json()["error"]["status"] == 405
    response = httpx.get(gateway.url + "/api/requests", params={"limit": "lots"}, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "limit"
    response = httpx.get(gateway.url + "/api/requests", params={"from": "yesterday"}, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "from"
    response = httpx.get(gateway.url + "/api/requests", params={"cursor": "!!"}, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "cursor"
