"""Server-side SMB authentication: SPNEGO + NTLMv2 (sans-I/O)."""

from .ntlm import AuthError, AuthResult, NtlmAcceptor, NtlmSecurity
from .spnego import NTLMSSP_OID, Acceptor, negprot_token
from .users import UserDB, nt_hash_of

__all__ = [
    "Acceptor", "AuthError", "AuthResult", "NTLMSSP_OID", "NtlmAcceptor", "NtlmSecurity",
    "UserDB", "negprot_token", "nt_hash_of",
]
