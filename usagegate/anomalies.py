"""Explained anomaly detection: users whose usage departs from their own past or their plan peers.

For each user active in the window [from, to) (default: today, UTC) four metrics are measured:
requests and cost (per day when the window is longer than a day), tokens per request and error
rate. Each is compared with

- the user's own baseline: the `baseline_days` (14) 24-hour periods before `from`, on the days the
  user was active. Robust z = (x − median) / (1.4826·MAD), with MAD floored at 10% of the median;
  needs ≥ `min_baseline_days` active days, so a brand-new user is judged by peers only;
- plan peers: the other users with the same plan property value active in the same window.
  Across users usage is roughly log-normal (a heavy user is 5× a light one, legitimately), so the
  score is a robust z of ln(x) against the peers' ln values, with the spread floored at 0.25.

Error rates are proportions, so they use a one-sided binomial z against the baseline's (or the
peers') pooled rate instead. A finding needs all of: a large ratio, a large score, and an absolute
excess (`Thresholds`) — so tiny baselines ($0.001 → $0.01 is 10×) and noisy days do not flag.
SQL reads the raw `requests` table; only this module knows it.
"""

from __future__ import annotations

import math
import sqlite3
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from usagegate.api.params import TimeRange, ch_time, money
from usagegate.own_usage import plan_property
from usagegate.store import Store

DAY = timedelta(days=1)
MAD_SCALE = 1.4826  # MAD × this estimates σ for normal data


@dataclass(frozen=True, kw_only=True)
class Thresholds:
    baseline_days: int = 14
    min_baseline_days: int = 5
    min_peers: int = 5
    self_ratio: float = 4.0
    self_score: float = 6.0
    peer_ratio: float = 20.0
    peer_score: float = 4.0
    error_score: float = 6.0
    min_error_requests: int = 20
    min_error_rate: float = 0.25
    min_error_excess: float = 0.20
    # Absolute excess over the baseline a finding needs, per metric.
    min_excess: dict[str, float] = field(default_factory=lambda: {
        "requests": 50.0, "cost_usd": 0.50, "tokens_per_request": 1000.0,
    })


@dataclass(slots=True)
class Usage:
    requests: int = 0
    limited: int = 0
    errors: int = 0
    tokens: int = 0
    cost: Decimal = Decimal(0)

    @property
    def answered(self) -> int:
        return self.requests - self.limited

    def daily_cost(self, days: float = 1.0) -> Decimal:
        """Cost per day, exact: what a finding shows."""
        return self.cost / Decimal(repr(days))

    def metric(self, name: str, days: float = 1.0) -> float:
        """The metric as a float for the robust statistics (scores, ratios); a finding shows
        money from `daily_cost`, never from this."""
        if name == "requests":
            return self.requests / days
        if name == "cost_usd":
            return float(self.daily_cost(days))
        return self.tokens / self.answered if self.answered else 0.0


@dataclass(slots=True)
class Finding:
    metric: str
    compared_with: str  # "own_baseline" | "plan_peers"
    value: float | Decimal  # Decimal for cost_usd (exact money)
    baseline: float | Decimal
    ratio: float
    score: float
    reason: str

    def as_json(self) -> dict[str, Any]:
        def render(x: float | Decimal) -> Any:
            if isinstance(x, Decimal):
                return money(x)
            if self.metric == "error_rate":
                return round(x, 4)
            return round(x, 1)

        return {
            "metric": self.metric, "compared_with": self.compared_with, "value": render(self.value),
            "baseline": render(self.baseline), "ratio": round(self.ratio, 1), "score": round(self.score, 1),
            "reason": self.reason,
        }


_WINDOW = """
SELECT user_id, count() AS n, countIf(rate_limited) AS limited,
       countIf(status >= 400 AND NOT rate_limited) AS errors,
       sum(prompt_tokens + completion_tokens) AS tokens, toString(sum(ifNull(cost_usd, 0))) AS cost,
       argMaxIf(properties[{prop:String}], created_at, mapContains(properties, {prop:String})) AS plan
FROM requests
WHERE org_id = {org:String} AND created_at >= {t_from:DateTime64(3)} AND created_at < {t_to:DateTime64(3)}
GROUP BY user_id
"""

