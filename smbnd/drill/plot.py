"""The timeline picture as drawing primitives (pixel coordinates), rendered to SVG by ``report``
and to PNG by ``png``: one panel per client with its I/O latency over drill time (log scale),
failed I/Os as red crosses, reconnects as shaded spans, timeline operations as vertical dashed
lines with labels, and the cluster events as ticks in a lane at the bottom."""
from __future__ import annotations

import math

PALETTE = ["#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#bcbd22", "#e377c2", "#7f7f7f"]
W, LEFT, RIGHT, TOP, PANEL_H, GAP, EV_LANE = 1100, 70, 20, 92, 170, 30, 70
SHOWN_EVENTS = {"node_down", "node_fenced", "node_up", "takeover_start", "takeover_done", "giveback_start",
                "giveback_done", "lif_moving", "lif_moved", "lif_down", "lif_up", "aggr_relocating",
                "aggr_relocated", "vol_moving", "vol_moved", "partition_detected", "fault", "fault_cleared"}


def build(result: dict) -> tuple[int, int, list[tuple]]:
    """result.json dict -> (width, height, primitives). Primitives:
    ("line", x1, y1, x2, y2, color, width, dashed) ("poly", [(x, y)...], color, width)
    ("dot", x, y, r, color) ("cross", x, y, r, color) ("rect", x, y, w, h, color, opacity)
    ("text", x, y, text, color, size, anchor)   anchor: start|middle|end; y is the baseline."""
    clients = result.get("clients", {})
    names = list(clients)
    n = max(1, len(names))
    height = TOP + n * (PANEL_H + GAP) + EV_LANE + 30
    prims: list[tuple] = []
    t_end = float(result.get("t_end") or 1.0)
    t_lo = min(0.0, *(r["start"] for c in clients.values() for r in c.get("records", [])[:1]))
    t_hi = max(t_end, 1.0)
    plot_w = W - LEFT - RIGHT

    def X(t: float) -> float:
        return LEFT + (t - t_lo) / (t_hi - t_lo) * plot_w

    lat_all = [max(0.1, (r["end"] - r["start"]) * 1000) for c in clients.values() for r in c.get("records", [])
               if r.get("op") in ("write", "read")]
    y_max = 10 ** math.ceil(math.log10(max(lat_all + [10.0])))
    y_min = 0.1
    prims.append(("rect", 0, 0, W, height, "#ffffff", 1.0))
    title = f"{result.get('name', 'drill')}  -  {'PASS' if result.get('verdict', {}).get('passed') else 'FAIL'}"
    prims.append(("text", LEFT, 22, title, "#000000", 16, "start"))
    prims.append(("text", LEFT, 40, "I/O latency (ms, log) over drill time (s); dashed: operations; "
                  "x: failed I/O; shaded: reconnecting", "#444444", 11, "start"))
    for i, name in enumerate(names):
        c = clients[name]
        y0 = TOP + i * (PANEL_H + GAP)
        color = PALETTE[i % len(PALETTE)]

        def Y(ms: float) -> float:
            v = min(max(ms, y_min), y_max)
            frac = (math.log10(v) - math.log10(y_min)) / (math.log10(y_max) - math.log10(y_min))
            return y0 + PANEL_H - frac * PANEL_H

        prims.append(("rect", LEFT, y0, plot_w, PANEL_H, "#f7f7f7", 1.0))
        prims.append(("text", LEFT + 6, y0 + 14, f"{name} ({c.get('summary', {}).get('kind', '')})", color, 12,
                      "start"))
        dec = y_min
        while dec <= y_max:
            prims.append(("line", LEFT, Y(dec), LEFT + plot_w, Y(dec), "#dddddd", 1, False))
            prims.append(("text", LEFT - 6, Y(dec) + 4, _fmt_ms(dec), "#555555", 10, "end"))
            dec *= 10
        for r in c.get("records", []):
            if r.get("op") == "reconnect":
                prims.append(("rect", X(r["start"]), y0, max(1.0, X(r["end"]) - X(r["start"])), PANEL_H,
                              "#ff9900" if r.get("ok") else "#d62728", 0.25))
        pts = [(X(r["start"]), Y((r["end"] - r["start"]) * 1000)) for r in c.get("records", [])
               if r.get("op") == "write" and r.get("ok")]
        if len(pts) > 1:
            prims.append(("poly", pts, color, 1))
        for r in c.get("records", []):
            if r.get("op") not in ("write", "read", "verify", "open", "close"):
                continue
            x, y = X(r["start"]), Y((r["end"] - r["start"]) * 1000)
            if r.get("ok"):
                w = r["op"] == "write"
                prims.append(("dot", x, y, 2 if w else 1.5, color if w else "#555555"))
            else:
                prims.append(("cross", x, Y(y_max) + 6, 4, "#d62728"))
    lane = TOP + n * (PANEL_H + GAP)
    # axis
    step = _nice_step(t_hi - t_lo)
    t = math.ceil(t_lo / step) * step
    k = 0
    while t <= t_hi + 1e-9 and k < 200:
        prims.append(("line", X(t), lane - GAP + 4, X(t), lane - GAP + 9, "#000000", 1, False))
        prims.append(("text", X(t), lane - GAP + 20, f"{t:g}", "#000000", 10, "middle"))
        t += step
        k += 1
    # operations
    op_rows = _Rows(3)
    for o in result.get("ops", []):
        x = X(o["start"])
        prims.append(("line", x, TOP - 6, x, lane + EV_LANE, "#d62728" if not o.get("ok") else "#000000", 1, True))
        if o.get("end", o["start"]) - o["start"] > 0.05:
            prims.append(("rect", x, TOP - 6, max(1.0, X(o["end"]) - x), 5, "#000000", 0.5))
        row = op_rows.place(x + 3, len(o["op"]) * 6.5)
        if row is not None:
            prims.append(("text", x + 3, TOP - 34 + row * 11, o["op"], "#000000", 11, "start"))
    # events lane
    prims.append(("text", LEFT - 6, lane + 12, "events", "#555555", 10, "end"))
    shown = [e for e in result.get("events", []) if e.get("type") in SHOWN_EVENTS and e.get("t") is not None
             and t_lo <= e["t"] <= t_hi]
    ev_rows = _Rows(4)
    for e in shown[:200]:
        x = X(e["t"])
        prims.append(("line", x, lane, x, lane + 8, "#9467bd", 2, False))
        label = e["type"] + (f" {e.get('node') or e.get('lif') or e.get('aggr') or e.get('vol') or ''}").rstrip()
        row = ev_rows.place(x + 2, len(label) * 6.0)
        if row is not None:                  # no free row: the tick stays, the label is in report.md
            prims.append(("text", x + 2, lane + 20 + row * 12, label, "#6a3d9a", 9, "start"))
    return W, height, prims


