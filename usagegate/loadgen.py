"""Load generators for `usagegate bench`: wrk for latency/throughput, a tiny probe for streaming TTFB.

wrk (C, epoll) is the load generator because a Python one would be the bottleneck on a 2-core
machine; it POSTs a fixed JSON body through a generated Lua script whose `done` hook prints one
JSON line of results. The streaming probe is a raw asyncio protocol with httptools: one keep-alive
connection, one request at a time, timestamping the first body byte of each response.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httptools

from usagegate.errors import UsagegateError

_LUA = """
wrk.method = "POST"
wrk.body = [==[{body}]==]
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKRESULT {{"requests":%d,"duration_us":%d,"status_errors":%d,"socket_errors":%d,'
    .. '"p50_us":%.1f,"p99_us":%.1f,"mean_us":%.1f}}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
"""


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx/3xx answers plus socket errors

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise UsagegateError("usagegate bench needs wrk: install it with 'apt-get install wrk' (or 'brew install wrk'); "
                             "'make bench' does this for you on Debian/Ubuntu.")
    return path


class Wrk:
    """Runs wrk against any URL with one body and header set (written once to a Lua script)."""

    def __init__(self, body: bytes, headers: dict[str, str], *, cpu: int | None = None) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="usagegate-wrk-"))
        lines = "\n".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items())
        self.script = self._dir / "post.lua"
        self.script.write_text(_LUA.format(body=body.decode(), headers=lines))
        self._prefix = ["taskset", "-c", str(cpu)] if cpu is not None and shutil.which("taskset") else []
        self._wrk = wrk_path()

    def run(self, url: str, *, connections: int, seconds: float, threads: int = 1) -> LoadResult:
        argv = [*self._prefix, self._wrk, "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
                "--timeout", "10s", "-s", str(self.script), url]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
        for line in done.stdout.splitlines():
            if line.startswith("WRKRESULT "):
                data = json.loads(line[len("WRKRESULT "):])
                return LoadResult(
                    requests=data["requests"], seconds=data["duration_us"] / 1e6, p50_ms=data["p50_us"] / 1000,
                    p99_ms=data["p99_us"] / 1000, errors=data["status_errors"] + data["socket_errors"],
                )
        raise UsagegateError(f"wrk gave no result for {url}: {done.stdout[-500:]} {done.stderr[-500:]}")

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)


class _Probe(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.first_byte = 0.0
        self.status = 0
        self.done: asyncio.Future[None] | None = None
        self.parser = httptools.HttpResponseParser(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        if not self.first_byte:
            self.first_byte = time.perf_counter()

    def on_message_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if self.done is not None and not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError("connection closed mid-response"))


async def _ttfb(url: str, body: bytes, headers: dict[str, str], count: int, timeout: float) -> list[float]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = [f"POST {parts.path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json",
            f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
    request = ("\r\n".join(head) + "\r\n\r\n").encode() + body
    loop = asyncio.get_running_loop()
    transport, probe = await loop.create_connection(_Probe, host, port)
    samples: list[float] = []
    deadline = time.monotonic() + timeout
    try:
        for _ in range(count):
            if time.monotonic() > deadline:
                break
            probe.first_byte = 0.0
            probe.done = loop.create_future()
            probe.parser = httptools.HttpResponseParser(probe)
            sent = time.perf_counter()
            transport.write(request)
            await asyncio.wait_for(probe.done, 10)
            if probe.status != 200:
                raise UsagegateError(f"streaming probe got HTTP {probe.status} from {url}")
            samples.append(probe.first_byte - sent)
    finally:
        transport.close()
    return samples


def ttfb_ms(url: str, body: bytes, headers: dict[str, str], *, count: int, timeout: float = 60.0) -> tuple[float, float]:
    """(p50, p99) milliseconds from sending a streaming request to its first body byte."""
    samples = asyncio.run(_ttfb(url, body, headers, count, timeout))
    if len(samples) < 2:
        raise UsagegateError(f"streaming probe got too few answers from {url}")
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
