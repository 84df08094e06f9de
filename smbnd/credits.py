"""Server-side credit accounting and MessageId window (MS-SMB2 3.3.1.1, 3.3.1.2, 3.3.5.2.3)."""
from __future__ import annotations


class CreditWindow:
    """CommandSequenceWindow: the MessageIds the client may still use.

    Valid ids are [lo, hi) minus the ids already consumed (bitmask `used`, relative to lo).
    """

    __slots__ = ("lo", "hi", "used", "max_credits")

    def __init__(self, max_credits: int = 8192):
        self.lo = 0
        self.hi = 1          # MessageId 0 is allowed for the first NEGOTIATE
        self.used = 0
        self.max_credits = max_credits

    @property
    def outstanding(self) -> int:
        return self.hi - self.lo - bin(self.used).count("1")

    def consume(self, message_id: int, charge: int) -> bool:
        """Mark [message_id, message_id+charge) used; False if any is outside the window or used."""
        charge = max(charge, 1)
        if message_id < self.lo or message_id + charge > self.hi:
            return False
        rel = message_id - self.lo
        mask = ((1 << charge) - 1) << rel
        if self.used & mask:
            return False
        self.used |= mask
        # slide lo past the consumed prefix
        if self.used & 1:
            inv = ~self.used
            shift = (inv & -inv).bit_length() - 1
            self.used >>= shift
            self.lo += shift
        return True

    def grant(self, requested: int, charge: int = 1) -> int:
        """Credits to grant in a response (MS-SMB2 3.3.1.2): what was asked, within max_credits,
        and never leaving the client with none."""
        room = self.max_credits - self.outstanding
        n = min(max(requested, charge if requested else 1), room)
        if n <= 0 and self.outstanding <= 0:
            n = 1
        n = max(n, 0)
        self.hi += n
        return n
