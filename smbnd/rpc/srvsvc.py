"""srvsvc (MS-SRVS) on the ``\\PIPE\\srvsvc`` named pipe: share enumeration and server info.

NetrShareEnum (opnum 15, "NetShareEnumAll"), NetrShareGetInfo (16), NetrServerGetInfo (21) and
NetrShareEnumSticky (36, "NetShareEnum"). Requests are decoded and responses encoded with
impacket's NDR structures (NDR32, little-endian); the share list is read live from the Server.
"""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from impacket.dcerpc.v5 import srvs
from impacket.dcerpc.v5.dtypes import NULL

from ..wire import security as sec
from .iface import FAULT_NDR, Interface, RpcFault

if TYPE_CHECKING:
    from .association import Call

SRVSVC_UUID = "4b324fc8-1670-01d3-1278-5a47bf6ee188"
SRVSVC_VERSION = (3, 0)

# MS-SRVS 2.2.2.4 share types
STYPE_DISKTREE = 0x00000000
STYPE_IPC = 0x00000003
STYPE_SPECIAL = 0x80000000
# MS-SRVS 2.2.4.29 SHARE_INFO_1005 flags; 2.2.2.5 client-side caching states (CSC_MASK 0x30)
CSC_CACHE_MANUAL_REINT = 0x00
SHI1005_FLAGS_ENABLE_CA = 0x00004000
SHI1005_FLAGS_ENCRYPT_DATA = 0x00008000
SHI1005_FLAGS_CLUSTER_MANAGED = 0x00080000
# win32 / NERR error codes (MS-ERREF 2.2, MS-SRVS 3.1.4)
NERR_SUCCESS = 0
ERROR_ACCESS_DENIED = 5
ERROR_INVALID_LEVEL = 124
ERROR_MORE_DATA = 234
NERR_NET_NAME_NOT_FOUND = 2310
MAX_PREFERRED_LENGTH = 0xFFFFFFFF
# SERVER_INFO (MS-SRVS 2.2.4.41, 2.2.2.7)
PLATFORM_ID_NT = 500
SV_TYPE_WORKSTATION = 0x00000001
SV_TYPE_SERVER = 0x00000002
SV_TYPE_NT = 0x00001000
SV_TYPE_SERVER_NT = 0x00008000
SV_TYPE_CLUSTER_NT = 0x01000000

ENUM_LEVELS = (0, 1, 2, 501, 502, 503)
GETINFO_LEVELS = (0, 1, 2, 501, 502, 503, 1004, 1005, 1006)
ADMIN_LEVELS = (2, 502, 503)      # path and security descriptor: not for anonymous callers


def _z(s: str | None):
    return NULL if s is None else s + "\x00"


class ShareView:
    """What MS-SRVS says about one share."""

    def __init__(self, server, share):
        self.name = share.name
        cfg = share.config
        self.special = share.is_ipc or share.name.endswith("$")
        if share.is_ipc:
            self.type = STYPE_IPC | STYPE_SPECIAL
            self.remark = "Remote IPC"
            self.path = ""
            self.flags = 0
        else:
            self.type = STYPE_DISKTREE | (STYPE_SPECIAL if self.special else 0)
            self.remark = cfg.comment or ""
            self.path = "C:" + cfg.path.replace("/", "\\")       # as Samba presents local paths
            self.flags = CSC_CACHE_MANUAL_REINT
            if cfg.ca:
                self.flags |= SHI1005_FLAGS_ENABLE_CA
            if getattr(server.config, "clustered", False):
                # MS-SRVS 2.2.4.29: the share is a cluster resource (SVM volume on a cluster node)
                self.flags |= SHI1005_FLAGS_CLUSTER_MANAGED
            if cfg.encrypt:
                self.flags |= SHI1005_FLAGS_ENCRYPT_DATA
        self.current_uses = sum(1 for s in server.sessions.values() for t in s.trees.values()
                                if t.share is share)

    def size(self, level: int) -> int:
        """Rough marshalled size, for PreferedMaximumLength (MS-SRVS 3.1.4.8)."""
        strings = len(self.name) + len(self.remark) + (len(self.path) if level in ADMIN_LEVELS else 0)
        return 40 + 2 * strings + (len(share_sd()) if level in (502, 503) else 0)

    def info(self, level: int):
        if level == 0:
            e = srvs.SHARE_INFO_0()
            e["shi0_netname"] = _z(self.name)
        elif level == 1:
            e = srvs.SHARE_INFO_1()
            e["shi1_netname"], e["shi1_type"], e["shi1_remark"] = _z(self.name), self.type, _z(self.remark)
        elif level == 501:
            e = srvs.SHARE_INFO_501()
            e["shi501_netname"], e["shi501_type"] = _z(self.name), self.type
            e["shi501_remark"], e["shi501_flags"] = _z(self.remark), self.flags
        elif level in (2, 502, 503):
            e = {2: srvs.SHARE_INFO_2, 502: srvs.SHARE_INFO_502, 503: srvs.SHARE_INFO_503}[level]()
            k = f"shi{level}_"
            e[k + "netname"], e[k + "type"], e[k + "remark"] = _z(self.name), self.type, _z(self.remark)
            e[k + "permissions"], e[k + "max_uses"] = 0, 0xFFFFFFFF
            e[k + "current_uses"], e[k + "path"], e[k + "passwd"] = self.current_uses, _z(self.path), NULL
            if level == 503:
                e[k + "servername"] = _z("*")
            if level != 2:
                sd = share_sd()
                e[k + "reserved"] = len(sd)
                e[k + "security_descriptor"] = list(sd)
        elif level == 1004:
            e = srvs.SHARE_INFO_1004()
            e["shi1004_remark"] = _z(self.remark)
        elif level == 1005:
            e = srvs.SHARE_INFO_1005()
            e["shi1005_flags"] = self.flags
        elif level == 1006:
            e = srvs.SHARE_INFO_1006()
            e["shi1006_max_uses"] = 0xFFFFFFFF
        else:
            raise ValueError(level)
        return e