class _Rows:
    """Greedy label rows: a label goes to the first row whose last label ends left of it."""

    def __init__(self, n: int):
        self.right = [-1e9] * n

    def place(self, x: float, width: float) -> int | None:
        for i, r in enumerate(self.right):
            if x >= r + 4:
                self.right[i] = x + width
                return i
        return None


def _fmt_ms(v: float) -> str:
    return f"{v:g} ms" if v < 1000 else f"{v / 1000:g} s"


def _nice_step(span: float) -> float:
    raw = max(span, 1e-3) / 12
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def to_svg(width: int, height: int, prims: list[tuple]) -> str:
    from xml.sax.saxutils import escape
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Arial, sans-serif">']
    for p in prims:
        kind = p[0]
        if kind == "line":
            _, x1, y1, x2, y2, color, w, dashed = p
            dash = ' stroke-dasharray="5,4"' if dashed else ""
            out.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{color}" '
                       f'stroke-width="{w}"{dash}/>')
        elif kind == "poly":
            pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in p[1])
            out.append(f'<polyline points="{pts}" fill="none" stroke="{p[2]}" stroke-width="{p[3]}" '
                       f'stroke-opacity="0.6"/>')
        elif kind == "dot":
            out.append(f'<circle cx="{p[1]:.1f}" cy="{p[2]:.1f}" r="{p[3]}" fill="{p[4]}"/>')
        elif kind == "cross":
            _, x, y, r, color = p
            out.append(f'<path d="M{x - r:.1f},{y - r:.1f}L{x + r:.1f},{y + r:.1f}M{x - r:.1f},{y + r:.1f}'
                       f'L{x + r:.1f},{y - r:.1f}" stroke="{color}" stroke-width="2"/>')
        elif kind == "rect":
            _, x, y, w, h, color, op = p
            out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" fill="{color}" '
                       f'fill-opacity="{op}"/>')
        elif kind == "text":
            _, x, y, text, color, size, anchor = p
            out.append(f'<text x="{x:.1f}" y="{y:.1f}" fill="{color}" font-size="{size}" '
                       f'text-anchor="{anchor}">{escape(str(text))}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
