"""A Visma.net simulator with indexes, for benchmark sizes.

The project's :class:`~bbvisma.simulators.vismanet.VismaSimulator` filters its lists by
scanning every record: right for tests, but a per-record lookup (``GET /v1/customer?email=``,
``GET /v1/customerinvoice?externalReference=``) over N records then costs O(N) inside the
simulator, and a run of N records O(N^2) -- 10 000 customers spend ~550 s in the scan alone.
A real tenant answers these from a database index. :class:`IndexedVismaSimulator` answers
exactly these two queries (the filter alone, plus paging) from an index kept in step with
creates and updates, and leaves every other request to the simulator unchanged. It changes
how fast the simulator answers, not what: the simulator's time is subtracted from the
engine-side figures anyway; the index only keeps the wall time of a 10 000-record bench
within minutes.

It also stamps writes the way a tenant's clock would: the FakeClock the bench shares between
clients and simulators stands still unless someone waits, so every record of a run would carry
the same creation and change time, and a read filtered by time (the orders flow's read-back of
a batch: documents created since the batch began) would list every document of the run each
time. A tenant's clock runs while it works: each write is stamped :attr:`WRITE_SECONDS` after
the previous one (4 writes a second, the pace of the production quota of 15 000 requests an
hour). Quotas, pacing and tokens still follow the FakeClock.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from bbvisma.simulators.vismanet import VismaSimulator

PAGING = frozenset({"pagenumber", "pagesize"})


class IndexedVismaSimulator(VismaSimulator):
    #: server time one write takes (see the module docstring)
    WRITE_SECONDS = 0.25

    def reset_state(self) -> None:
        super().reset_state()
        self._writes = 0
        self._email_index: dict[str, set[str]] = {}
        self._email_of: dict[str, str] = {}
        self._refs: dict[str, dict[str, list[str]]] = {"invoices": {}, "credit_notes": {}}

    def _write_time(self) -> dt.datetime:
        self._writes += 1
        return self._now() + dt.timedelta(seconds=self.WRITE_SECONDS * self._writes)

    # -- index upkeep -------------------------------------------------------------------------
    def _apply_customer(self, record: dict, p: dict, creating: bool) -> dict:
        out = super()._apply_customer(record, p, creating)
        number = str(record.get("number"))
        old = self._email_of.pop(number, None)
        if old is not None:
            self._email_index.get(old, set()).discard(number)
        email = ((record.get("mainContact") or {}).get("email") or "").lower()
        self._email_of[number] = email
        self._email_index.setdefault(email, set()).add(number)
        return out

    def h_create_invoice(self, req, ctx, body):
        response = super().h_create_invoice(req, ctx, body)
        self._index_newest("invoices", self.invoices)
        return response

    def h_create_credit_note(self, req, ctx, body):
        response = super().h_create_credit_note(req, ctx, body)
        self._index_newest("credit_notes", self.credit_notes)
        return response

    def _index_newest(self, name: str, table: dict[str, dict]) -> None:
        """Index the document just created (the table's newest entry)."""
        if not table:
            return
        reference = next(reversed(table))
        ref = table[reference].get("externalReference")
        if ref:
            bucket = self._refs[name].setdefault(ref, [])
            if reference not in bucket:
                bucket.append(reference)

    # -- the two queries ----------------------------------------------------------------------
    def _only(self, req: Any, name: str) -> str | None:
        """The value of ``name`` if it is the request's only filter (besides paging)."""
        keys = {k.lower() for k in req.query}
        if keys - PAGING != {name.lower()}:
            return None
        return self._q(req, name)

    def h_list_customers(self, req, ctx, body):
        email = self._only(req, "email")
        if email is None:
            return super().h_list_customers(req, ctx, body)
        numbers = sorted(self._email_index.get(email.lower(), ()))
        records = [self.customers[n] for n in numbers if n in self.customers]
        return self._page(req, records)

    def h_list_invoices(self, req, ctx, body):
        return self._by_reference(
            req, ctx, body, "invoices", self.invoices, super().h_list_invoices
        )

    def h_list_credit_notes(self, req, ctx, body):
        return self._by_reference(
            req, ctx, body, "credit_notes", self.credit_notes, super().h_list_credit_notes
        )

    def _by_reference(self, req, ctx, body, name, table, fallback):
        ref = self._only(req, "externalReference")
        if ref is None:
            return fallback(req, ctx, body)
        records = [table[r] for r in self._refs[name].get(ref, []) if r in table]
        return self._page(req, records)
