"""The BuchhaltungsButler debtors as the orders flow looks them up by name: 32 bytes a debtor.

The orders flow finds a receipt's customer through the debtor named like its counterparty (or
the document's buyer). Kept as a dict of name -> :class:`~bbvisma.buchhaltungsbutler.models.
Debtor`, the debtors cost about 1.2 KiB each (12 MiB for 10 000) for a run that mostly needs
only a posting account number: a debtor the customers flow has synced is linked to its Visma.net
customer, and the customer number comes from that link.

:class:`DebtorIndex` keeps, per debtor, the 128-bit BLAKE2b digest of its normalised name, its
posting account number and a 64-bit digest of its e-mail, in sorted arrays; whole records only
for the debtors the caller keeps (the orders flow: those not linked to a customer when the index
is read -- a customer may have to be created from them).

What a digest answers: BuchhaltungsButler has no single read of a debtor, so a hit cannot be
confirmed by a call the way the 64-bit :class:`~bbvisma.hashindex.HashIndex`'s hits are. With
128 bits, two different names share a digest with a probability (about 10^-30 for 10^5 debtors)
far below that of a hardware fault: a hit is taken as the name. The e-mail digest only tells
apart the few debtors that share a name.
"""

from __future__ import annotations

import hashlib
from array import array
from bisect import bisect_left
from typing import NamedTuple

from bbvisma.buchhaltungsbutler.models import Debtor

__all__ = ["Candidate", "DebtorIndex", "email_digest"]


def _digest(text: str, size: int) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=size).digest()


def _signed(data: bytes) -> int:
    return int.from_bytes(data, "little", signed=True)


def email_digest(email: str | None) -> int:
    """The 64-bit digest an index keeps of an e-mail address (0: none)."""
    return _signed(_digest(email, 8)) if email else 0


class Candidate(NamedTuple):
    """A debtor of a name: its posting account number and its e-mail's digest."""

    number: str
    email_digest: int

    def has_email(self, email: str | None) -> bool:
        """Whether the debtor's e-mail is ``email`` (compared exactly, as digests)."""
        return bool(email) and self.email_digest == email_digest(email)


class DebtorIndex:
    """Debtors by normalised name. Build it with :meth:`append` for every debtor, then
    :meth:`seal`; :meth:`named` answers the debtors of a name, :meth:`record` the whole debtor
    where it was kept."""

    __slots__ = ("_high", "_low", "_numbers", "_emails", "_texts", "_records", "_sealed")

    def __init__(self) -> None:
        #: the name digest's two halves, the account number, the e-mail digest: one slot each
        self._high = array("q")
        self._low = array("q")
        self._numbers = array("q")
        self._emails = array("q")
        #: account numbers that are not plain decimal numbers (slot in _numbers: -1 - position)
        self._texts: list[str] = []
        self._records: dict[str, Debtor] = {}
        self._sealed = False

    def __len__(self) -> int:
        return len(self._numbers)

    def append(self, name_key: str, debtor: Debtor, *, keep: bool = False) -> None:
        """Add a debtor under ``name_key`` (its normalised name); ``keep``: keep the whole
        record for :meth:`record`."""
        if self._sealed:
            raise RuntimeError("DebtorIndex.append after seal()")
        name = _digest(name_key, 16)
        self._high.append(_signed(name[:8]))
        self._low.append(_signed(name[8:]))
        self._numbers.append(self._encode(debtor.postingaccount_number))
        self._emails.append(email_digest(debtor.email))
        if keep:
            self._records[debtor.postingaccount_number] = debtor

    def seal(self) -> DebtorIndex:
        """Sort what :meth:`append` collected; the index can be read from now on."""
        columns = (self._high, self._low, self._numbers, self._emails)
        order = sorted(range(len(self._high)), key=self._high.__getitem__)
        self._high, self._low, self._numbers, self._emails = (
            array("q", (column[at] for at in order)) for column in columns
        )
        self._sealed = True
        return self

    def named(self, name_key: str) -> list[Candidate]:
        """The debtors whose normalised name is ``name_key``, in no particular order."""
        if not self._sealed:
            raise RuntimeError("DebtorIndex read before seal()")
        name = _digest(name_key, 16)
        high, low = _signed(name[:8]), _signed(name[8:])
        found = []
        at = bisect_left(self._high, high)
        while at < len(self._high) and self._high[at] == high:
            if self._low[at] == low:
                found.append(Candidate(self._decode(self._numbers[at]), self._emails[at]))
            at += 1
        return found

    def record(self, number: str) -> Debtor | None:
        """The whole debtor, if it was appended with ``keep``."""
        return self._records.get(number)

    def _encode(self, number: str) -> int:
        if number.isascii() and number.isdigit() and str(int(number)) == number:
            value = int(number)
            if value < 2**63:
                return value
        self._texts.append(number)
        return -len(self._texts)

    def _decode(self, value: int) -> str:
        return str(value) if value >= 0 else self._texts[-1 - value]
