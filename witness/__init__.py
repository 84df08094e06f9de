"""The MS-SWN Witness service of the smbnd cluster: one process per node (``python -m witness``).

- ``ndr``      codecs of the MS-SWN operations and notification layouts
- ``service``  the protocol (MS-SWN 3.1): interface list, registrations, AsyncNotify, timers
- ``node``     one node's witness: listeners on its LIFs, cluster state -> notifications
- ``events``   cluster event intake (control API stream, events.jsonl tail)
- ``control``  the Unix control socket (list / notify by hand)
- ``cli``      ``smbnd witness ...`` (typer sub-app ``witness_app``)
"""