_SD: bytes | None = None


def share_sd() -> bytes:
    """Share-level security descriptor: Everyone full control (the share ACL grants, the
    file system decides)."""
    global _SD
    if _SD is None:
        dacl = sec.Acl([sec.Ace(sec.ACCESS_ALLOWED_ACE_TYPE, 0, sec.FILE_ALL_ACCESS, sec.SID_EVERYONE)])
        _SD = sec.encode_sd(sec.SecurityDescriptor(sec.SID_BUILTIN_ADMINISTRATORS, sec.SID_LOCAL_SYSTEM,
                                                   None, dacl, sec.SE_SELF_RELATIVE | sec.SE_DACL_PRESENT))
    return _SD


def _decode(cls, stub: bytes, call: Call):
    if not call.little_endian:
        raise RpcFault(FAULT_NDR)
    try:
        return cls(stub)
    except Exception:
        raise RpcFault(FAULT_NDR) from None


def _skip_server_name(stub: bytes) -> int:
    """Offset after the [unique, string] ServerName that starts every srvsvc request (NDR 14.3)."""
    (ptr,) = struct.unpack_from("<I", stub, 0)
    off = 4
    if ptr:
        _max, _first, actual = struct.unpack_from("<III", stub, off)
        off += 12 + 2 * actual
        off += -off % 4
    return off


