"""Where the gateway's 1-connection p99 comes from: an A/B the closing notes and docs quote.

Pinned like `usagegate bench`: proxies on CPU 0; the mock, wrk and the store process on CPU 1.
Measured each round: the mock directly, the minimal pass-through, the gateway, and a gateway
with its store disabled (`--store` at a closed port: it proxies and spools, and the writer
retries in the background).

Only one gateway is alive at a time. Each one is started for its round, warmed and then measured,
so an idle gateway's background merges never land in another target's round; an earlier
version that kept every gateway up measured 2.7 ms for the store-disabled one. `--burn` adds a
`SCHED_IDLE` CPU burner on the mock's core: 60 ms every 0.5 s, the shape of one store insert.

    python bench/p99_sources.py --rounds 3 [--seconds 4] [--warmup 10] [--burn]
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
GATEWAYS = {"gateway": [], "gateway, store disabled": ["--store", "clickhouse://127.0.0.1:1/off"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=10, help="seconds of load on each fresh gateway before it is measured")
    parser.add_argument("--burn", action="store_true", help="add a SCHED_IDLE CPU burner on the mock's core")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="usagegate-p99-"))
    children: list[Child] = []
    burner: subprocess.Popen[bytes] | None = None
    try:
        port = free_port()
        direct = f"http://127.0.0.1:{port}"
        mock = Child("mock", _pinned(python_module("usagegate.mock_upstream", "--port", str(port)), SIDE_CPU), work / "mock.log")
        children.append(mock)
        mock.wait_http(direct + "/_mock/requests")
        port = free_port()
        minimal_url = f"http://127.0.0.1:{port}"
        minimal = Child("minimal", _pinned([sys.executable, str(MINIMAL_PROXY), "--port", str(port), "--upstream", direct],
                                           PROXY_CPU), work / "minimal.log")
        children.append(minimal)
        minimal.wait_http(minimal_url + "/")
        if args.burn:
            burner = subprocess.Popen(["chrt", "-i", "0", "taskset", "-c", str(SIDE_CPU), sys.executable, "-c", BURNER])
        plain = {"Authorization": "Bearer sk-p99"}
        to_direct, to_minimal = Wrk(_body(False), plain, cpu=PROXY_CPU), Wrk(_body(False), plain, cpu=SIDE_CPU)
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in ("direct", "minimal", *GATEWAYS)}
        added: dict[str, list[tuple[float, float]]] = {name: [] for name in ("minimal", *GATEWAYS)}
        for round_ in range(args.rounds):
            for number, (name, extra) in enumerate(GATEWAYS.items()):
                gateway = _measure_gateway(work / f"round{round_}-gateway{number}", direct, extra, args)
                results[name].append(gateway)
                for target, wrk, url in (("direct", to_direct, direct), ("minimal", to_minimal, minimal_url)):
                    result = wrk.run(url + CHAT_PATH, connections=1, seconds=args.seconds)
                    results[target].append((result.p50_ms, result.p99_ms))
                # Each proxy's round paired with the direct round measured right after the gateway's.
                base = results["direct"][-1]
                added[name].append((gateway[0] - base[0], gateway[1] - base[1]))
                added["minimal"].append((results["minimal"][-1][0] - base[0], results["minimal"][-1][1] - base[1]))
        _report(results, added, args)
    finally:
        if burner is not None:
            burner.kill()
        for child in children:
            child.stop()
        shutil.rmtree(work, ignore_errors=True)


def _measure_gateway(data: Path, upstream: str, extra: list[str], args: argparse.Namespace) -> tuple[float, float]:
    """(p50, p99) of a fresh gateway after `args.warmup` seconds of the same load."""
    config = ConfigDB(data)
    key = config.create_key("p99")
    config.close()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    gateway = Child("gateway", _pinned(python_module("usagegate", "serve", "--port", str(port), "--data-dir", str(data),
                                                     "--openai-base-url", upstream, *extra), SIDE_CPU), data.parent / f"{data.name}.log")
    try:
        _wait_proxy(url, key)
        pin(gateway_processes(gateway.pid)[1], {PROXY_CPU})
        wrk = Wrk(_body(False), {"Authorization": "Bearer sk-p99", "Helicone-Auth": f"Bearer {key}",
                                 "Helicone-User-Id": "p99@example.com"}, cpu=SIDE_CPU)
        wrk.run(url + CHAT_PATH, connections=1, seconds=args.warmup)
        result = wrk.run(url + CHAT_PATH, connections=1, seconds=args.seconds)
        return result.p50_ms, result.p99_ms
    finally:
        gateway.stop()


def _report(results: dict[str, list[tuple[float, float]]], added: dict[str, list[tuple[float, float]]],
            args: argparse.Namespace) -> None:
    print(f"1 connection, medians of {args.rounds} rounds, one gateway alive at a time"
          f"{' (with a SCHED_IDLE burner on the mock core)' if args.burn else ''}:")
    for name, values in results.items():
        p50 = statistics.median(v[0] for v in values)
        p99 = statistics.median(v[1] for v in values)
        line = f"  {name:24s} p50 {p50:.3f}  p99 {p99:.3f} ms"
        if name in added:
            line += (f"  added p50 {statistics.median(a for a, _ in added[name]):.3f}"
                     f"  p99 {statistics.median(b for _, b in added[name]):.3f}")
        print(f"{line}   p99 by round {[round(v[1], 2) for v in values]}")


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
