"""Prometheus metrics of the supervisor (``cluster.metrics_port``; 0 = off).

prometheus-client (https://prometheus.github.io/client_python/) with a private registry, served by
its own HTTP thread on 127.0.0.1. Gauges are refreshed from the supervisor's view after every poll.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

NODE_STATES = ("up", "down", "waiting_giveback", "hung")
_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)


class Metrics:
    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.node_state = Gauge("smbnd_node_state", "1 for the node's current state", ["node", "state"], registry=r)
        self.lif_node = Gauge("smbnd_lif_current_node", "1 for the node currently hosting the LIF",
                              ["lif", "node"], registry=r)
        self.lif_up = Gauge("smbnd_lif_up", "LIF administratively up (0 after lif-down)", ["lif"], registry=r)
        self.aggr_owner = Gauge("smbnd_aggregate_owner", "1 for the aggregate's current owner",
                                ["aggregate", "node"], registry=r)
        self.sessions = Gauge("smbnd_sessions", "SMB sessions per node", ["node"], registry=r)
        self.opens = Gauge("smbnd_opens", "open handles per node and kind", ["node", "kind"], registry=r)
        self.disconnected = Gauge("smbnd_disconnected_opens", "disconnected persistent/durable opens", ["node"],
                                  registry=r)
        self.takeovers = Histogram("smbnd_takeover_seconds", "takeover duration", ["planned"], buckets=_BUCKETS,
                                   registry=r)
        self.ops = Histogram("smbnd_operation_seconds", "operation duration", ["op"], buckets=_BUCKETS,
                             registry=r)
        self.events = Counter("smbnd_events", "events emitted", ["type"], registry=r)
        self.epoch = Gauge("smbnd_placement_epoch", "placement epoch", registry=r)
        self._server = None

    def takeover(self, planned: bool, seconds: float) -> None:
        self.takeovers.labels(planned=str(bool(planned)).lower()).observe(seconds)

    def operation(self, op: str, seconds: float) -> None:
        self.ops.labels(op=op).observe(seconds)

    def refresh(self, cfg, placement, states: dict[str, str], statuses: dict[str, dict | None],
                lif_up: dict[str, bool]) -> None:
        for node in cfg.nodes:
            for s in NODE_STATES:
                self.node_state.labels(node=node, state=s).set(1 if states.get(node) == s else 0)
            st = statuses.get(node) or {}
            self.sessions.labels(node=node).set(st.get("sessions", 0))
            for kind in ("persistent", "durable", "plain"):
                self.opens.labels(node=node, kind=kind).set((st.get("opens") or {}).get(kind, 0))
            self.disconnected.labels(node=node).set(len(st.get("disconnected") or []))
        for lif in cfg.lifs:
            for node in cfg.nodes:
                self.lif_node.labels(lif=lif, node=node).set(1 if placement.lif_node.get(lif) == node else 0)
            self.lif_up.labels(lif=lif).set(1 if lif_up.get(lif, True) else 0)
        for aggr in cfg.aggregates:
            for node in cfg.nodes:
                self.aggr_owner.labels(aggregate=aggr, node=node).set(
                    1 if placement.aggr_owner.get(aggr) == node else 0)
        self.epoch.set(placement.epoch)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        if port:
            from prometheus_client import start_http_server
            res = start_http_server(port, addr=addr, registry=self.registry)
            self._server = res[0] if isinstance(res, tuple) else None

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
