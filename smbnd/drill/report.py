"""Drill outputs in ``--out DIR``: result.json (everything), report.md (the verdict for humans),
timeline.svg (hand-written SVG) and timeline.png (the same picture through ``png``)."""
from __future__ import annotations

import json
import os

from . import plot
from .png import render

KEY_EVENTS = plot.SHOWN_EVENTS | {"cluster_up", "cluster_down"}


def write_all(result: dict, out_dir: str, png: bool = True) -> dict[str, str]:
    os.makedirs(out_dir, exist_ok=True)
    paths = {}
    p = os.path.join(out_dir, "result.json")
    with open(p, "w") as f:
        json.dump(result, f, indent=1, sort_keys=False, default=str)
    paths["result.json"] = p
    p = os.path.join(out_dir, "report.md")
    with open(p, "w") as f:
        f.write(markdown(result))
    paths["report.md"] = p
    w, h, prims = plot.build(result)
    p = os.path.join(out_dir, "timeline.svg")
    with open(p, "w") as f:
        f.write(plot.to_svg(w, h, prims))
    paths["timeline.svg"] = p
    if png:
        p = os.path.join(out_dir, "timeline.png")
        with open(p, "wb") as f:
            f.write(render(w, h, prims))
        paths["timeline.png"] = p
    return paths


def _s(v, nd: int = 2) -> str:
    return "–" if v is None else f"{v:.{nd}f}"


def _detail(e: dict) -> str:
    skip = {"seq", "ts", "type", "t", "placement"}
    return ", ".join(f"{k}={v}" for k, v in e.items() if k not in skip)


def markdown(r: dict) -> str:
    v = r.get("verdict", {})
    L = [f"# Drill: {r.get('name')}", ""]
    if r.get("description"):
        L += [r["description"], ""]
    L += [f"**Verdict: {'PASS' if v.get('passed') else 'FAIL'}**" +
          ("" if v.get("passed") else " — " + "; ".join(v.get("failures", []))), "",
          f"- drill: `{r.get('source')}`", f"- cluster config: `{r.get('cluster_config')}`",
          f"- started: {r.get('started_at')} (t = 0 is the timeline's origin; clients start "
          f"{r.get('settle', 0):g} s earlier), run length {_s(r.get('t_end'), 1)} s", ""]
    L += ["## Checks", "", "| check | result | detail |", "|---|---|---|"]
    for c in v.get("checks", []):
        L.append(f"| {c['check']} | {'ok' if c['ok'] else '**FAIL**'} | {c['detail']} |")
    L += ["", "## Operations", "", "| at (s) | operation | started (s) | took (ms) | result |", "|---|---|---|---|---|"]
    for o in r.get("ops", []):
        res = "ok" if o.get("ok") else f"**failed**: {o.get('error', o.get('http'))}"
        L.append(f"| {o['at']:g} | `{o['op']}` | {_s(o['start'])} | {(o['end'] - o['start']) * 1000:.0f} | {res} |")
    L += ["", "## Clients", "",
          "| client | kind | I/Os ok | errors | longest pause (s) | paused from–to (s) | typical gap (s) "
          "| reconnects (reclaimed) | handles reclaimed | data verified | latency p50/p99/max (ms) |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, c in v.get("clients", {}).items():
        kind = r.get("clients", {}).get(name, {}).get("summary", {}).get("kind", "")
        lat = c.get("latency_ms", {})
        L.append(f"| {name} | {kind} | {c['ios_ok']} | {c['errors']} | {_s(c['max_pause_s'])} | "
                 f"{_s(c['max_pause_from'])}–{_s(c['max_pause_to'])} | {_s(c.get('typical_gap_s'), 3)} | "
                 f"{c['reconnects']} ({c['reclaimed']}) | "
                 f"{'yes' if c['handles_reclaimed'] else 'no'} | {c['data_verified']} | "
                 f"{lat.get('p50', '–')}/{lat.get('p99', '–')}/{lat.get('max', '–')} |")
    L += ["", "## I/O pause around each operation", "",
          "Longest gap between two successful I/O completions from the operation's start to the next one's.", "",
          "| client | operation | op took (s) | paused from (s) | to (s) | pause (s) | first I/O after op start (s) |",
          "|---|---|---|---|---|---|---|"]
    for name, c in v.get("clients", {}).items():
        for p in c.get("pauses", []):
            to = _s(p["paused_to"]) + (" (end; I/O never resumed)" if p["paused_to"] is not None
                                        and not p.get("resumed", True) else "")
            L.append(f"| {name} | `{p['op']}` | {_s(p['op_end'] - p['op_start'])} | {_s(p['paused_from'])} | "
                     f"{to} | {_s(p['pause_s'])} | {_s(p['first_io_after_s'])} |")
    errs = [(n, e) for n, c in v.get("clients", {}).items() for e in c.get("error_samples", [])]
    if errs:
        L += ["", "## Errors seen by clients", "", "| client | op | start (s) | end (s) | status |",
              "|---|---|---|---|---|"]
        L += [f"| {n} | {e['op']} | {_s(e['start'])} | {_s(e['end'])} | {e['status']} |" for n, e in errs]
    recon = [(n, x) for n, c in r.get("clients", {}).items() for x in c.get("records", [])
             if x.get("op") == "reconnect"]
    if recon:
        L += ["", "## Reconnects", "",
              "| client | from (s) | to (s) | took (s) | tries | reason | reclaimed | address |",
              "|---|---|---|---|---|---|---|---|"]
        L += [f"| {n} | {_s(x['start'])} | {_s(x['end'])} | {_s(x['end'] - x['start'])} | {x.get('tries')} | "
              f"{x.get('reason')} | {x.get('reclaimed')} | {x.get('address')} |" for n, x in recon]
    evs = [e for e in r.get("events", []) if e.get("type") in KEY_EVENTS]
    if evs:
        L += ["", "## Cluster events", "", "| t (s) | event | details |", "|---|---|---|"]
        L += [f"| {_s(e.get('t'))} | {e['type']} | {_detail(e)} |" for e in evs[:200]]
    notes = list(r.get("notes", [])) + [f"{n}: {x}" for n, c in r.get("clients", {}).items()
                                        for x in c.get("summary", {}).get("notes", [])]
    if notes:
        L += ["", "## Notes", ""] + [f"- {x}" for x in notes]
    L += ["", "![timeline](timeline.svg)", ""]
    return "\n".join(L)
