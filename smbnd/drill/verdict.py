"""The drill verdict: per client and operation, how long I/O paused (the longest gap between
successful I/O completions around the operation), the errors the application saw, whether the
data verified and every persistent handle was reclaimed; then pass/fail against ``expect:``."""
from __future__ import annotations

IO_OPS = ("write", "read")
APP_OPS = ("open", "write", "read", "verify", "close")      # what an application would see fail


def success_ends(records: list[dict]) -> list[float]:
    return sorted(r["end"] for r in records if r.get("ok") and r.get("op") in IO_OPS)


def gaps(ends: list[float]) -> list[tuple[float, float]]:
    return [(a, b) for a, b in zip(ends, ends[1:])]


def longest_gap(ends: list[float], lo: float, hi: float, t_end: float | None = None):
    """The longest gap (from, to) between consecutive successful completions that ends after ``lo``
    and starts before ``hi``; with ``t_end``, I/O that never resumed counts as a gap up to ``t_end``.
    None when there is no success before it."""
    best = None
    tail = [(ends[-1], t_end)] if ends and t_end is not None and t_end > ends[-1] else []
    for a, b in gaps(ends) + tail:
        if b > lo and a < hi and (best is None or b - a > best[1] - best[0]):
            best = (a, b)
    return best


def op_windows(ops: list[dict], t_end: float) -> list[tuple[float, float]]:
    """Each op's window: from its start to the next op's start (the last: to the end of the run)."""
    out = []
    for i, o in enumerate(ops):
        nxt = ops[i + 1]["start"] if i + 1 < len(ops) else t_end
        out.append((o["start"], max(nxt, o["end"])))
    return out


def compute(clients: dict[str, dict], ops: list[dict], events: list[dict], expect, t_end: float) -> dict:
    """clients: name -> {"records": [...], "summary": {...}}; ops: executed op records;
    expect: schema.Expect. -> the verdict dict stored in result.json."""
    all_ops = ops
    ops = [o for o in ops if not o["op"].startswith("wait")]     # waits are not operations on the cluster
    windows = op_windows(ops, t_end)
    per_client, failures = {}, []
    for name, c in clients.items():
        recs = c["records"]
        ends = success_ends(recs)
        all_gaps = gaps(ends)
        # a client that finished its workload (its final close succeeded) is not paused after it
        c_end = max((r["end"] for r in recs if r.get("op") == "close" and r.get("ok")), default=t_end)
        tail = [(ends[-1], c_end)] if ends and c_end > ends[-1] else []
        worst = max(all_gaps + tail, key=lambda g: g[1] - g[0], default=None)
        pauses = []
        for o, (lo, hi) in zip(ops, windows):
            g = longest_gap(ends, lo, min(hi, c_end), c_end)
            first_after = next((e for e in ends if e > o["start"]), None)
            pauses.append({"op": o["op"], "op_start": o["start"], "op_end": o["end"],
                           "paused_from": g[0] if g else None, "paused_to": g[1] if g else None,
                           "resumed": bool(g) and g[1] in ends,
                           "pause_s": round(g[1] - g[0], 4) if g else None,
                           "first_io_after_s": round(first_after - o["start"], 4) if first_after else None})
        errors = [r for r in recs if not r.get("ok") and r.get("op") in APP_OPS]
        recon = [r for r in recs if r.get("op") == "reconnect"]
        s = c.get("summary", {})
        handles_ok = (not s.get("handle_lost", False)) and all(r.get("ok") and r.get("reclaimed") for r in recon)
        lat = [r["end"] - r["start"] for r in recs if r.get("ok") and r.get("op") in IO_OPS]
        per_client[name] = {
            "ios_ok": len(ends), "errors": len(errors), "error_samples": errors[:10],
            "max_pause_s": round(worst[1] - worst[0], 4) if worst else None,
            "max_pause_from": worst[0] if worst else None, "max_pause_to": worst[1] if worst else None,
            "typical_gap_s": round(sorted(b - a for a, b in all_gaps)[len(all_gaps) // 2], 4) if all_gaps else None,
            "pauses": pauses, "reconnects": len(recon),
            "reclaimed": sum(1 for r in recon if r.get("ok") and r.get("reclaimed")),
            "handles_reclaimed": handles_ok, "data_verified": s.get("data_verified"),
            "latency_ms": _percentiles([x * 1000 for x in lat]),
        }
    checks = []

    def check(name, ok, detail):
        checks.append({"check": name, "ok": bool(ok), "detail": detail})
        if not ok:
            failures.append(f"{name}: {detail}")

    bad_ops = [o for o in all_ops if not o.get("ok")]
    check("operations_ok", not bad_ops,
          "all timeline operations succeeded" if not bad_ops else
          "; ".join(f"{o['op']}: {o.get('error', o.get('http'))}" for o in bad_ops))
    no_io = [n for n, v in per_client.items() if v["ios_ok"] == 0]
    check("clients_did_io", not no_io, "every client completed I/O" if not no_io else f"no successful I/O: {no_io}")
    if expect.max_pause_s is not None:
        over = {n: v["max_pause_s"] for n, v in per_client.items()
                if v["max_pause_s"] is not None and v["max_pause_s"] > expect.max_pause_s}
        check("max_pause_s", not over, f"longest pause <= {expect.max_pause_s} s" if not over else
              f"over {expect.max_pause_s} s: {over}")
    if expect.no_errors:
        errs = {n: v["errors"] for n, v in per_client.items() if v["errors"]}
        check("no_errors", not errs, "no I/O error reached the application" if not errs else f"errors: {errs}")
    if expect.data_verified:
        bad = [n for n, v in per_client.items() if v["data_verified"] is not True]
        check("data_verified", not bad, "every client's data read back as written" if not bad else
              f"not verified: {bad}")
    if expect.handles_reclaimed:
        bad = [n for n, v in per_client.items() if not v["handles_reclaimed"]]
        check("handles_reclaimed", not bad, "every reconnect reclaimed its persistent handle (DH2C)" if not bad
              else f"not reclaimed: {bad}")
    if expect.min_reconnects is not None:
        few = {n: v["reconnects"] for n, v in per_client.items()
               if clients[n].get("summary", {}).get("kind") == "writer" and v["reconnects"] < expect.min_reconnects}
        check("min_reconnects", not few, f"every writer reconnected >= {expect.min_reconnects} time(s)" if not few
              else f"too few reconnects: {few}")
    if expect.events:
        seen = {e.get("type") for e in events}
        missing = [t for t in expect.events if t not in seen]
        check("events", not missing, f"events seen: {', '.join(expect.events)}" if not missing else
              f"missing events: {missing}")
    return {"passed": not failures, "failures": failures, "checks": checks, "clients": per_client}


def _percentiles(xs: list[float]) -> dict:
    if not xs:
        return {}
    xs = sorted(xs)

    def p(q):
        return round(xs[min(len(xs) - 1, int(q * (len(xs) - 1) + 0.5))], 3)
    return {"p50": p(0.5), "p99": p(0.99), "max": round(xs[-1], 3), "n": len(xs)}
