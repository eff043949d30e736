"""The log store goes away: the proxy keeps answering and spooling, nothing is lost (DESIGN §3).

Two real outages: the embedded store's directory locked by another process (the gateway starts
anyway and catches up in-process once the lock is released), and a ClickHouse server that is
not listening (the gateway serves, exits on SIGTERM without losing the spool, and a restart on a
working store stores every record exactly once).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.servers import GatewayProcess, MockUpstream, create_key, free_port

CHAT = "/v1/chat/completions"


def _send(gateway: GatewayProcess, key: str, n: int, user: str) -> list[str]:
    ids = []
    with httpx.Client(timeout=30) as client:
        for i in range(n):
            response = client.post(
                gateway.url + CHAT,
                headers={"Helicone-Auth": f"Bearer {key}", "Helicone-User-Id": user, "Authorization": "Bearer sk-x"},
                json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"outage {i}"}]},
            )
            assert response.status_code == 200, response.text
            ids.append(response.headers["helicone-id"])
    return ids


def _spooled_bytes(data_dir: Path) -> int:
    return sum(p.stat().st_size for p in (data_dir / "spool").rglob("*.log"))


def _assert_store_unavailable(gateway: GatewayProcess, key: str) -> None:
    response = gateway.api(key, "/api/requests")
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["status"] == 503 and "unavailable" in error["message"]
    assert httpx.get(gateway.url + "/health", timeout=5).status_code == 200


def _stored_ids(gateway: GatewayProcess, key: str, user: str, expected: int) -> list[str]:
    """Poll until `expected` records are stored (503 while the store is still coming back)."""
    deadline = time.monotonic() + 30
    rows: list[dict] = []
    while time.monotonic() < deadline:
        response = gateway.api(key, "/api/requests", user_id=user, limit=1000)
        if response.status_code == 200:
            rows = response.json()["requests"]
            if len(rows) >= expected:
                break
        else:
            assert response.status_code == 503, response.text
        time.sleep(0.2)
    return [row["request_id"] for row in rows]


def test_locked_embedded_store_catches_up_in_process(tmp_path: Path, mock_upstream: MockUpstream) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "store").mkdir(parents=True)
    key = create_key(data_dir)
    locker = subprocess.Popen([sys.executable, "-m", "tests.store_locker", str(data_dir / "store")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert locker.stdout is not None and locker.stdout.readline().strip() == "holding"
        gateway = GatewayProcess(data_dir, mock_upstream.url)  # starts although the store is locked
        try:
            before = _spooled_bytes(data_dir)
            ids = _send(gateway, key, 40, "outage-user")
            _assert_store_unavailable(gateway, key)
            assert "another process" in gateway.api(key, "/api/requests").json()["error"]["message"]
            assert _spooled_bytes(data_dir) > before
            page = httpx.get(gateway.url + "/metrics", timeout=10).text
            assert "usagegate_store_up 0" in page
            spool_line = next(line for line in page.splitlines() if line.startswith("usagegate_spool_bytes "))
            assert int(spool_line.split()[1]) > 0  # the backlog shows while the store is away
            time.sleep(1.5)  # the writer and the migration retry fail a few times meanwhile
            assert locker.stdin is not None
            locker.stdin.close()
            assert locker.wait(20) == 0
            stored = _stored_ids(gateway, key, "outage-user", 40)
            assert sorted(stored) == sorted(ids)  # every answered request, each exactly once
            more = _send(gateway, key, 5, "outage-user")
            assert sorted(_stored_ids(gateway, key, "outage-user", 45)) == sorted(ids + more)
        finally:
            assert gateway.stop() in (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM after a clean shutdown
    finally:
        if locker.poll() is None:
            locker.kill()
            locker.wait(10)


def test_unreachable_server_store_keeps_spool_until_a_store_works(tmp_path: Path, mock_upstream: MockUpstream) -> None:
    data_dir = tmp_path / "data"
    key = create_key(data_dir)
    closed = free_port()  # nothing listens there: connection refused, as when ClickHouse is down
    down = GatewayProcess(data_dir, mock_upstream.url, "--store", f"clickhouse://default:secret@127.0.0.1:{closed}/usagegate")
    try:
        ids = _send(down, key, 30, "server-outage")
        _assert_store_unavailable(down, key)
        assert "secret" not in down.api(key, "/api/requests").text  # the password never leaks
        started = time.monotonic()
    finally:
        assert down.stop() in (0, -signal.SIGTERM)
    assert time.monotonic() - started < 20  # SIGTERM does not hang on a store that is down
    assert _spooled_bytes(data_dir) > 0
    up = GatewayProcess(data_dir, mock_upstream.url)  # same data dir, a working store
    try:
        assert sorted(_stored_ids(up, key, "server-outage", 30)) == sorted(ids)
        count = up.api(key, "/api/requests", user_id="server-outage", limit=1000).json()["requests"]
        assert len(count) == 30
    finally:
        up.stop()
