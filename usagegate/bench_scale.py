"""`usagegate bench --scale`: analytics over 1M and 10M stored requests, RSS, and throughput vs workers.

Rows are synthetic but shaped like real traffic (100k users on three plans, five models, 2% errors,
30 days) and go in through `Store.insert_arrow` — the batch writer's own path, so the rollup views
fill as they do in production. Columns are built with numpy straight into Arrow buffers (UUIDs as
16 random bytes, money as unscaled decimal128 integers): ~1 s per million rows, not Python dicts.
Bodies are empty (like `--no-store-bodies`). Generation runs in a child process because a data
dir's embedded store opens in one process at a time; the gateway then opens it and the analytics
API is timed over HTTP, as a client sees it.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa

from usagegate.proctree import cpu_seconds, gateway_processes
from usagegate.ingest import SCHEMA
from usagegate.migrations import ROLLUPS

MODELS = [("openai", "gpt-4o-mini", 60, 15), ("openai", "gpt-4o", 250, 1000), ("openai", "o3-mini", 110, 440),
          ("anthropic", "claude-3-5-haiku-latest", 80, 400), ("anthropic", "claude-sonnet-4-0", 300, 1500)]
PLANS = ["free", "pro", "enterprise"]
DAY_MS = 86_400_000


def synthetic_batch(rng: np.random.Generator, n: int, *, org_id: str, users: int, end_ms: int, days: int = 30) -> pa.Table:
    """`n` requests over the `days` before `end_ms`, in ingest.SCHEMA's column order."""
    # Most traffic spread over every user, a share from a few heavy users (zipf); each user mostly
    # sticks to one model, as apps do (an independent model per request would inflate rollups 5x).
    user_idx = np.where(rng.random(n) < 0.7, rng.integers(0, users, n), (rng.zipf(1.3, n) - 1) % users)
    primary = (user_idx * 2654435761) % 100 // 20  # a stable model per user: 5 buckets of 20%
    model_idx = np.where(rng.random(n) < 0.85, primary, rng.choice(len(MODELS), n, p=[0.45, 0.2, 0.1, 0.15, 0.1]))
    prompt = rng.integers(20, 4000, n, dtype=np.int64)
    completion = rng.integers(1, 800, n, dtype=np.int64)
    status = np.where(rng.random(n) < 0.98, 200, rng.choice([400, 429, 500], n)).astype(np.uint16)
    in_rate = np.array([m[2] for m in MODELS], dtype=np.int64)[model_idx]  # nano-USD per token
    out_rate = np.array([m[3] for m in MODELS], dtype=np.int64)[model_idx]
    cost_nano = np.where(status == 200, prompt * in_rate + completion * out_rate, 0)
    money = np.zeros((n, 2), dtype=np.int64)
    money[:, 0] = cost_nano  # decimal128 = 16-byte little-endian unscaled integer
    names = np.array([f"user-{i:06d}@example.com" for i in range(users)], dtype=object)
    user_ids = pa.array(names[user_idx], pa.string())
    provider = pa.array(np.array([m[0] for m in MODELS], dtype=object)[model_idx], pa.string())
    model = pa.array(np.array([m[1] for m in MODELS], dtype=object)[model_idx], pa.string())
    plan_values = pa.array(np.array(PLANS, dtype=object)[user_idx % 3], pa.string())
    properties = pa.MapArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32)),
                                         pa.array(["plan"] * n, pa.string()), plan_values)
    created = np.sort(end_ms - rng.integers(0, days * DAY_MS, n))
    latency = rng.gamma(2.0, 400.0, n).astype(np.uint32)
    zeros = pa.array(np.zeros(n, dtype=np.uint64))
    empty = pa.array(np.full(n, "", dtype=object), pa.string())
    columns: dict[str, pa.Array] = {
        "request_id": pa.Array.from_buffers(pa.binary(16), n, [None, pa.py_buffer(rng.bytes(16 * n))]),
        "org_id": pa.array(np.full(n, org_id, dtype=object), pa.string()),
        "created_at": pa.array(created, pa.timestamp("ms", tz="UTC")),
        "user_id": user_ids,
        "provider": provider,
        "model": model,
        "request_model": model,
        "method": pa.array(np.full(n, "POST", dtype=object), pa.string()),
        "path": pa.array(np.full(n, "/v1/chat/completions", dtype=object), pa.string()),
        "status": pa.array(status),
        "rate_limited": pa.array(status == 429),
        "stream": pa.array(rng.random(n) < 0.3),
        "prompt_tokens": pa.array(prompt.astype(np.uint64)),
        "completion_tokens": pa.array(completion.astype(np.uint64)),
        "cache_read_tokens": zeros, "cache_write_tokens": zeros, "cache_write_1h_tokens": zeros, "reasoning_tokens": zeros,
        "cost_usd": pa.Array.from_buffers(pa.decimal128(38, 9), n, [None, pa.py_buffer(money.tobytes())]),
        "usage_source": pa.array(np.full(n, "provider", dtype=object), pa.string()),
        "latency_ms": pa.array(latency),
        "ttft_ms": pa.array((latency // 4).astype(np.uint32)),
        "properties": properties,
        "session_id": empty, "session_path": empty, "session_name": empty, "error": empty,
        "request_body": empty, "response_body": empty,
        "ingested_at": pa.array(np.full(n, time.time_ns() // 1000, dtype=np.int64), pa.timestamp("us", tz="UTC")),
    }
    assert list(columns) == SCHEMA.names  # the writer's own column set
    return pa.table(columns)


def generate(data_dir: Path, *, rows: int, users: int, org_id: str, seed: int, batch: int = 1_000_000) -> dict[str, float]:
    """Insert `rows` synthetic requests into the data dir's embedded store; returns timings."""
    from usagegate.store import Store

    store = Store.open("embedded", data_dir)
    rng = np.random.default_rng(seed)
    end_ms = int(time.time() * 1000)
    build = insert = 0.0
    try:
        for start in range(0, rows, batch):
            t0 = time.perf_counter()
            table = synthetic_batch(rng, min(batch, rows - start), org_id=org_id, users=users, end_ms=end_ms)
            t1 = time.perf_counter()
            store.call(store.insert_arrow, "requests", table, f"bench-scale:{seed}:{start}")
            insert += time.perf_counter() - t1
            build += t1 - t0
        t0 = time.perf_counter()
        for rollup, _, _ in ROLLUPS:
            # The state a running gateway's forced merges keep its rollups in (migrations.py:
            # parts older than 10 min, 1 h, 3 h): 1M-row bulk inserts leave 5-12 parts per
            # partition, which reads about twice as slowly until those merges run.
            store.call(store.command, f"OPTIMIZE TABLE {rollup} FINAL")
        compact = time.perf_counter() - t0
    finally:
        store.close()
    return {"build_s": build, "insert_s": insert, "rows_per_s": rows / (build + insert), "compact_s": compact}


def time_api(url: str, key: str, *, users: int, repeat: int = 7) -> dict[str, float]:
    """Median ms of the users table (default sort, 100 rows) and of user detail, for the default
    range (this month: today's share of the 30 days) and for the last 31 days (every row).

    Timed after one untimed pass of the same calls: the first queries after the gateway starts
    load the parts' marks and indexes (the first 10M users page measured 293 ms, the next ones
    ~220). `users_query_first_ms` is that first page, on its own."""
    now = time.time()
    ranges = {"month": {}, "31d": {"from": time.strftime("%Y-%m-%d", time.gmtime(now - 31 * 86400)),
                                   "to": time.strftime("%Y-%m-%d", time.gmtime(now + 86400))}}
    headers = {"Authorization": f"Bearer {key}"}
    details = [f"/api/users/user-{(i * 7919) % min(users, 5000):06d}@example.com" for i in range(1, 2 * repeat + 2)]
    out: dict[str, float] = {}
    with httpx.Client(base_url=url, headers=headers, timeout=300) as client:
        def timed(path: str, params: dict[str, str]) -> float:
            t0 = time.perf_counter()
            response = client.get(path, params=params)
            elapsed = (time.perf_counter() - t0) * 1000
            if response.status_code != 200:
                raise RuntimeError(f"{path}: {response.status_code} {response.text[:300]}")
            return elapsed

        out["users_query_first_ms"] = timed("/api/users", ranges["31d"])
        for params in ranges.values():  # the untimed pass
            timed("/api/users", params)
            for path in details:
                timed(path, params)
        for name, params in ranges.items():
            suffix = "" if name == "31d" else "_month"
            out[f"users_query_ms{suffix}"] = statistics.median(timed("/api/users", params) for _ in range(repeat))
            out[f"user_detail_ms{suffix}"] = statistics.median(timed(path, params) for path in details)
    return out


def wait_until_idle(pid: int, *, limit: float = 180.0, busy_ms_per_s: float = 100.0) -> float:
    """Seconds until `pid` used under `busy_ms_per_s` of CPU in two 1-s windows in a row (at most
    `limit`). A store opened on a fresh bulk load merges the raw table's parts in the background
    first (minutes at 10M on a slow host): timing then measures queries sharing two cores with a
    merge, which a settled gateway does not see."""
    start = time.monotonic()
    quiet, last = 0, cpu_seconds(pid)
    while quiet < 2 and time.monotonic() - start < limit:
        time.sleep(1.0)
        now = cpu_seconds(pid)
        quiet, last = (quiet + 1 if (now - last) * 1000 < busy_ms_per_s else 0), now
    return time.monotonic() - start


def store_pid(supervisor_pid: int, timeout: float = 30.0) -> int:
    """The gateway's store process (the supervisor starts it beside the proxies)."""
    deadline = time.monotonic() + timeout
    while (pid := gateway_processes(supervisor_pid).get(0)) is None:
        if time.monotonic() > deadline:
            raise RuntimeError("the gateway's store process did not start")
        time.sleep(0.1)
    return pid


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    # python -m usagegate.bench_scale <data dir> <rows> <users> <org id> <seed>
    data_dir, rows, users, org_id, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
    print(json.dumps(generate(data_dir, rows=rows, users=users, org_id=org_id, seed=seed)))


def run_scale(console: Any, *, sizes: tuple[int, ...] = (1_000_000, 10_000_000), users: int = 100_000) -> dict[str, Any]:
    """Grow one data dir to each size in turn and time the analytics API at each."""
    import shutil
    import subprocess
    import tempfile

    from usagegate.children import Child, free_port, python_module
    from usagegate.config_db import ConfigDB

    work = Path(tempfile.mkdtemp(prefix="usagegate-scale-"))
    data = work / "data"
    data.mkdir()
    config = ConfigDB(data)
    key = config.create_key("scale")
    org_id = config.org_id("scale")
    config.close()
    assert org_id is not None
    result: dict[str, Any] = {}
    stored = 0
    try:
        for number, size in enumerate(sizes):
            label = f"{size // 1_000_000}m"
            with console.status(f"generating {size - stored:,} requests…"):
                done = subprocess.run([sys.executable, "-m", "usagegate.bench_scale", str(data), str(size - stored),
                                       str(users), org_id, str(number)], capture_output=True, text=True, check=True)
            stats = json.loads(done.stdout.strip().splitlines()[-1])
            result[f"generate_rows_per_s_{label}"] = round(stats["rows_per_s"])
            result[f"compact_rollups_s_{label}"] = round(stats["compact_s"], 1)
            stored = size
            port = free_port()
            gateway = Child("gateway", python_module("usagegate", "serve", "--port", str(port), "--data-dir", str(data)),
                            work / "gateway.log")
            try:
                gateway.wait_http(f"http://127.0.0.1:{port}/health", timeout=300)
                with console.status("waiting for the store's background merges…"):
                    result[f"settle_s_{label}"] = round(wait_until_idle(store_pid(gateway.pid)), 1)
                with console.status(f"timing analytics over {size:,} requests…"):
                    timings = time_api(f"http://127.0.0.1:{port}", key, users=users)
                for name, value in timings.items():
                    result[f"{name}_{label}"] = round(value, 1)
                processes = gateway_processes(gateway.pid)  # the store process holds the data; the proxy is small
                result[f"rss_mb_{label}"] = round(rss_mb(processes[0]))
                result[f"proxy_rss_mb_{label}"] = round(rss_mb(processes[1]))
            finally:
                gateway.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result



def throughput_by_workers(console: Any, counts: tuple[int, ...], *, seconds: float = 5.0) -> dict[str, Any]:
    """req/s at 32 connections through `serve --workers N` for each N, against one mock, one run each.

    Nothing is pinned: N workers need N cores, and the mock and wrk share the machine with them,
    so on a 2-core machine the second worker competes with the load generator (read the model in
    docs/scaling.md, not just the ratio).
    """
    import shutil
    import tempfile

    import orjson

    from usagegate.children import Child, free_port, python_module
    from usagegate.config_db import ConfigDB
    from usagegate.loadgen import Wrk

    work = Path(tempfile.mkdtemp(prefix="usagegate-workers-"))
    body = orjson.dumps({"model": "gpt-4o-mini", "max_tokens": 64,
                         "messages": [{"role": "user", "content": "Say hello to the benchmark."}]})
    mock_port = free_port()
    mock = Child("mock upstream", python_module("usagegate.mock_upstream", "--port", str(mock_port)), work / "mock.log")
    rps: dict[str, int] = {}
    try:
        mock.wait_http(f"http://127.0.0.1:{mock_port}/_mock/requests")
        for count in counts:
            data = work / f"w{count}"
            data.mkdir()
            config = ConfigDB(data)
            key = config.create_key("bench")
            config.close()
            wrk = Wrk(body, {"Authorization": "Bearer sk-bench", "Helicone-Auth": f"Bearer {key}",
                             "Helicone-User-Id": "bench-user", "Content-Type": "application/json"})
            port = free_port()
            gateway = Child(f"gateway x{count}", python_module(
                "usagegate", "serve", "--port", str(port), "--data-dir", str(data), "--workers", str(count),
                "--openai-base-url", f"http://127.0.0.1:{mock_port}"), work / f"gateway-{count}.log")
            try:
                gateway.wait_http(f"http://127.0.0.1:{port}/health", timeout=120)
                url = f"http://127.0.0.1:{port}/v1/chat/completions"
                with console.status(f"throughput with {count} worker(s)…"):
                    wrk.run(url, connections=32, seconds=1)  # warm-up: every worker's connections open
                    result = wrk.run(url, connections=32, seconds=seconds)
                if result.errors:
                    raise RuntimeError(f"{result.errors} failed requests with {count} workers; see {work}")
                rps[str(count)] = round(result.rps)
            finally:
                gateway.stop()
                wrk.close()
    finally:
        mock.stop()
        shutil.rmtree(work, ignore_errors=True)
    base = rps.get(str(counts[0])) or 1
    return {"throughput_by_workers": rps,
            "throughput_scaling": {n: round(v / base, 2) for n, v in rps.items()}}


def render(result: dict[str, Any], console: Any) -> None:
    """The scale section of the bench table."""
    from rich.table import Table

    table = Table(title="usagegate bench: scale", title_justify="left")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    targets = {"users_query_ms_10m": "≤ 300", "user_detail_ms_10m": "≤ 30", "users_query_ms_month_10m": "≤ 300",
               "user_detail_ms_month_10m": "≤ 30", "rss_mb_10m": "≤ 500"}
    for name, value in result.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {v:,}" for k, v in value.items())
        elif isinstance(value, (int, float)):
            value = f"{value:,}"
        table.add_row(name, str(value), targets.get(name, ""))
    console.print(table)


if __name__ == "__main__":
    main()
