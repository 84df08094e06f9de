"""One connection-oriented DCE/RPC association, sans I/O (C706 chapter 12, MS-RPCE 3.3).

``receive_data(bytes)`` consumes the byte stream of one transport connection (a named pipe or a
TCP socket); ``data_to_send()`` returns the PDUs to write, one list element per PDU (a named pipe
delivers each as one message); ``want_close`` says the transport should be closed once they are
sent. Calls are dispatched to ``Interface`` handlers by presentation context and opnum. A handler
returns the response stub, or None to answer later through ``Call.reply`` / ``Call.fault`` (the
association then invokes ``on_output`` so that the transport flushes). Nothing raised by a
malformed PDU or by a handler escapes: it becomes a fault, a bind_nak or a disconnect.
"""
from __future__ import annotations

import logging
import struct
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from . import pdu as p
from .iface import (FAULT_ACCESS_DENIED, FAULT_NDR, FAULT_OTHER, FAULT_SEC_PKG_ERROR, FAULT_SERVER_TOO_BUSY,
                    NCA_S_FAULT_CANCEL, NCA_S_OP_RNG_ERROR, NCA_S_PROTO_ERROR, NCA_S_UNK_IF, AssocGroup,
                    AssocGroups, Handler, Interface, RpcFault)
from .security import Principal, SecurityError, SecurityProvider

__all__ = [
    "Association", "AssocGroup", "AssocGroups", "Call", "Handler", "Interface", "RpcFault",
    "FAULT_ACCESS_DENIED", "FAULT_NDR", "FAULT_OTHER", "FAULT_SEC_PKG_ERROR", "FAULT_SERVER_TOO_BUSY",
    "NCA_S_FAULT_CANCEL", "NCA_S_OP_RNG_ERROR", "NCA_S_PROTO_ERROR", "NCA_S_UNK_IF",
]

log = logging.getLogger("smbnd.rpc")

MAX_FRAG = 5840                 # largest fragment accepted or negotiated (Windows / Samba over TCP)
MIN_FRAG = 2048
MAX_REQUEST = 4 * 1024 * 1024   # reassembled request stub limit (Samba's default)
MAX_CALLS = 64                  # outstanding + reassembling calls per association
MAX_CONTEXTS = 256


@dataclass(eq=False)
class PresContext:
    context_id: int
    interface: Interface
    abstract: p.SyntaxId
    transfer: p.SyntaxId


@dataclass(eq=False)
class Call:
    association: "Association"
    call_id: int
    context_id: int
    opnum: int
    interface: Interface
    principal: Principal | None
    auth_level: int
    drep: bytes
    object_uuid: uuidlib.UUID | None = None
    cancelled: bool = False
    orphaned: bool = False
    done: bool = False
    on_cancel: Callable[["Call"], None] | None = None

    @property
    def little_endian(self) -> bool:
        return bool(self.drep[0] & p.DREP_LE)

    def reply(self, stub: bytes) -> None:
        self.association._complete(self, stub, None)

    def fault(self, status: int, did_not_execute: bool = False) -> None:
        self.association._complete(self, None, (status, did_not_execute))


@dataclass(eq=False)
class _Partial:
    context_id: int
    opnum: int
    object_uuid: uuidlib.UUID | None
    drep: bytes
    chunks: list = field(default_factory=list)
    size: int = 0


class _Abort(Exception):
    """Answer with a fault (or bind_nak before the bind) and close the association."""

    def __init__(self, status: int, call_id: int = 0, flags: int = p.PFC_DID_NOT_EXECUTE, nak: int | None = None):
        self.status, self.call_id, self.flags, self.nak = status, call_id, flags, nak


