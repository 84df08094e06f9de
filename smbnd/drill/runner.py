"""Run one drill: (start the cluster,) start the client workloads, execute the timeline through the
control API, stop the clients (each verifies its data and closes its handle), collect the event
log, compute the verdict and write the outputs."""
from __future__ import annotations

import datetime as dt
import os
import time

from ..cluster.model import load_cluster
from ..config import ConfigError
from . import report, verdict
from .control import ClusterProcess, ControlApi, ControlError, clearing_op, isolated_config, run_op
from .external import ExternalClient, WitnessHook
from .schema import DrillError, DrillSpec, check_against_cluster, load_drill
from .workload import Clock, WriterVerifier


def _resolve_client(c, cluster) -> dict:
    address = cluster.lifs[c.lif].address if c.lif else c.address
    user = c.user or next(iter(cluster.users))
    return {"address": address, "port": c.port or cluster.port("smb"), "share": c.share,
            "user": user, "password": c.password or cluster.users.get(user, ""),
            "unc_host": c.netname or address}


def run_drill(path: str, out_dir: str, config_override: str | None = None, isolate: bool = False,
              start_cluster: bool | None = None, png: bool = True, log=print) -> dict:
    spec: DrillSpec = load_drill(path)
    os.makedirs(out_dir, exist_ok=True)
    cfg_path = config_override or spec.cluster_config
    if isolate:
        cfg_path = isolated_config(cfg_path, os.path.join(os.path.abspath(out_dir), "cluster"))
    try:
        cluster = load_cluster(cfg_path)
    except ConfigError as e:
        raise DrillError("cluster.config", f"{cfg_path}: {e}") from None
    check_against_cluster(spec, cluster)
    start = spec.start_cluster if start_cluster is None else start_cluster
    notes: list[str] = []
    proc = None
    api = None
    if start:
        os.makedirs(cluster.state_dir, exist_ok=True)
        proc = ClusterProcess(cfg_path, cluster.state_dir, os.path.join(out_dir, "cluster.log"))
        log(f"drill {spec.name}: starting cluster ({cfg_path})")
        api = proc.up()
    else:
        try:
            api = ControlApi(cluster.state_dir)
        except OSError:
            if any(o.verb != ("wait",) for o in spec.timeline):
                raise ControlError(f"no running cluster: {cluster.state_dir}/api.json missing "
                                   "(start it, or let the drill start it: cluster.start: true)")
            notes.append("no control API: events not recorded")
    try:
        result = _run(spec, cluster, cfg_path, api, out_dir, notes, log)
        if api is not None:
            try:
                result["cluster_status_end"] = api.status()
            except ControlError as e:
                notes.append(f"final status: {e}")
    finally:
        if proc is not None:
            log(f"drill {spec.name}: stopping cluster")
            proc.down()
    result["outputs"] = report.write_all(result, out_dir, png=png)
    if not png:
        result["notes"].append("timeline.png not rendered (--no-png)")
    return result


def _run(spec: DrillSpec, cluster, cfg_path: str, api, out_dir: str, notes: list, log) -> dict:
    clock = Clock()
    clock.t0_mono += spec.settle          # t = 0 is the timeline's origin; clients start at -settle
    clock.t0_wall += spec.settle
    clients, hooks = {}, []
    for c in spec.clients:
        if c.kind == "writer":
            r = _resolve_client(c, cluster)
            w = WriterVerifier(c.name, r["address"], r["port"], r["share"], r["user"], r["password"], clock,
                               unc_host=r["unc_host"], file=c.file, block_size=c.block_size, blocks=c.blocks,
                               rate=c.rate, verify_every=c.verify_every, io_timeout=c.io_timeout,
                               reconnect_timeout=c.reconnect_timeout)
            clients[c.name] = w
            if c.witness:
                hooks.append(WitnessHook(w, c.netname or cluster.svm.name, r["address"], cluster, r["user"],
                                         r["password"], r["share"]))
        else:
            lif = next(iter(cluster.lifs.values()))
            user = c.user or next(iter(cluster.users))
            values = {"address": lif.address if not c.lif else cluster.lifs[c.lif].address,
                      "port": c.port or cluster.port("smb"), "share": c.share, "user": user,
                      "password": c.password or cluster.users.get(user, ""), "duration": spec.duration,
                      "out": os.path.abspath(out_dir), "t0": f"{clock.t0_wall:.3f}", "config": cfg_path}
            clients[c.name] = ExternalClient(c.name, c.command, c.cwd, c.env, values, clock,
                                             os.path.join(out_dir, f"client-{c.name}.log"))
    started_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    log(f"drill {spec.name}: {len(clients)} client(s), {len(spec.timeline)} operation(s), {spec.duration:g} s")
    for cl in clients.values():
        cl.start()
    for h in hooks:
        h.start()
    ops = []
    try:
        queue = list(spec.timeline)
        while queue and len(ops) < 1000:
            queue.sort(key=lambda o: o.at)       # stable: a clearing op after a planned op at the same time
            op = queue.pop(0)
            delay = op.at - clock.now()
            if delay > 0:
                time.sleep(delay)
            log(f"  t={clock.now():7.3f}  {op.text}")
            rec = run_op(api, op, clock, spec.duration)
            ops.append(rec)
            clear = clearing_op(op, rec["start"])
            if clear is not None:
                queue.append(clear)
            log(f"  t={clock.now():7.3f}  {op.text}: {'ok' if rec.get('ok') else 'FAILED ' + str(rec.get('error'))}"
                f" ({(rec['end'] - rec['start']) * 1000:.0f} ms)")
        remaining = spec.duration - clock.now()
        if remaining > 0:
            time.sleep(remaining)
    finally:
        for cl in clients.values():
            if isinstance(cl, WriterVerifier):
                cl.stop.set()
        for h in hooks:
            h.finish()
            if h.note:
                notes.append(f"{h.writer.name}: {h.note}")
        for cl in clients.values():
            cl.finish(180.0 if isinstance(cl, WriterVerifier) else 60.0)
    t_end = clock.now()
    events = []
    if api is not None:
        try:
            for e in api.events(0):
                ts = e.get("ts")
                if isinstance(ts, (int, float)):
                    e = {**e, "t": round(clock.from_wall(ts), 4)}
                    if e["t"] >= -spec.settle - 5:
                        events.append(e)
        except ControlError as e:
            notes.append(f"events not recorded: {e}")
    cdata = {n: {"records": c.records, "summary": c.summary()} for n, c in clients.items()}
    v = verdict.compute(cdata, ops, events, spec.expect, t_end)
    return {"name": spec.name, "description": spec.description, "source": spec.source,
            "cluster_config": cfg_path, "started_at": started_at, "t0_wall": clock.t0_wall,
            "settle": spec.settle, "duration": spec.duration, "t_end": round(t_end, 4),
            "expect": vars(spec.expect), "ops": ops, "events": events, "clients": cdata,
            "verdict": v, "notes": notes}
