"""Command handlers: each takes a connection.Request and returns a connection.Reply."""
from __future__ import annotations

from ..notify import change_notify
from ..wire import header as hd
from .files import close, create, flush, read, write
from .ioctl import ioctl
from .lock import lock
from .negotiate import negotiate
from .oplock_break import oplock_break
from .query import query_directory, query_info, set_info
from .session import echo, logoff, session_setup
from .tree import tree_connect, tree_disconnect

HANDLERS = {
    hd.NEGOTIATE: negotiate,
    hd.SESSION_SETUP: session_setup,
    hd.LOGOFF: logoff,
    hd.TREE_CONNECT: tree_connect,
    hd.TREE_DISCONNECT: tree_disconnect,
    hd.CREATE: create,
    hd.CLOSE: close,
    hd.FLUSH: flush,
    hd.READ: read,
    hd.WRITE: write,
    hd.LOCK: lock,
    hd.IOCTL: ioctl,
    hd.ECHO: echo,
    hd.QUERY_DIRECTORY: query_directory,
    hd.CHANGE_NOTIFY: change_notify,
    hd.QUERY_INFO: query_info,
    hd.SET_INFO: set_info,
    hd.OPLOCK_BREAK: oplock_break,
}