_BASELINE = """
SELECT user_id, intDiv(toUInt64(dateDiff('second', {b_from:DateTime64(3)}, created_at)), 86400) AS day,
       count() AS n, countIf(rate_limited) AS limited, countIf(status >= 400 AND NOT rate_limited) AS errors,
       sum(prompt_tokens + completion_tokens) AS tokens, toString(sum(ifNull(cost_usd, 0))) AS cost
FROM requests
WHERE org_id = {org:String} AND created_at >= {b_from:DateTime64(3)} AND created_at < {t_from:DateTime64(3)}
  AND user_id IN (SELECT DISTINCT user_id FROM requests WHERE org_id = {org:String}
                  AND created_at >= {t_from:DateTime64(3)} AND created_at < {t_to:DateTime64(3)})
GROUP BY user_id, day
"""


def _usage(row: dict[str, Any]) -> Usage:
    return Usage(int(row["n"]), int(row["limited"]), int(row["errors"]), int(row["tokens"]), Decimal(row["cost"]))


async def find_anomalies(
    store: Store, conn: sqlite3.Connection, org_id: str, span: TimeRange, *,
    thresholds: Thresholds = Thresholds(), now: datetime | None = None,
) -> dict[str, Any]:
    """Anomalous users of the org in `span`, most extreme first, each with findings and reasons."""
    t = thresholds
    prop = plan_property(conn, org_id)
    base_from = span.start - t.baseline_days * DAY
    params = {"org": org_id, "prop": prop, **span.params(), "b_from": ch_time(base_from)}
    window_rows = await store.query(_WINDOW, params)
    baseline_rows = await store.query(_BASELINE, params)
    window = {r["user_id"]: _usage(r) for r in window_rows}
    plans = {r["user_id"]: r["plan"] for r in window_rows}
    history: dict[str, list[Usage]] = defaultdict(list)
    for r in baseline_rows:
        history[r["user_id"]].append(_usage(r))
    days = max((span.end - span.start) / DAY, 1.0)
    label = _window_label(span, now or datetime.now(timezone.utc))
    by_plan: dict[str, list[str]] = defaultdict(list)
    for user, plan in plans.items():
        by_plan[plan].append(user)

    users = []
    for user, usage in window.items():
        findings = _self_findings(usage, history.get(user, []), days, label, t)
        findings += _peer_findings(user, usage, [window[p] for p in by_plan[plans[user]] if p != user],
                                   plans[user], prop, days, label, t)
        if findings:
            findings.sort(key=lambda f: f.ratio, reverse=True)
            users.append({
                "user_id": user, "plan": plans[user] or None, "ratio": round(findings[0].ratio, 1),
                "reasons": [f.reason for f in findings], "findings": [f.as_json() for f in findings],
            })
    users.sort(key=lambda u: (-u["ratio"], u["user_id"]))
    return {
        "from": _iso(span.start), "to": _iso(span.end), "baseline_days": t.baseline_days,
        "plan_property": prop, "users_checked": len(window), "count": len(users), "anomalies": users,
    }


def _self_findings(usage: Usage, past: list[Usage], days: float, label: str, t: Thresholds) -> list[Finding]:
    active = [u for u in past if u.requests > 0]
    if len(active) < t.min_baseline_days:
        return []
    out = []
    who = f"this user's {t.baseline_days}-day median"
    for name in ("requests", "cost_usd", "tokens_per_request"):
        values = [u.metric(name) for u in active if name != "tokens_per_request" or u.answered]
        if len(values) < t.min_baseline_days:
            continue
        x = usage.metric(name, days)
        med = statistics.median(values)
        mad = statistics.median(abs(v - med) for v in values)
        spread = max(MAD_SCALE * mad, 0.1 * med, 1e-9)
        score = (x - med) / spread
        ratio = x / med if med > 0 else math.inf
        if ratio >= t.self_ratio and score >= t.self_score and x - med >= t.min_excess[name]:
            shown, base = _shown(name, x, med, usage.daily_cost(days), [u.daily_cost() for u in active])
            out.append(Finding(name, "own_baseline", shown, base, ratio, score,
                               f"{_describe(name, label)} {_fmt(name, shown)} is {_times(ratio)} {who} of {_fmt(name, base)}"
                               f" ({len(active)} active days; robust z {score:.0f})"))
    pooled = Usage(sum(u.requests for u in past), sum(u.limited for u in past), sum(u.errors for u in past))
    finding = _error_finding(usage, pooled, "own_baseline", f"this user's {t.baseline_days}-day rate", label, t)
    return out + ([finding] if finding else [])


