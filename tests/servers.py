"""Real servers for tests: the mock upstream and the gateway, each a subprocess on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from usagegate.proctree import alive, gateway_processes

PYTHON = sys.executable
# How long the rollups of an insert may trail its raw rows (see GatewayProcess.wait_for_requests).
ROLLUP_SETTLE_S = 0.3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("USAGEGATE_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


class MockUpstream:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "usagegate.mock_upstream", "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env(), text=True,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if "listening" in line:
                return
            if not line and self.proc.poll() is not None:
                break
        raise RuntimeError("mock upstream did not start")

    def received(self) -> list[dict[str, Any]]:
        return httpx.get(self.url + "/_mock/requests").json()  # type: ignore[no-any-return]

    def clear(self) -> None:
        httpx.delete(self.url + "/_mock/requests")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def cli(*args: str, data_dir: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "usagegate", *args, "--data-dir", str(data_dir)],
        capture_output=True, text=True, env=_env(), check=check, timeout=60,
    )


def run_check(module: str, directory: Path) -> Any:
    """Run `python -m tests.<module> <directory>` (a check that opens its own chDB data dir, so it
    needs a fresh process) and return the JSON summary it prints last."""
    import json

    done = subprocess.run([PYTHON, "-m", f"tests.{module}", str(directory)], capture_output=True, text=True,
                          timeout=300, env=_env())
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def create_key(data_dir: Path, org: str = "acme") -> str:
    return cli("keys", "create", "--org", org, data_dir=data_dir).stdout.strip()


class GatewayProcess:
    """`usagegate serve` on a free port, pointed at the mock for both providers."""

    def __init__(self, data_dir: Path, upstream_url: str, *extra: str, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.upstream_url = upstream_url
        self.extra = extra
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / f"gateway-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "usagegate", "serve", "--port", str(self.port), "--data-dir", str(self.data_dir),
             "--openai-base-url", self.upstream_url, "--anthropic-base-url", self.upstream_url, *self.extra],
            stdout=log, stderr=subprocess.STDOUT, env=_env(),
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gateway did not become healthy: {self.log_path.read_text()[-3000:]}")

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def kill(self) -> None:
        """SIGKILL every process of the gateway at once, as a power cut would: no drain, no flush."""
        assert self.proc is not None
        children = list(self.processes().values())
        self.proc.send_signal(signal.SIGSTOP)  # so it cannot restart the children we kill
        for pid in children:
            _signal(pid, signal.SIGKILL)
        self.proc.kill()
        self.proc.wait(10)
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.02)

    def processes(self) -> dict[int, int]:
        """{index: pid} of the running gateway's processes: 0 is the store process, 1..N proxies."""
        assert self.proc is not None
        return gateway_processes(self.proc.pid)

    @property
    def proxy_pid(self) -> int:
        """The (first) proxy worker's pid: the process that answers requests and spools them."""
        return self.processes()[1]

    @property
    def store_pid(self) -> int:
        return self.processes()[0]

    def api(self, key: str, path: str, **params: Any) -> httpx.Response:
        return httpx.get(self.url + path, params=params, headers={"Authorization": f"Bearer {key}"}, timeout=30)

    def wait_for_record(self, key: str, request_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """Poll /api/requests/{id} until the record is stored; returns it with its bodies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            response = self.api(key, f"/api/requests/{request_id}")
            if response.status_code == 200:
                return response.json()  # type: ignore[no-any-return]
            time.sleep(0.05)
        raise AssertionError(f"request {request_id} was never recorded")

    def wait_for_requests(self, key: str, count: int, timeout: float = 10.0, **params: Any) -> list[dict[str, Any]]:
        """Poll /api/requests until at least `count` records match; returns them."""
        deadline = time.monotonic() + timeout
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            response = self.api(key, "/api/requests", limit=1000, **params)
            response.raise_for_status()
            rows = response.json()["requests"]
            if len(rows) >= count:
                # One insert writes the raw table and then each rollup, a part per table, so the
                # rollups (what /api/users reads) can show these rows a few ms after /api/requests.
                time.sleep(ROLLUP_SETTLE_S)
                return rows
            time.sleep(0.1)
        raise AssertionError(f"expected {count} records, found {len(rows)}")


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


class RedisServer:
    """A throwaway `redis-server` on a free loopback port, no persistence (`make test` installs it)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
