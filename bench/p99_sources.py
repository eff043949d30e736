"""Where the gateway's 1-connection p99 comes from: an A/B the closing notes and docs quote.

One run, interleaved rounds, pinned like `usagegate bench` (proxies on CPU 0; mock, wrk and the
store processes on CPU 1): the mock directly, the minimal pass-through, the gateway, and the same
gateway with its store disabled (`--store` pointing at a closed port: it proxies and spools, the
writer retries in the background). Optionally a CPU burner at SCHED_IDLE on CPU 1 (`--burn`),
60 ms every 0.5 s, the shape of one store insert.

    python bench/p99_sources.py --rounds 5 [--burn]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from usagegate.bench import CHAT_PATH, MINIMAL_PROXY, _body, _pinned
from usagegate.children import Child, free_port, python_module
from usagegate.config_db import ConfigDB
from usagegate.loadgen import Wrk
from usagegate.proctree import gateway_processes, pin

PROXY_CPU, SIDE_CPU = 0, 1
BURNER = "import time\nwhile True:\n    end = time.perf_counter() + 0.06\n    while time.perf_counter() < end: pass\n    time.sleep(0.44)\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--burn", action="store_true", help="add a SCHED_IDLE CPU burner on the mock's core")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="usagegate-p99-"))
    children: list[Child] = []
    burner: subprocess.Popen[bytes] | None = None
    try:
        port = free_port()
        urls = {"direct": f"http://127.0.0.1:{port}"}
        mock = Child("mock", _pinned(python_module("usagegate.mock_upstream", "--port", str(port)), SIDE_CPU), work / "mock.log")
        children.append(mock)
        mock.wait_http(urls["direct"] + "/_mock/requests")
        port = free_port()
        urls["minimal"] = f"http://127.0.0.1:{port}"
        minimal = Child("minimal", _pinned([sys.executable, str(MINIMAL_PROXY), "--port", str(port), "--upstream", urls["direct"]],
                                           PROXY_CPU), work / "minimal.log")
        children.append(minimal)
        minimal.wait_http(urls["minimal"] + "/")
        keys = {}
        for name, extra in (("gateway", []), ("gateway, store disabled", ["--store", "clickhouse://127.0.0.1:1/off"])):
            data = work / name.replace(" ", "_").replace(",", "")
            config = ConfigDB(data)
            keys[name] = config.create_key("p99")
            config.close()
            port = free_port()
            urls[name] = f"http://127.0.0.1:{port}"
            gateway = Child(name, _pinned(python_module("usagegate", "serve", "--port", str(port), "--data-dir", str(data),
                                                        "--openai-base-url", urls["direct"], *extra), SIDE_CPU), work / f"{data.name}.log")
            children.insert(0, gateway)
            _wait_proxy(urls[name], keys[name])
            pin(gateway_processes(gateway.pid)[1], {PROXY_CPU})
        if args.burn:
            burner = subprocess.Popen(["chrt", "-i", "0", "taskset", "-c", str(SIDE_CPU), sys.executable, "-c", BURNER])
        wrks = {name: Wrk(_body(False), {"Authorization": "Bearer sk-p99", "Helicone-Auth": f"Bearer {keys.get(name, '')}",
                                         "Helicone-User-Id": "p99@example.com"},
                          cpu=PROXY_CPU if name == "direct" else SIDE_CPU) for name in urls}
        for name, url in urls.items():
            wrks[name].run(url + CHAT_PATH, connections=1, seconds=1)
        p50: dict[str, list[float]] = {name: [] for name in urls}
        p99: dict[str, list[float]] = {name: [] for name in urls}
        for _ in range(args.rounds):
            for name, url in urls.items():
                result = wrks[name].run(url + CHAT_PATH, connections=1, seconds=args.seconds)
                p50[name].append(result.p50_ms)
                p99[name].append(result.p99_ms)
        print(f"1 connection, medians of {args.rounds} interleaved rounds{' (with a SCHED_IDLE burner on the mock core)' if args.burn else ''}:")
        for name in urls:
            added = "" if name == "direct" else (f"  added p50 {statistics.median(a - d for a, d in zip(p50[name], p50['direct'])):.3f}"
                                                 f"  p99 {statistics.median(a - d for a, d in zip(p99[name], p99['direct'])):.3f}")
            print(f"  {name:24s} p50 {statistics.median(p50[name]):.3f}  p99 {statistics.median(p99[name]):.3f} ms{added}"
                  f"   p99 by round {[round(v, 2) for v in p99[name]]}")
    finally:
        if burner is not None:
            burner.kill()
        for child in children:
            child.stop()
        shutil.rmtree(work, ignore_errors=True)


def _wait_proxy(url: str, key: str, timeout: float = 60.0) -> None:
    """Until the proxy answers a request (with the store disabled, /health never turns green)."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            response = httpx.post(url + CHAT_PATH, content=_body(False), headers={
                "Authorization": "Bearer sk-p99", "Helicone-Auth": f"Bearer {key}", "Content-Type": "application/json"})
            if response.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer a proxied request within {timeout:.0f} s")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
