"""`usagegate bench --json --quick` end to end: real mock, minimal proxy, gateway, wrk, chDB."""

from __future__ import annotations

import json
import subprocess

from tests.servers import PYTHON, _env

KEYS = ("overhead_p50_ms", "overhead_p99_ms", "throughput_vs_minimal", "throughput_ratio",
        "streaming_ttfb_added_ms", "ingest_records_per_s", "over_minimal_p50_ms", "over_minimal_p99_ms")


def test_bench_quick_json_reports_every_figure() -> None:
    done = subprocess.run([PYTHON, "-m", "usagegate", "bench", "--json", "--quick"],
                          capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert set(KEYS) <= result.keys()
    # Sane, not fast: this machine is shared, so only the physics is asserted.
    assert 0 < result["direct_p50_ms"] < result["gateway_p50_ms"] < 1000
    assert -50 < result["overhead_p50_ms"] < 1000 and -50 < result["overhead_p99_ms"] < 5000
    # One round (--quick): gateway − minimal < gateway − direct, since the minimal proxy is a hop
    # slower than calling the mock directly.
    assert result["over_minimal_p50_ms"] < result["overhead_p50_ms"]
    assert 0 < result["throughput_vs_minimal"] < 3 and 0 < result["throughput_ratio"] < 3
    assert result["gateway_rps"] > 10 and result["minimal_rps"] > 10 and result["direct_rps"] > 10
    assert -50 < result["streaming_ttfb_added_ms"] < 1000
    assert result["ingest_records_per_s"] > 100
    assert result["gateway_cpu_us_per_request"] > 0
