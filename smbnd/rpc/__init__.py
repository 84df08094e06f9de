"""DCE/RPC connection-oriented runtime (C706 chapter 12, MS-RPCE 2.2 / 3.3).

Shared by the SMB server's named pipes (ncacn_np) and stand-alone TCP services such as the
witness (ncacn_ip_tcp):

- ``pdu``          pure codecs for the CO PDUs, the auth verifier and the verification trailer
- ``iface``        interfaces, faults and association groups: what services plug in
- ``security``     the pluggable authentication layer (NTLMSSP / SPNEGO acceptors)
- ``association``  sans-I/O state machine: bytes in, PDUs out, calls dispatched to interfaces
- ``tcp``          asyncio glue for ncacn_ip_tcp
- ``srvsvc``       MS-SRVS share enumeration on the ``srvsvc`` pipe
"""
from .association import Association, Call
from .iface import AssocGroups, Interface, RpcFault

__all__ = ["Association", "AssocGroups", "Call", "Interface", "RpcFault"]
