"""Plotly figure specs (plain dicts, drawn by plotly.js in the browser) from analytics results.

Money goes to plotly as the exact decimal strings (plotly reads numeric strings), so no float is
made on the server. Every figure shares one look (`_layout`).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from usagegate.web.render import usd, user_path

INDIGO = "#4f46e5"
TEAL = "#0d9488"
PALETTE = ["#4f46e5", "#0d9488", "#f59e0b", "#db2777", "#0284c7", "#7c3aed", "#65a30d", "#ea580c", "#64748b"]
PLAN_COLORS = {"free": "#94a3b8", "pro": "#4f46e5", "enterprise": "#c026d3", "(no plan)": "#cbd5e1"}
FONT = "Inter, ui-sans-serif, system-ui, -apple-system, Segoe UI, Roboto, Helvetica Neue, Arial, sans-serif"

Figure = dict[str, Any]


def _layout(**extra: Any) -> dict[str, Any]:
    axis = {"gridcolor": "#eef0f4", "zeroline": False, "linecolor": "#e4e7ee", "tickfont": {"color": "#64748b", "size": 11},
            "automargin": True}
    layout: dict[str, Any] = {
        "margin": {"l": 8, "r": 8, "t": 8, "b": 8},
        "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(0,0,0,0)",
        "font": {"family": FONT, "size": 12, "color": "#0f172a"},
        "hoverlabel": {"bgcolor": "#0f172a", "bordercolor": "#0f172a", "font": {"color": "#fff", "family": FONT}},
        "xaxis": dict(axis), "yaxis": dict(axis),
        "showlegend": False, "bargap": 0.25,
        "legend": {"orientation": "h", "y": 1.12, "x": 0, "font": {"size": 11, "color": "#64748b"}},
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(layout.get(key), dict):
            layout[key] = {**layout[key], **value}
        else:
            layout[key] = value
    return layout


def usage_over_time(series: Sequence[dict[str, Any]], interval: str) -> Figure:
    """Cost (bars, left axis) and requests (line, right axis) per hour or day."""
    xs = [p["t"] for p in series]
    hover_t = "%{x|%b %-d, %H:%M}" if interval == "hour" else "%{x|%b %-d}"
    return {
        "data": [
            {"type": "bar", "name": "Cost", "x": xs, "y": [p["cost_usd"] for p in series], "marker": {"color": INDIGO},
             "hovertemplate": f"{hover_t}<br>Cost $%{{y:,.4f}}<extra></extra>"},
            {"type": "scatter", "mode": "lines", "name": "Requests", "x": xs, "y": [p["requests"] for p in series],
             "yaxis": "y2", "line": {"color": TEAL, "width": 2},
             "hovertemplate": f"{hover_t}<br>%{{y:,}} requests<extra></extra>"},
        ],
        "layout": _layout(
            showlegend=True, yaxis={"tickprefix": "$", "rangemode": "tozero"},
            yaxis2={"overlaying": "y", "side": "right", "showgrid": False, "rangemode": "tozero", "automargin": True,
                    "tickmode": "auto", "nticks": 5,
                    "tickformat": "~s", "tickfont": {"color": TEAL, "size": 11}, "zeroline": False},
            xaxis={"type": "date"}, margin={"t": 28},
        ),
    }


def tokens_over_time(series: Sequence[dict[str, Any]], interval: str) -> Figure:
    xs = [p["t"] for p in series]
    hover_t = "%{x|%b %-d, %H:%M}" if interval == "hour" else "%{x|%b %-d}"
    return {
        "data": [{"type": "scatter", "mode": "lines", "fill": "tozeroy", "x": xs, "y": [p["total_tokens"] for p in series],
                  "line": {"color": "#7c3aed", "width": 2}, "fillcolor": "rgba(124,58,237,0.12)",
                  "hovertemplate": f"{hover_t}<br>%{{y:,}} tokens<extra></extra>"}],
        "layout": _layout(xaxis={"type": "date"}, yaxis={"rangemode": "tozero"}),
    }


def cost_histogram(costs: Sequence[Decimal], bins: int = 24) -> Figure:
    """How many users fall in each cost band. Binned here with exact Decimal edges, so the page
    carries `bins` bars however many users there are."""
    if not costs:
        return {"data": [], "layout": _layout()}
    low, high = min(costs), max(costs)
    width = (high - low) / bins if high > low else Decimal(1)
    counts = [0] * bins
    for cost in costs:
        counts[min(int((cost - low) / width), bins - 1)] += 1
    starts = [low + width * i for i in range(bins)]
    labels = [f"{usd(s)} – {usd(s + width)}" for s in starts]
    return {
        "data": [{"type": "bar", "x": [str(s + width / 2) for s in starts], "y": counts, "width": str(width * Decimal("0.92")),
                  "text": labels, "marker": {"color": INDIGO},
                  "hovertemplate": "%{text}<br>%{y} users<extra></extra>", "textposition": "none"}],
        "layout": _layout(xaxis={"tickprefix": "$", "title": {"text": "cost per user", "font": {"size": 11, "color": "#64748b"}}},
                          yaxis={"title": {"text": "users", "font": {"size": 11, "color": "#64748b"}}}),
    }


def avg_cost_by_plan(groups: Sequence[dict[str, Any]]) -> Figure:
    labels = [g["value"] if g["value"] is not None else "(no plan)" for g in groups]
    return {
        "data": [{"type": "bar", "x": labels, "y": [str(g["avg_cost_per_user"]) for g in groups],
                  "marker": {"color": [PLAN_COLORS.get(str(v).lower(), PALETTE[i % len(PALETTE)]) for i, v in enumerate(labels)]},
                  "text": [f"{g['users']} users" for g in groups], "textposition": "auto",
                  "customdata": [[str(g["median_cost_per_user"]), str(g["p90_cost_per_user"])] for g in groups],
                  "hovertemplate": "%{x}<br>avg $%{y:,.4f} per user<br>median $%{customdata[0]:,.4f} · p90 $%{customdata[1]:,.4f}<extra></extra>"}],
        "layout": _layout(yaxis={"tickprefix": "$", "rangemode": "tozero"}, xaxis={"type": "category"}),
    }


def top_users(rows: Sequence[dict[str, Any]], range_query: str) -> Figure:
    """Horizontal bars, biggest on top; clicking a bar opens that user."""
    rows = list(reversed(rows))
    labels = [r["user_id"] or "(anonymous)" for r in rows]
    return {
        "data": [{"type": "bar", "orientation": "h", "y": labels, "x": [str(r["cost_usd"]) for r in rows],
                  "marker": {"color": INDIGO}, "customdata": [[user_path(r["user_id"]) + range_query] for r in rows],
                  "hovertemplate": "%{y}<br>$%{x:,.4f}<extra></extra>"}],
        "layout": _layout(xaxis={"tickprefix": "$"}, yaxis={"type": "category", "automargin": True}, bargap=0.35),
    }


def model_mix(models: Sequence[dict[str, Any]]) -> Figure:
    return {
        "data": [{"type": "pie", "hole": 0.6, "labels": [m["model"] for m in models],
                  "values": [str(m["cost_usd"]) for m in models], "sort": False,
                  "marker": {"colors": PALETTE, "line": {"color": "#fff", "width": 2}},
                  "textinfo": "percent", "textfont": {"color": "#fff", "size": 11},
                  "hovertemplate": "%{label}<br>$%{value:,.6f} (%{percent})<extra></extra>"}],
        "layout": _layout(showlegend=True, legend={"orientation": "v", "x": 1.02, "y": 0.5}),
    }


def latency_points(requests: Sequence[dict[str, Any]]) -> Figure:
    """Latency of recent requests over time, errors in red."""
    return {
        "data": [{"type": "scatter", "mode": "markers", "x": [r["created_at"] for r in requests],
                  "y": [r["latency_ms"] for r in requests], "text": [r["model"] for r in requests],
                  "marker": {"size": 7, "opacity": 0.8,
                             "color": ["#dc2626" if r["status"] >= 400 else INDIGO for r in requests]},
                  "hovertemplate": "%{x|%b %-d, %H:%M:%S}<br>%{text}<br>%{y:,} ms<extra></extra>"}],
        "layout": _layout(xaxis={"type": "date"}, yaxis={"ticksuffix": " ms", "rangemode": "tozero"}),
    }


def revenue_vs_cost(users: Sequence[dict[str, Any]], range_query: str) -> Figure:
    """Cost per user (log scale, one dot each, red when it exceeds the user's revenue) in a column
    per plan, with the plan's revenue per user as a dashed line; clicking a dot opens the user."""
    by_plan: dict[str, list[dict[str, Any]]] = {}
    for u in users:
        by_plan.setdefault(u["plan"] or "(no plan)", []).append(u)
    plans = sorted(by_plan, key=lambda p: (max(Decimal(str(r["revenue_usd"])) for r in by_plan[p]), p))
    data: list[dict[str, Any]] = []
    for i, plan in enumerate(plans):
        rows = [r for r in by_plan[plan] if Decimal(str(r["cost_usd"])) > 0]  # a log axis has no zero
        for losing, color, name in ((True, "#dc2626", "loses money"), (False, "#059669", "profitable")):
            part = [r for r in rows if (Decimal(str(r["margin_usd"])) < 0) == losing]
            if not part:
                continue
            data.append({
                "type": "scatter", "mode": "markers", "name": name, "legendgroup": name, "showlegend": False,
                # Deterministic jitter from the user id, so the picture is the same on every load.
                "x": [i + ((sum(map(ord, r["user_id"])) * 7919) % 1000 / 1000 - 0.5) * 0.6 for r in part],
                "y": [str(r["cost_usd"]) for r in part],
                "text": [r["user_id"] or "(anonymous)" for r in part],
                "customdata": [[user_path(r["user_id"]) + range_query, str(r["revenue_usd"])] for r in part],
                "marker": {"size": 7, "opacity": 0.65, "color": color, "line": {"color": "#fff", "width": 0.5}},
                "hovertemplate": "%{text}<br>cost $%{y:,.4f}<br>revenue $%{customdata[1]:,.2f}<extra>" + plan + "</extra>",
            })
        revenue = max(Decimal(str(r["revenue_usd"])) for r in by_plan[plan])
        if revenue > 0:
            data.append({"type": "scatter", "mode": "lines", "x": [i - 0.42, i + 0.42], "y": [str(revenue)] * 2,
                         "line": {"color": PLAN_COLORS.get(plan.lower(), "#64748b"), "width": 2.5, "dash": "dash"},
                         "hovertemplate": f"{plan}: revenue {usd(revenue)} per user<extra></extra>", "showlegend": False})
    return {"data": data, "layout": _layout(
        xaxis={"tickvals": list(range(len(plans))), "ticktext": plans, "range": [-0.6, len(plans) - 0.4],
               "showgrid": False},
        yaxis={"type": "log", "tickprefix": "$", "exponentformat": "none", "title": {"text": "cost per user (log)", "font": {"size": 11, "color": "#64748b"}}})}


def margin_by_plan(plans: Sequence[dict[str, Any]]) -> Figure:
    labels = [p["plan"] or "(no plan)" for p in plans]
    return {
        "data": [
            {"type": "bar", "name": "Revenue", "x": labels, "y": [str(p["revenue_usd"]) for p in plans], "marker": {"color": "#a5b4fc"},
             "hovertemplate": "%{x}<br>revenue $%{y:,.2f}<extra></extra>"},
            {"type": "bar", "name": "Cost", "x": labels, "y": [str(p["cost_usd"]) for p in plans], "marker": {"color": INDIGO},
             "hovertemplate": "%{x}<br>cost $%{y:,.4f}<extra></extra>"},
        ],
        "layout": _layout(showlegend=True, barmode="group", margin={"t": 28}, yaxis={"tickprefix": "$"},
                          xaxis={"type": "category"}),
    }
