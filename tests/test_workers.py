"""`usagegate serve --workers 2`: one port, two proxy processes, one store process (DESIGN §7)."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.servers import GatewayProcess, MockUpstream, create_key

CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory, mock_upstream: MockUpstream):  # type: ignore[no-untyped-def]
    data_dir = tmp_path_factory.mktemp("workers") / "data"
    key = create_key(data_dir)
    gateway = GatewayProcess(data_dir, mock_upstream.url, "--workers", "2")
    yield gateway, key
    gateway.stop()


def _chat_fresh_connection(gateway: GatewayProcess, key: str, user: str, i: int) -> str:
    # A new connection per request: SO_REUSEPORT spreads connections, not requests.
    with httpx.Client(timeout=30) as client:
        response = client.post(
            gateway.url + CHAT,
            headers={"Helicone-Auth": f"Bearer {key}", "Helicone-User-Id": user, "Authorization": "Bearer sk-x"},
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"worker {i}"}]},
        )
    assert response.status_code == 200, response.text
    return response.headers["helicone-id"]


def _spool_lines(data_dir: Path) -> dict[str, int]:
    return {d.name: sum(p.read_bytes().count(b"\n") for p in d.glob("*.log")) for d in (data_dir / "spool").glob("w*")}


def test_every_request_through_either_worker_is_recorded_once(workers) -> None:  # type: ignore[no-untyped-def]
    gateway, key = workers
    ids = [_chat_fresh_connection(gateway, key, "multi", i) for i in range(40)]
    lines = _spool_lines(gateway.data_dir)
    assert set(lines) == {"w0", "w1", "w2"}  # w0: the store process's (imports), unused here
    assert lines["w0"] == 0 and lines["w1"] > 0 and lines["w2"] > 0, lines  # both proxies took traffic
    rows = gateway.wait_for_requests(key, 40, timeout=20, user_id="multi")
    assert sorted(r["request_id"] for r in rows) == sorted(ids)


def test_analytics_are_the_same_whichever_worker_answers(workers) -> None:  # type: ignore[no-untyped-def]
    gateway, key = workers
    ids = [_chat_fresh_connection(gateway, key, "same-answer", i) for i in range(10)]
    gateway.wait_for_requests(key, 10, timeout=20, user_id="same-answer")
    bodies, via = set(), set()
    for _ in range(30):
        with httpx.Client(timeout=30) as client:
            response = client.get(gateway.url + "/api/requests", params={"user_id": "same-answer", "limit": 100},
                                  headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 200
        bodies.add(response.text)
        via.add(response.headers.get("x-usagegate-worker", "owner"))
    assert via == {"1", "2"}  # both workers relayed to the store process...
    assert len(bodies) == 1  # ...the same thing
    assert sorted(r["request_id"] for r in json.loads(bodies.pop())["requests"]) == sorted(ids)
    # Errors keep the /api shape through the relay.
    with httpx.Client(timeout=30) as client:
        for _ in range(10):
            bad = client.get(gateway.url + "/api/requests", headers={"Authorization": "Bearer nope"},
                             params={"n": str(_)})
            assert bad.status_code == 401 and bad.json()["error"]["status"] == 401
    assert httpx.get(gateway.url + "/_worker/spent", params={"org": "x", "user": "y", "start": "2020-01-01",
                                                            "end": "2030-01-01"}).status_code == 404  # not on TCP


def _metrics(gateway: GatewayProcess) -> dict[str, float]:
    with httpx.Client(timeout=30) as client:  # a fresh connection: any worker may answer
        response = client.get(gateway.url + "/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = {}
    for line in response.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_metrics_cover_every_worker(workers) -> None:  # type: ignore[no-untyped-def]
    gateway, key = workers
    for i in range(10):
        _chat_fresh_connection(gateway, key, "metrics", i)
    gateway.wait_for_requests(key, 10, timeout=20, user_id="metrics")
    pages = [_metrics(gateway) for _ in range(6)]
    for samples in pages:
        requests = {k: v for k, v in samples.items() if k.startswith("usagegate_requests_total{")}
        assert set(requests) == {'usagegate_requests_total{worker="1"}', 'usagegate_requests_total{worker="2"}'}
        assert sum(requests.values()) >= 10 and min(requests.values()) > 0
        count = sum(v for k, v in samples.items() if k.startswith("usagegate_added_latency_seconds_count"))
        inf = sum(v for k, v in samples.items() if k.startswith("usagegate_added_latency_seconds_bucket") and 'le="+Inf"' in k)
        assert count == inf >= 10
        assert samples["usagegate_store_up"] == 1
        assert samples["usagegate_records_inserted_total"] >= 10
    deadline = time.monotonic() + 10
    while (samples := _metrics(gateway))["usagegate_spool_bytes"] > 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert samples["usagegate_spool_bytes"] == 0 and samples["usagegate_writer_lag_seconds"] == 0


def test_sigterm_drains_every_workers_spool(workers, mock_upstream: MockUpstream) -> None:  # type: ignore[no-untyped-def]
    # Last in this module: it stops the shared gateway.
    gateway, key = workers
    data_dir = gateway.data_dir
    ids = [_chat_fresh_connection(gateway, key, "drain", i) for i in range(30)]
    assert gateway.stop() in (0, -signal.SIGTERM)
    for directory in (data_dir / "spool").glob("w[12]"):  # the proxies' spools (w0 holds imports only)
        checkpoint = json.loads((directory / "checkpoint.json").read_text())
        segment = directory / f"{checkpoint['segment']:010d}.log"
        assert checkpoint["pending"] is None and checkpoint["offset"] == segment.stat().st_size, directory.name
    single = GatewayProcess(data_dir, mock_upstream.url)  # one process on the same data dir
    try:
        rows = single.wait_for_requests(key, 30, user_id="drain")
        assert sorted(r["request_id"] for r in rows) == sorted(ids)
    finally:
        single.stop()
