"""Concurrent proxy traffic for durability tests: who was answered 2xx, who was only attempted."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import orjson

PROVIDER_KEY = "sk-durability-provider-secret-7f3a9c"


@dataclass
class LoadResult:
    attempted: set[str] = field(default_factory=set)
    answered: set[str] = field(default_factory=set)  # full 2xx answer received
    failed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def send_one(client: httpx.Client, url: str, key: str, n: int, result: LoadResult) -> None:
    """One chat completion (every third one streamed) with its own request id."""
    rid = str(uuid.uuid4())
    stream = n % 3 == 0
    headers = {
        "Helicone-Auth": f"Bearer {key}",
        "Helicone-Request-Id": rid,
        "Helicone-User-Id": f"user-{n % 7}",
        "Helicone-Property-Plan": "pro" if n % 2 else "free",
        "Authorization": f"Bearer {PROVIDER_KEY}",
    }
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"load {n}"}], "stream": stream}
    with result.lock:
        result.attempted.add(rid)
    try:
        with client.stream("POST", url + "/v1/chat/completions", headers=headers, content=orjson.dumps(body)) as resp:
            data = resp.read()
        ok = resp.status_code == 200 and (b"[DONE]" in data if stream else b'"usage"' in data)
        if ok:
            with result.lock:
                result.answered.add(rid)
            return
    except httpx.HTTPError:
        time.sleep(0.05)  # the gateway is down (killed, restarting): do not spin the shared CPUs
    with result.lock:
        result.failed += 1


class Load:
    """`threads` workers sending back-to-back requests until `stop()` (or `max_requests`)."""

    def __init__(self, url: str, key: str, *, threads: int = 8, max_requests: int = 5000,
                 sender: Callable[[httpx.Client, str, str, int, LoadResult], None] = send_one) -> None:
        self.result = LoadResult()
        self._url, self._key, self._sender = url, key, sender
        self._stop = threading.Event()
        self._counter = iter(range(max_requests))
        self._counter_lock = threading.Lock()
        self._threads = [threading.Thread(target=self._work, daemon=True) for _ in range(threads)]

    def _next(self) -> int | None:
        with self._counter_lock:
            return next(self._counter, None)

    def _work(self) -> None:
        with httpx.Client(timeout=httpx.Timeout(10.0, connect=2.0)) as client:
            while not self._stop.is_set():
                n = self._next()
                if n is None:
                    return
                self._sender(client, self._url, self._key, n, self.result)

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def wait_answered(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.result.answered) < count and time.monotonic() < deadline:
            time.sleep(0.005)

    def stop(self) -> LoadResult:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)
        return self.result
