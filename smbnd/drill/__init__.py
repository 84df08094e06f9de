"""Failover drills (issue 4, item 8): a YAML drill names a cluster config, client workloads and a
timeline of operations and faults; the runner drives the cluster's control API
(docs/cluster-design.md), records every client I/O and the cluster event log, and writes a verdict
(result.json, report.md, timeline.svg/png).

Modules: ``schema`` (YAML -> DrillSpec, validation), ``workload`` (built-in smbprotocol
writer/verifier with persistent-handle reclaim), ``external`` (command-line clients, witness hook),
``control`` (control API client, cluster up/down, isolated test configs), ``verdict`` (pauses,
errors, pass/fail), ``report`` (JSON/Markdown/SVG), ``png`` (tiny rasteriser), ``runner``.
"""