def _peer_findings(user: str, usage: Usage, peers: list[Usage], plan: str, prop: str, days: float,
                   label: str, t: Thresholds) -> list[Finding]:
    if len(peers) < t.min_peers:
        return []
    group = f"the median of {len(peers)} other users on {prop} {plan!r}" if plan else \
        f"the median of {len(peers)} other users without a {prop}"
    out = []
    for name in ("requests", "cost_usd", "tokens_per_request"):
        floor = {"requests": 1.0, "cost_usd": 1e-4, "tokens_per_request": 1.0}[name]
        values = [p.metric(name, days) for p in peers if name != "tokens_per_request" or p.answered]
        if len(values) < t.min_peers:
            continue
        x = usage.metric(name, days)
        med = statistics.median(values)
        logs = [math.log(max(v, floor)) for v in values]
        log_med = statistics.median(logs)
        log_spread = max(MAD_SCALE * statistics.median(abs(v - log_med) for v in logs), 0.25)
        score = (math.log(max(x, floor)) - log_med) / log_spread
        ratio = x / med if med > 0 else math.inf
        if ratio >= t.peer_ratio and score >= t.peer_score and x - med >= t.min_excess[name]:
            shown, base = _shown(name, x, med, usage.daily_cost(days), [p.daily_cost(days) for p in peers])
            out.append(Finding(name, "plan_peers", shown, base, ratio, score,
                               f"{_describe(name, label)} {_fmt(name, shown)} is {_times(ratio)} {group} of "
                               f"{_fmt(name, base)} (robust z of log {score:.1f})"))
    pooled = Usage(sum(p.requests for p in peers), sum(p.limited for p in peers), sum(p.errors for p in peers))
    finding = _error_finding(usage, pooled, "plan_peers", group.replace("the median", "the pooled rate"), label, t)
    return out + ([finding] if finding else [])


def _error_finding(usage: Usage, pooled: Usage, compared_with: str, who: str, label: str, t: Thresholds) -> Finding | None:
    n = usage.answered
    if n < t.min_error_requests or pooled.answered == 0:
        return None
    rate = usage.errors / n
    base = pooled.errors / pooled.answered
    p0 = min(max(base, 0.01), 0.99)  # a spotless baseline must not make one error infinitely surprising
    score = (usage.errors - n * p0) / math.sqrt(n * p0 * (1 - p0))
    if rate < t.min_error_rate or rate - base < t.min_error_excess or score < t.error_score:
        return None
    return Finding("error_rate", compared_with, rate, base, rate / p0, score,
                   f"error rate {label} {rate:.0%} ({usage.errors} of {n} requests) vs {who} of {base:.1%} "
                   f"(binomial z {score:.0f})")


def _window_label(span: TimeRange, now: datetime) -> str:
    if span.end - span.start == DAY and span.start.time() == datetime.min.time():
        return "today" if span.start.date() == now.date() else f"on {span.start.date().isoformat()}"
    return f"from {_iso(span.start)} to {_iso(span.end)}" if span.end - span.start <= DAY else \
        f"per day from {span.start.date().isoformat()} to {span.end.date().isoformat()}"


def _describe(name: str, label: str) -> str:
    if name == "tokens_per_request":
        label = label.replace("per day ", "")
    return {"requests": f"requests {label}", "cost_usd": f"cost {label}",
            "tokens_per_request": f"tokens per request {label}"}[name]


def _shown(
    name: str, x: float, med: float, cost: Decimal, costs: list[Decimal]
) -> tuple[float | Decimal, float | Decimal]:
    """What a finding shows: money exactly (Decimal median of Decimals), other metrics as scored."""
    if name == "cost_usd":
        return cost, statistics.median(costs)
    return x, med


def _fmt(name: str, x: float | Decimal) -> str:
    if name == "cost_usd":
        return f"${x:,.2f}" if x >= 0.1 else f"${x:.4f}"
    if name == "requests":
        return f"{x:,.0f}"
    return f"{x:,.0f}"


def _times(ratio: float) -> str:
    return "∞×" if math.isinf(ratio) else (f"{ratio:.0f}×" if ratio >= 10 else f"{ratio:.1f}×")


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def today(now: datetime | None = None) -> TimeRange:
    """The current UTC day: the default window."""
    now = now or datetime.now(timezone.utc)
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return TimeRange(start, start + DAY)