class Srvsvc:
    def __init__(self, server):
        self.server = server

    def interface(self) -> Interface:
        return Interface(SRVSVC_UUID, SRVSVC_VERSION, "srvsvc", {
            15: self.share_enum_all,
            16: self.share_get_info,
            21: self.server_get_info,
            36: self.share_enum_sticky,
        })

    def _shares(self) -> list[ShareView]:
        shares = [s for s in self.server.shares.values() if not s.is_ipc]
        shares += [s for s in self.server.shares.values() if s.is_ipc]      # IPC$ last, as Samba lists it
        return [ShareView(self.server, s) for s in shares]

    @staticmethod
    def _anonymous(call: Call) -> bool:
        pr = call.principal
        return pr is None or pr.anonymous or not pr.user

    # -- NetrShareEnum (MS-SRVS 3.1.4.8) / NetrShareEnumSticky (3.1.4.9)
    def share_enum_all(self, call: Call, stub: bytes) -> bytes:
        return self._enum(call, stub, sticky=False)

    def share_enum_sticky(self, call: Call, stub: bytes) -> bytes:
        return self._enum(call, stub, sticky=True)

    def _enum(self, call: Call, stub: bytes, sticky: bool) -> bytes:
        try:
            req = _decode(srvs.NetrShareEnum, stub, call)
        except RpcFault:
            return self._enum_bad_level(stub)
        level = req["InfoStruct"]["Level"]
        if level not in ENUM_LEVELS or req["InfoStruct"]["ShareInfo"]["tag"] != level:
            return self._enum_error(level, ERROR_INVALID_LEVEL)
        if level in ADMIN_LEVELS and self._anonymous(call):
            return self._enum_error(level, ERROR_ACCESS_DENIED)
        views = [v for v in self._shares() if not (sticky and v.special)]
        rh = req["ResumeHandle"]
        has_rh = isinstance(rh, int)
        start = max(0, rh) if has_rh else 0
        pref = req["PreferedMaximumLength"]
        out, used = [], 0
        for v in views[start:]:
            size = v.size(level)
            if out and pref != MAX_PREFERRED_LENGTH and used + size > pref:
                break
            out.append(v)
            used += size
        more = start + len(out) < len(views)
        resp = srvs.NetrShareEnumResponse()
        resp["InfoStruct"]["Level"] = level
        resp["InfoStruct"]["ShareInfo"]["tag"] = level
        ctr = resp["InfoStruct"]["ShareInfo"][f"Level{level}"]
        ctr["EntriesRead"] = len(out)
        if out:
            for v in out:
                ctr["Buffer"].append(v.info(level))
        else:
            ctr["Buffer"] = NULL
        resp["TotalEntries"] = max(0, len(views) - start)
        resp["ResumeHandle"] = (start + len(out) if more else 0) if has_rh else NULL
        resp["ErrorCode"] = ERROR_MORE_DATA if more else NERR_SUCCESS
        return resp.getData()

    @staticmethod
    def _enum_error(level: int, error: int) -> bytes:
        # SHARE_ENUM_STRUCT {Level, union tag, NULL container}, TotalEntries, NULL ResumeHandle
        return struct.pack("<IIIIII", level, level, 0, 0, 0, error)

    def _enum_bad_level(self, stub: bytes) -> bytes:
        """A level impacket's union cannot decode: answer ERROR_INVALID_LEVEL as Samba does
        (its IDL has an empty default arm) instead of a fault."""
        try:
            off = _skip_server_name(stub)
            level, tag = struct.unpack_from("<II", stub, off)
        except struct.error:
            raise RpcFault(FAULT_NDR) from None
        if level in ENUM_LEVELS or level != tag:
            raise RpcFault(FAULT_NDR)
        return struct.pack("<IIIII", level, level, 0, 0, ERROR_INVALID_LEVEL)

    # -- NetrShareGetInfo (MS-SRVS 3.1.4.10)
    def share_get_info(self, call: Call, stub: bytes) -> bytes:
        req = _decode(srvs.NetrShareGetInfo, stub, call)
        level = req["Level"]
        name = str(req["NetName"]).rstrip("\x00")
        if level not in GETINFO_LEVELS:
            return struct.pack("<II", level, ERROR_INVALID_LEVEL)
        share = self.server.shares.get(name.lower())
        if share is None:
            return struct.pack("<III", level, 0, NERR_NET_NAME_NOT_FOUND)
        if level in ADMIN_LEVELS and self._anonymous(call):
            return struct.pack("<III", level, 0, ERROR_ACCESS_DENIED)
        resp = srvs.NetrShareGetInfoResponse()
        resp["InfoStruct"]["tag"] = level
        resp["InfoStruct"][f"ShareInfo{level}"] = ShareView(self.server, share).info(level)
        resp["ErrorCode"] = NERR_SUCCESS
        return resp.getData()

    # -- NetrServerGetInfo (MS-SRVS 3.1.4.17)
    def server_get_info(self, call: Call, stub: bytes) -> bytes:
        req = _decode(srvs.NetrServerGetInfo, stub, call)
        level = req["Level"]
        if level not in (100, 101, 102):
            return struct.pack("<II", level, ERROR_INVALID_LEVEL)
        cfg = self.server.config
        name = cfg.name[:15].upper()
        resp = srvs.NetrServerGetInfoResponse()
        resp["InfoStruct"]["tag"] = level
        info = {100: srvs.SERVER_INFO_100, 101: srvs.SERVER_INFO_101, 102: srvs.SERVER_INFO_102}[level]()
        k = f"sv{level}_"
        info[k + "platform_id"], info[k + "name"] = PLATFORM_ID_NT, _z(name)
        if level >= 101:
            stype = SV_TYPE_WORKSTATION | SV_TYPE_SERVER | SV_TYPE_NT | SV_TYPE_SERVER_NT
            if getattr(cfg, "clustered", False):      # MS-SRVS 2.2.2.7: a cluster node's server
                stype |= SV_TYPE_CLUSTER_NT
            info[k + "version_major"], info[k + "version_minor"] = 10, 0
            info[k + "type"], info[k + "comment"] = stype, _z(getattr(cfg, "comment", "") or "smbnd")
        if level == 102:
            info[k + "users"] = sum(1 for s in self.server.sessions.values() if s.user)
            info[k + "disc"], info[k + "hidden"] = 15, 0
            info[k + "announce"], info[k + "anndelta"] = 240, 3000
            info[k + "licenses"], info[k + "userpath"] = 0, _z("C:\\")
        resp["InfoStruct"][f"ServerInfo{level}"] = info
        resp["ErrorCode"] = NERR_SUCCESS
        return resp.getData()
