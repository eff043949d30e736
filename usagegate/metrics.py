"""Prometheus `/metrics` (text exposition 0.0.4), rendered on scrape from plain counters.

The proxy path only bumps ints (`Gateway.requests_total`, `errors_total`) and one histogram
(`Histogram.observe`: a bisect and two adds); everything else — spool depth, writer lag, store
state — is computed when Prometheus asks. With `--workers N` the owner gathers every worker's
counters over their Unix sockets (`/_worker/metrics`, JSON) and renders one page with a
`worker` label, so a scrape reaching any worker sees all of them.
"""

from __future__ import annotations

import bisect
from typing import Any

import orjson

# Added latency: what the gateway adds on top of the upstream, in seconds (DESIGN §7 targets
# are 0.4 ms p50 and 1 ms p99, hence the fine low buckets).
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class Histogram:
    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def snapshot(self) -> dict[str, Any]:
        return {"counts": list(self.counts), "sum": self.sum, "count": self.count}


def local_snapshot(gateway: Any, spool: Any) -> dict[str, Any]:
    """This process's proxy counters, as the owner wants them from each worker."""
    return {
        "requests": gateway.requests_total if gateway is not None else 0,
        "errors": gateway.errors_total if gateway is not None else 0,
        "added_latency": gateway.added_latency.snapshot() if gateway is not None else Histogram().snapshot(),
        "spool_appended": getattr(spool, "appended", 0),
        "spool_healthy": bool(getattr(spool, "healthy", True)),
    }


def local_json(gateway: Any, spool: Any) -> bytes:
    return orjson.dumps(local_snapshot(gateway, spool))


def render(workers: dict[str, dict[str, Any]], *, spool_bytes: int, writer_lag: float, inserted: int,
           store_up: bool) -> bytes:
    """The page: per-worker proxy series (label `worker`) and the owner's pipeline gauges."""
    out: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")

    family("usagegate_requests_total", "counter", "Proxied requests received.")
    for label, w in workers.items():
        out.append(f'usagegate_requests_total{{worker="{label}"}} {w["requests"]}')
    family("usagegate_errors_total", "counter", "Proxied requests answered with status >= 400.")
    for label, w in workers.items():
        out.append(f'usagegate_errors_total{{worker="{label}"}} {w["errors"]}')
    family("usagegate_added_latency_seconds", "histogram",
           "Time the gateway adds to a request: before the upstream call and after its answer.")
    for label, w in workers.items():
        hist = w["added_latency"]
        cumulative = 0
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), hist["counts"]):
            cumulative += count
            le = "+Inf" if bound == float("inf") else repr(bound)
            out.append(f'usagegate_added_latency_seconds_bucket{{worker="{label}",le="{le}"}} {cumulative}')
        out.append(f'usagegate_added_latency_seconds_sum{{worker="{label}"}} {hist["sum"]!r}')
        out.append(f'usagegate_added_latency_seconds_count{{worker="{label}"}} {hist["count"]}')
    family("usagegate_spool_records_total", "counter", "Records appended to the spool.")
    for label, w in workers.items():
        out.append(f'usagegate_spool_records_total{{worker="{label}"}} {w["spool_appended"]}')
    family("usagegate_spool_healthy", "gauge", "1 when the spool takes writes.")
    for label, w in workers.items():
        out.append(f'usagegate_spool_healthy{{worker="{label}"}} {int(w["spool_healthy"])}')
    family("usagegate_spool_bytes", "gauge", "Spooled bytes not yet in the log store (every worker's spool).")
    out.append(f"usagegate_spool_bytes {spool_bytes}")
    family("usagegate_writer_lag_seconds", "gauge", "Age of the oldest spooled record not yet in the log store (0 = caught up).")
    out.append(f"usagegate_writer_lag_seconds {writer_lag:.3f}")
    family("usagegate_records_inserted_total", "counter", "Records the batch writers moved into the log store.")
    out.append(f"usagegate_records_inserted_total {inserted}")
    family("usagegate_store_up", "gauge", "1 when the log store is connected and migrated.")
    out.append(f"usagegate_store_up {int(store_up)}")
    return ("\n".join(out) + "\n").encode()
