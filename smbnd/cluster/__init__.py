"""The cluster: model (TOML), supervisor, node processes, LIF backends, heartbeats, control API."""