class Association:
    def __init__(self, interfaces: Iterable[Interface], *, security: SecurityProvider | None = None,
                 principal: Principal | None = None, secondary_address: str = "",
                 groups: AssocGroups | None = None, max_frag: int = MAX_FRAG, max_request: int = MAX_REQUEST,
                 on_output: Callable[[], None] | None = None, name: str = "rpc"):
        self.interfaces = list(interfaces)
        self.security = security
        self.transport_principal = principal     # who the transport authenticated (SMB session)
        self.secondary_address = secondary_address
        self.local_address = ""                  # set by the transport (the address the client reached)
        self.groups = groups if groups is not None else AssocGroups()
        self.group: AssocGroup | None = None
        self.max_frag = max_frag
        self.max_request = max_request
        self.on_output = on_output
        self.name = name
        self.max_xmit = MIN_FRAG
        self.bound = False
        self.closed = False
        self.want_close = False
        self.btfn: int | None = None
        self.contexts: dict[int, PresContext] = {}
        # authentication (one security context per association: no multiplexing, MS-RPCE 3.3.1.5.4)
        self.auth_state = "none"                  # none | pending | done | failed
        self.auth_type = p.AUTHN_NONE
        self.auth_level = p.LEVEL_NONE
        self.auth_context_id = 0
        self.client_header_sign = False
        self.rpc_principal: Principal | None = None
        self._sec: Any = None
        self._buf = bytearray()
        self._out: list[bytes] = []
        self._partials: dict[int, _Partial] = {}
        self._active: dict[int, Call] = {}
        self._in_feed = False

    # ---- transport side ----------------------------------------------------------------------
    @property
    def principal(self) -> Principal | None:
        return self.rpc_principal if self.rpc_principal is not None else self.transport_principal

    def receive_data(self, data) -> None:
        if self.closed or self.want_close:
            return
        self._buf += data
        self._in_feed = True
        try:
            while not self.want_close:
                fl = p.peek_frag_length(self._buf)
                if fl is None:
                    break
                if fl < p.HEADER_SIZE or fl > self.max_frag:
                    self._abort(_Abort(NCA_S_PROTO_ERROR, self._raw_call_id(self._buf),
                                       nak=p.NAK_PROTOCOL_VERSION_NOT_SUPPORTED))
                    break
                if len(self._buf) < fl:
                    break
                raw = bytes(self._buf[:fl])
                del self._buf[:fl]
                try:
                    self._process(raw)
                except _Abort as a:
                    self._abort(a)
                except p.PduError as e:
                    log.info("%s: malformed PDU: %s", self.name, e)
                    self._abort(_Abort(NCA_S_PROTO_ERROR, self._raw_call_id(raw),
                                       nak=p.NAK_PROTOCOL_VERSION_NOT_SUPPORTED))
                except Exception:
                    log.exception("%s: internal error processing a PDU", self.name)
                    self._abort(_Abort(NCA_S_PROTO_ERROR, self._raw_call_id(raw), nak=p.NAK_NOT_SPECIFIED))
        finally:
            self._in_feed = False
        if self.want_close:
            self._buf.clear()

    def data_to_send(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def connection_lost(self) -> None:
        """The transport is gone: its pending calls are orphaned, their responses dropped."""
        if self.closed:
            return
        self.closed = True
        for call in list(self._active.values()):
            self._orphan(call)
        self._active.clear()
        self._partials.clear()
        if self.group is not None:
            self.groups.leave(self.group)
            self.group = None

    def shutdown(self) -> None:
        """Orderly shutdown: tell the client to close (C706 12.6.4.11 shutdown PDU)."""
        if not self.closed and not self.want_close:
            if self.bound:
                self._emit(p.pack_shutdown())
            self.want_close = True
            self._notify()

    # ---- PDU dispatch ------------------------------------------------------------------------
    @staticmethod
    def _raw_call_id(buf) -> int:
        if len(buf) < 16:
            return 0
        return struct.unpack_from("<I" if buf[4] & p.DREP_LE else ">I", buf, 12)[0]

    def _emit(self, pdu: bytes) -> None:
        self._out.append(pdu)

    def _notify(self) -> None:
        if not self._in_feed and self.on_output is not None:
            self.on_output()

    def _abort(self, a: _Abort) -> None:
        if not self.bound and a.nak is not None:
            self._emit(p.pack_bind_nak(a.call_id, a.nak))
        else:
            self._emit(p.pack_fault(a.call_id, a.status, flags=a.flags))
        self.want_close = True

    def _process(self, raw: bytes) -> None:
        hdr = p.parse_header(raw)
        if not self.bound:
            if hdr.ptype != p.BIND:
                # the first PDU must be a bind (Samba answers anything else as a bad bind)
                raise _Abort(NCA_S_PROTO_ERROR, hdr.call_id, nak=p.NAK_PROTOCOL_VERSION_NOT_SUPPORTED)
            self._on_bind(raw, hdr)
        elif hdr.ptype == p.REQUEST:
            self._on_request(raw, hdr)
        elif hdr.ptype == p.ALTER_CONTEXT:
            self._on_alter(raw, hdr)
        elif hdr.ptype == p.AUTH3:
            self._on_auth3(raw, hdr)
        elif hdr.ptype in (p.CO_CANCEL, p.ORPHANED):
            self._on_cancel(hdr)
        elif hdr.ptype == p.BIND:
            # one bind per association (C706 12.6.4.3); Samba naks and disconnects
            self._emit(p.pack_bind_nak(hdr.call_id, p.NAK_NOT_SPECIFIED))
            self.want_close = True
        else:
            raise _Abort(NCA_S_PROTO_ERROR, hdr.call_id)

    # ---- bind / alter_context (C706 12.6.4.1-4, MS-RPCE 3.3.1.5.3 and 3.3.1.5.6) ---------------
    def _negotiate(self, contexts: list[p.ContextElem], call_id: int, nak: int | None) -> list[p.ContextResult]:
        results = []
        seen_btfn = False
        for c in contexts:
            if not c.transfer:
                raise _Abort(NCA_S_PROTO_ERROR, call_id, nak=nak)
            bits = p.btfn_bitmask(c.transfer[0])
            if bits is not None:
                if seen_btfn:
                    raise _Abort(NCA_S_PROTO_ERROR, call_id, nak=nak)
                seen_btfn = True
                # we keep the connection after an orphaned PDU; one security context only
                ack = bits & p.BTFN_KEEP_CONNECTION_ON_ORPHAN
                self.btfn = ack
                results.append(p.ContextResult(p.NEGOTIATE_ACK, ack))
                continue
            iface = next((i for i in self.interfaces if i.accepts(c.abstract)), None)
            if iface is None:
                results.append(p.ContextResult(p.PROVIDER_REJECTION, p.ABSTRACT_SYNTAX_NOT_SUPPORTED))
                continue
            if p.NDR_SYNTAX not in c.transfer:
                # NDR64 (and anything else) is not offered by this server (MS-RPCE 3.3.1.5.6)
                results.append(p.ContextResult(p.PROVIDER_REJECTION, p.PROPOSED_TRANSFER_SYNTAXES_NOT_SUPPORTED))
                continue
            old = self.contexts.get(c.context_id)
            if old is not None and old.interface is not iface:
                raise _Abort(NCA_S_PROTO_ERROR, call_id, nak=nak)   # a context id is never rebound
            if old is None and len(self.contexts) >= MAX_CONTEXTS:
                results.append(p.ContextResult(p.USER_REJECTION, p.LOCAL_LIMIT_EXCEEDED))
                continue
            self.contexts[c.context_id] = PresContext(c.context_id, iface, c.abstract, p.NDR_SYNTAX)
            results.append(p.ContextResult(p.ACCEPTANCE, p.REASON_NOT_SPECIFIED, p.NDR_SYNTAX))
        return results

    def _start_auth(self, auth: p.SecTrailer, call_id: int, nak: int | None) -> bytes:
        """First leg, in a bind (or an alter_context when the bind had none). Returns the token."""
        if not (p.LEVEL_CONNECT <= auth.auth_level <= p.LEVEL_PKT_PRIVACY) or self.security is None \
                or not self.security.supports(auth.auth_type):
            raise _Abort(FAULT_SEC_PKG_ERROR, call_id, flags=0, nak=p.NAK_AUTHENTICATION_TYPE_NOT_RECOGNIZED)
        self.auth_type, self.auth_level, self.auth_context_id = auth.auth_type, auth.auth_level, auth.auth_context_id
        self._sec = self.security.new_context(auth.auth_type, auth.auth_level)
        self.auth_state = "pending"
        return self._auth_step(auth.auth_value, call_id, nak)

    def _auth_step(self, token: bytes, call_id: int, nak: int | None) -> bytes:
        r = self._sec.step(token)
        if r.state == "fail":
            self.auth_state = "failed"
            raise _Abort(FAULT_ACCESS_DENIED, call_id, flags=0, nak=p.NAK_NOT_SPECIFIED if nak is not None else None)
        if r.state == "ok":
            self.auth_state = "done"
            self.rpc_principal = r.principal
            log.info("%s: authenticated %s at level %d (auth type %d)", self.name,
                     r.principal.user if r.principal else None, self.auth_level, self.auth_type)
        return r.out_token

    def _auth_trailer(self, token: bytes) -> p.SecTrailer:
        return p.SecTrailer(self.auth_type, self.auth_level, 0, self.auth_context_id, token)

    def _same_auth(self, a: p.SecTrailer) -> bool:
        return (a.auth_type, a.auth_level, a.auth_context_id) == (self.auth_type, self.auth_level,
                                                                   self.auth_context_id)

    def _on_bind(self, raw: bytes, hdr: p.Header) -> None:
        nak = p.NAK_PROTOCOL_VERSION_NOT_SUPPORTED
        b = p.parse_bind(raw, hdr)
        if not b.contexts:
            raise _Abort(NCA_S_PROTO_ERROR, hdr.call_id, nak=nak)
        if b.assoc_group_id:
            self.group = self.groups.join(b.assoc_group_id)
            if self.group is None:
                raise _Abort(NCA_S_PROTO_ERROR, hdr.call_id, nak=p.NAK_NOT_SPECIFIED)
        else:
            self.group = self.groups.create()
        # C706 12.6.4.3-4 max_xmit/recv_frag; as Samba (tested against Windows): one size both
        # ways, within [2048, 5840], an 8-byte multiple
        self.max_xmit = max(MIN_FRAG, min(b.max_xmit_frag, b.max_recv_frag, self.max_frag)) & ~7
        results = self._negotiate(b.contexts, hdr.call_id, p.NAK_NOT_SPECIFIED)
        auth = None
        flags = p.PFC_FIRST_FRAG | p.PFC_LAST_FRAG | (hdr.pfc_flags & p.PFC_CONC_MPX)
        if b.auth is not None:
            token = self._start_auth(b.auth, hdr.call_id, p.NAK_NOT_SPECIFIED)
            auth = self._auth_trailer(token)
            if hdr.pfc_flags & p.PFC_SUPPORT_HEADER_SIGN:
                # NTLMSSP always signs the header; acknowledge (MS-RPCE 3.3.1.5.2.2)
                self.client_header_sign = True
                flags |= p.PFC_SUPPORT_HEADER_SIGN
        self.bound = True
        self._emit(p.pack_bind_ack(hdr.call_id, results, max_xmit=self.max_xmit, max_recv=self.max_xmit,
                                   assoc_group=self.group.id, secondary_address=self.secondary_address,
                                   flags=flags, auth=auth if auth is not None and auth.auth_value else None))

    def _on_alter(self, raw: bytes, hdr: p.Header) -> None:
        try:
            a = p.parse_bind(raw, hdr)
        except p.PduError as e:
            raise _Abort(NCA_S_PROTO_ERROR, hdr.call_id) from e
        token = None
        if a.auth is not None:
            if self.auth_state == "none":
                token = self._start_auth(a.auth, hdr.call_id, None)
            elif self.auth_state == "pending":
                if not self._same_auth(a.auth):
                    self.auth_state = "failed"
                    raise _Abort(FAULT_SEC_PKG_ERROR, hdr.call_id)
                token = self._auth_step(a.auth.auth_value, hdr.call_id, None)
            elif self.auth_state == "failed":
                raise _Abort(FAULT_ACCESS_DENIED, hdr.call_id)
            elif not self._same_auth(a.auth):
                raise _Abort(NCA_S_PROTO_ERROR, hdr.call_id)    # a second security context
        elif self.auth_state == "pending":
            raise _Abort(NCA_S_PROTO_ERROR, hdr.call_id)
        if not a.contexts:
            raise _Abort(NCA_S_PROTO_ERROR, hdr.call_id)
        results = self._negotiate(a.contexts, hdr.call_id, None)
        flags = p.PFC_FIRST_FRAG | p.PFC_LAST_FRAG | (hdr.pfc_flags & p.PFC_CONC_MPX)
        if self.client_header_sign:
            flags |= p.PFC_SUPPORT_HEADER_SIGN
        self._emit(p.pack_bind_ack(hdr.call_id, results, max_xmit=self.max_xmit, max_recv=self.max_xmit,
                                   assoc_group=self.group.id if self.group else 0, ptype=p.ALTER_CONTEXT_RESP,
                                   flags=flags, auth=self._auth_trailer(token) if token else None))

    def _on_auth3(self, raw: bytes, hdr: p.Header) -> None:
        """Third leg of a 3-leg mechanism (MS-RPCE 2.2.2.10): no reply unless it is nonsense."""
        try:
            _end, auth = p.split_auth(raw, hdr, p.HEADER_SIZE + 4)
        except p.PduError as e:
            raise _Abort(NCA_S_PROTO_ERROR, hdr.call_id) from e
        if auth is None or self.auth_state != "pending":
            raise _Abort(NCA_S_PROTO_ERROR, hdr.call_id)
        if not self._same_auth(auth):
            self.auth_state = "failed"
            return
        r = self._sec.step(auth.auth_value)
        if r.state == "ok":
            self.auth_state = "done"
            self.rpc_principal = r.principal
            log.info("%s: authenticated %s at level %d (auth type %d)", self.name,
                     r.principal.user if r.principal else None, self.auth_level, self.auth_type)
        else:
            self.auth_state = "failed"     # the next request gets the fault

    def _on_cancel(self, hdr: p.Header) -> None:
        """co_cancel (C706 12.6.4.6) and orphaned (C706 12.6.4.8, MS-RPCE 3.3.1.5.10): tell the handler; an
        orphaned call is dropped, its response never sent."""
        if hdr.ptype == p.ORPHANED:
            self._partials.pop(hdr.call_id, None)
        call = self._active.get(hdr.call_id)
        if call is None:
            return
        if hdr.ptype == p.ORPHANED:
            self._active.pop(hdr.call_id, None)
            self._orphan(call)
        else:
            call.cancelled = True
            if call.on_cancel is not None:
                call.on_cancel(call)

    @staticmethod
    def _orphan(call: Call) -> None:
        call.orphaned = True
        call.cancelled = True
        if call.on_cancel is not None:
            try:
                call.on_cancel(call)
            except Exception:
                log.exception("cancelling an orphaned call")

    # ---- requests (C706 12.6.4.9, MS-RPCE 3.3.1.5.2.2 for the verifier) -------------------------
    def _unprotect(self, raw: bytes, hdr: p.Header, req: p.Request) -> bytes:
        """Check/strip the verifier of one request fragment; returns its stub (padding removed)."""
        a = req.auth
        level = self.auth_level if self.auth_state == "done" else p.LEVEL_NONE
        if level == p.LEVEL_NONE:
            if a is not None:
                raise _Abort(FAULT_ACCESS_DENIED, hdr.call_id, flags=0)
            return raw[req.stub_offset:req.stub_end]
        if a is None:
            if level == p.LEVEL_CONNECT:
                return raw[req.stub_offset:req.stub_end]
            raise _Abort(FAULT_ACCESS_DENIED, hdr.call_id, flags=0)
        if not self._same_auth(a) or a.auth_pad_length > req.stub_end - req.stub_offset:
            raise _Abort(FAULT_ACCESS_DENIED, hdr.call_id, flags=0)
        end = req.stub_end
        if level >= p.LEVEL_CALL:
            body = bytearray(raw[:hdr.frag_length - hdr.auth_length])
            try:
                if level == p.LEVEL_PKT_PRIVACY:
                    self._sec.unseal(body, req.stub_offset, end, a.auth_value)
                else:
                    self._sec.verify(body, a.auth_value)
            except SecurityError as e:
                log.info("%s: %s", self.name, e)
                raise _Abort(FAULT_SEC_PKG_ERROR, hdr.call_id, flags=0) from None
            raw = bytes(body)
        return raw[req.stub_offset:end - a.auth_pad_length]

    def _on_request(self, raw: bytes, hdr: p.Header) -> None:
        try:
            req = p.parse_request(raw, hdr)
        except p.PduError as e:
            raise _Abort(NCA_S_PROTO_ERROR, hdr.call_id) from e
        cid = hdr.call_id
        if self.auth_state == "pending":
            raise _Abort(NCA_S_PROTO_ERROR, cid)
        if self.auth_state == "failed":
            raise _Abort(FAULT_ACCESS_DENIED, cid)
        first, last = hdr.pfc_flags & p.PFC_FIRST_FRAG, hdr.pfc_flags & p.PFC_LAST_FRAG
        if first:
            if cid in self._partials or cid in self._active:
                raise _Abort(NCA_S_PROTO_ERROR, cid)
            part = _Partial(req.context_id, req.opnum, req.object, hdr.drep)
        else:
            part = self._partials.get(cid)
            if part is None or part.drep != hdr.drep:
                raise _Abort(NCA_S_PROTO_ERROR, cid)
        stub = self._unprotect(raw, hdr, req)
        if first and not last and req.alloc_hint > self.max_request:
            raise _Abort(FAULT_ACCESS_DENIED, cid, flags=0)
        part.chunks.append(stub)
        part.size += len(stub)
        if part.size > self.max_request:
            raise _Abort(FAULT_ACCESS_DENIED, cid, flags=0)
        if not last:
            if first:
                if len(self._partials) + len(self._active) >= MAX_CALLS:
                    raise _Abort(FAULT_SERVER_TOO_BUSY, cid)
                self._partials[cid] = part
            return
        self._partials.pop(cid, None)
        self._execute(cid, part, b"".join(part.chunks))

    def _execute(self, cid: int, part: _Partial, stub: bytes) -> None:
        ctx = self.contexts.get(part.context_id)
        if ctx is None:
            self._emit(p.pack_fault(cid, NCA_S_UNK_IF, flags=p.PFC_DID_NOT_EXECUTE))
            return
        iface = ctx.interface
        level = self.auth_level if self.auth_state == "done" else p.LEVEL_NONE
        if level < iface.min_auth_level:
            self._emit(p.pack_fault(cid, FAULT_ACCESS_DENIED, context_id=ctx.context_id,
                                    flags=p.PFC_DID_NOT_EXECUTE))
            return
        handler = iface.handlers.get(part.opnum)
        if handler is None:
            self._emit(p.pack_fault(cid, NCA_S_OP_RNG_ERROR, context_id=ctx.context_id,
                                    flags=p.PFC_DID_NOT_EXECUTE))
            return
        if len(self._active) >= MAX_CALLS:
            self._emit(p.pack_fault(cid, FAULT_SERVER_TOO_BUSY, context_id=ctx.context_id,
                                    flags=p.PFC_DID_NOT_EXECUTE))
            return
        vt = p.find_verification_trailer(stub)
        if vt is not None:
            if not self._vt_ok(vt, ctx, cid, part):
                self._emit(p.pack_fault(cid, FAULT_ACCESS_DENIED, context_id=ctx.context_id,
                                        flags=p.PFC_DID_NOT_EXECUTE))
                return
            stub = stub[:vt.offset]
        call = Call(self, cid, ctx.context_id, part.opnum, iface, self.principal, level, part.drep,
                    part.object_uuid)
        self._active[cid] = call
        try:
            result = handler(call, stub)
        except RpcFault as f:
            call.fault(f.status, f.did_not_execute)
        except Exception:
            log.exception("%s: %s opnum %d failed", self.name, iface.name, part.opnum)
            call.fault(FAULT_OTHER)
        else:
            if result is not None:
                call.reply(result)

    def _vt_ok(self, vt: p.VerificationTrailer, ctx: PresContext, cid: int, part: _Partial) -> bool:
        """MS-RPCE 2.2.2.13: the trailer must describe this very call (as Samba checks it)."""
        if vt.unknown_must_process:
            return False
        if vt.bitmask1 is not None and vt.bitmask1 & p.VT_CLIENT_SUPPORTS_HEADER_SIGNING \
                and not self.client_header_sign:
            return False
        if vt.pcontext is not None and vt.pcontext != (ctx.abstract, ctx.transfer):
            return False
        if vt.header2 is not None and vt.header2 != (p.REQUEST, part.drep, cid, ctx.context_id, part.opnum):
            return False
        return True

    # ---- responses -----------------------------------------------------------------------------
    def _complete(self, call: Call, stub: bytes | None, fault: tuple[int, bool] | None) -> None:
        if call.done:
            return
        call.done = True
        if self._active.get(call.call_id) is call:
            del self._active[call.call_id]
        if call.orphaned or self.closed or self.want_close:
            return
        if fault is not None:
            status, dne = fault
            self._emit(p.pack_fault(call.call_id, status, context_id=call.context_id,
                                    flags=p.PFC_DID_NOT_EXECUTE if dne else 0))
        else:
            try:
                self._emit_response(call, stub)
            except SecurityError as e:
                log.info("%s: cannot protect the response: %s", self.name, e)
                self._emit(p.pack_fault(call.call_id, FAULT_SEC_PKG_ERROR, context_id=call.context_id))
        self._notify()

    def _emit_response(self, call: Call, stub: bytes) -> None:
        """Fragment the stub to the negotiated size; each fragment carries its own verifier
        (C706 12.6.4.10, MS-RPCE 2.2.2.11: stub padded to 16 bytes before the sec_trailer)."""
        level = call.auth_level
        protect = level >= p.LEVEL_CALL and self._sec is not None
        sig = self._sec.sig_size if protect else 0
        room = self.max_xmit - p.RESPONSE_HEADER_SIZE - (p.SEC_TRAILER_SIZE + sig if protect else 0)
        if protect:
            room -= room % 16
        total = len(stub)
        off = 0
        while True:
            chunk = stub[off:off + room]
            flags = (p.PFC_FIRST_FRAG if off == 0 else 0)
            nxt = off + len(chunk)
            if nxt >= total:
                flags |= p.PFC_LAST_FRAG
            body = p.response_prefix(total - off, call.context_id) + chunk
            if not protect:
                self._emit(p.pack_header(p.RESPONSE, flags, call.call_id, p.HEADER_SIZE + len(body)) + body)
            else:
                pad = p.auth_pad(len(chunk))
                trailer = p.SecTrailer(self.auth_type, level, pad, self.auth_context_id).pack()
                n = p.HEADER_SIZE + len(body) + pad + p.SEC_TRAILER_SIZE + sig
                pdu = bytearray(p.pack_header(p.RESPONSE, flags, call.call_id, n, sig) + body + b"\0" * pad
                                + trailer)
                if level == p.LEVEL_PKT_PRIVACY:
                    s = self._sec.seal(pdu, p.RESPONSE_HEADER_SIZE, p.RESPONSE_HEADER_SIZE + len(chunk) + pad)
                else:
                    s = self._sec.sign(bytes(pdu))
                self._emit(bytes(pdu) + s)
            off = nxt
            if off >= total:
                break
