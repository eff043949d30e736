"""DESIGN §3: under normal load, a record is visible to the analytics API within 2 s of its answer."""

from __future__ import annotations

import time

import httpx

from tests.servers import GatewayProcess

VISIBLE_WITHIN_S = 2.0


def test_records_are_visible_within_two_seconds(gateway: GatewayProcess, key: str) -> None:
    delays = []
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        for n in range(20):
            answer = client.post(
                "/v1/chat/completions",
                json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"visible {n}"}]},
                headers={"Helicone-Auth": f"Bearer {key}", "Helicone-User-Id": "visibility"},
            )
            assert answer.status_code == 200
            answered = time.monotonic()
            rid = answer.headers["helicone-id"]
            while client.get(f"/api/requests/{rid}", headers={"Authorization": f"Bearer {key}"}).status_code != 200:
                assert time.monotonic() - answered < 10, f"request {rid} not visible after 10 s"
                time.sleep(0.02)
            delays.append(time.monotonic() - answered)
    delays.sort()
    print(f"visibility delays: median {delays[len(delays) // 2]:.3f}s, max {delays[-1]:.3f}s")
    # Median well inside the bound; the slowest may meet a background merge, still within 2 s.
    assert delays[len(delays) // 2] < VISIBLE_WITHIN_S / 2, delays
    assert delays[-1] < VISIBLE_WITHIN_S, delays
