"""Soak: many requests through one gateway; memory and file descriptors must not trend upward."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import aiohttp

from tests.servers import GatewayProcess, MockUpstream, create_key

TOTAL = 12_000
ROUNDS = 6
CONCURRENCY = 16


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def _round(url: str, key: str, count: int, offset: int) -> int:
    ok = 0
    headers = {"Helicone-Auth": f"Bearer {key}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as session:
        async def worker(n: int) -> None:
            nonlocal ok
            for i in range(n, count, CONCURRENCY):
                user = f"soak-{(offset + i) % 500}"
                stream = i % 5 == 0
                body = (b'{"model":"gpt-4o-mini","stream":%s,"messages":[{"role":"user","content":"soak %d"}]}'
                        % (b"true" if stream else b"false", i % 50))
                async with session.post(url + "/v1/chat/completions", data=body,
                                        headers={**headers, "Helicone-User-Id": user}) as response:
                    await response.read()
                    ok += response.status == 200

        await asyncio.wait_for(asyncio.gather(*(worker(n) for n in range(CONCURRENCY))), timeout=300)
    return ok


def test_soak_memory_and_fds_stay_flat(tmp_path: Path, mock_upstream: MockUpstream) -> None:
    gateway = GatewayProcess(tmp_path / "data", mock_upstream.url)
    try:
        key = create_key(gateway.data_dir)
        pids = [gateway.proxy_pid, gateway.store_pid]  # the proxy and the store process, summed
        per_round = TOTAL // ROUNDS
        samples: list[tuple[float, int]] = []
        started = time.monotonic()
        for r in range(ROUNDS):
            assert asyncio.run(_round(gateway.url, key, per_round, r * per_round)) == per_round
            time.sleep(1.0)  # let the writer and closing sockets settle so the sample is not transient
            samples.append((round(sum(_rss_mb(pid) for pid in pids), 1), sum(_fds(pid) for pid in pids)))
        elapsed = time.monotonic() - started
        warm_rss = (samples[1][0] + samples[2][0]) / 2
        last_rss = (samples[-1][0] + samples[-2][0]) / 2
        warm_fds, last_fds = min(s[1] for s in samples[1:3]), min(s[1] for s in samples[-2:])
        print(f"soak: {TOTAL} requests in {elapsed:.1f}s; rss/fds per round: {samples}")
        # Between the warm rounds and the last ones (6k requests apart) RSS may not grow by more than
        # 60 MB (a 10 KB-per-request leak would) and descriptors may not pile up.
        assert last_rss - warm_rss < 60, samples
        assert last_fds <= warm_fds + 32, samples
        rows = gateway.api(key, "/api/requests", limit=1).json()
        assert rows["requests"], "the soak traffic was recorded"
    finally:
        gateway.stop()
