"""Named pipes on IPC$ (MS-SMB2 3.3.5.9 for pipes). The DCE/RPC services behind them
(srvsvc, FSRVP) come with the RPC runtime; until then no pipe exists."""
from __future__ import annotations

from .. import status as st
from ..errors import SmbError


def pipe_create(req, r):
    raise SmbError(st.STATUS_OBJECT_NAME_NOT_FOUND)


def pipe_read(req, o, r):
    raise SmbError(st.STATUS_INVALID_DEVICE_REQUEST)


def pipe_write(req, o, r):
    raise SmbError(st.STATUS_INVALID_DEVICE_REQUEST)


def pipe_transceive(req, o, r):
    raise SmbError(st.STATUS_INVALID_DEVICE_REQUEST)
