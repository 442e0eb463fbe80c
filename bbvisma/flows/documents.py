"""Receipts of BuchhaltungsButler and their e-invoice files, read at most once per change.

Every flow that needs what a receipt's document says (orders: lines and buyer; products: SKUs
and characteristics; stock, prices, shipments: quantities, prices, delivery data) reads it
through :class:`ReceiptDocuments`, so a file is fetched and parsed once per change of the
receipt -- whichever flow asks first -- and never kept itself: the cache holds the parsed
:class:`~bbvisma.records.Document` as a JSON dict plus the receipt's detail fields.

Why a fingerprint of the list row: BuchhaltungsButler gives receipts no modification time. The
list row (``/receipts/get``) is the only thing a run sees for free; when anything in it changes
(amount, counterparty, file name, payment, ...) the receipt counts as changed and its file is
read again. An unchanged row is served from the cache without a single call.

What is cached per receipt (``ctx.documents``, keyed by ``(id_by_customer, fingerprint)``)::

    {"detail": {...ReceiptDetail fields without the file...},
     "document": {...Document.to_mapping_dict()...} | None,
     "refusal": {"cause": ..., "message": ...} | None}

A refused file (ZUGFeRD 1.0, MINIMUM profile, ...) is cached with its refusal, so a parked
receipt does not cost a download on every run; :meth:`ReceiptDocuments.document` raises the
same :class:`~bbvisma.errors.UnsupportedDocument` again from the cache.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import date, datetime
from typing import Any

from bbvisma.buchhaltungsbutler.models import (
    E_INVOICE_PDF,
    Receipt,
    ReceiptDetail,
)
from bbvisma.einvoice import read_document
from bbvisma.engine import FlowContext
from bbvisma.errors import ConfigError, UnsupportedDocument
from bbvisma.linkstore import MemoryDocumentCache
from bbvisma.records import Document

__all__ = ["ReceiptDocuments", "receipt_fingerprint"]

#: version of the cached entry's shape; part of the fingerprint so a changed shape (or reader)
#: invalidates old entries instead of misreading them
CACHE_VERSION = "1"
CAUSE_NO_FILE = "no_file"


def receipt_fingerprint(receipt: Receipt | dict[str, Any]) -> str:
    """A stable hash of a receipt's list row: BB has no modification time, so a changed row is
    a changed receipt. Only the list row's fields count (the single get answers some of them
    differently, e.g. without ``date_uploaded``), so always fingerprint the list row."""
    if isinstance(receipt, Receipt):
        row = {name: getattr(receipt, name) for name in Receipt.model_fields}
    else:
        row = {name: receipt.get(name) for name in Receipt.model_fields}
    text = json.dumps(row, sort_keys=True, default=_json_default, ensure_ascii=False)
    digest = hashlib.sha256(f"{CACHE_VERSION}|{text}".encode()).hexdigest()
    return digest[:32]


def _json_default(value: Any) -> Any:
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return str(value)  # Decimal: its exact text


class ReceiptDocuments:
    """Reads outgoing/incoming receipts page by page and their e-invoice files at most once per
    change (``ctx.documents`` cache keyed by ``(id_by_customer, fingerprint)``; stores the
    parsed Document as a JSON dict, never the file).

    Without ``ctx.documents`` a private in-memory cache is used, so one instance still reads
    each file once. Share one :class:`~bbvisma.linkstore.DocumentCache` between flows to share
    the reads across flows. ``fetches`` counts the BuchhaltungsButler receipt reads (one
    ``/receipts/get/<id>`` with the file per cache miss) made through this instance.
    """

    def __init__(self, ctx: FlowContext):
        if ctx.bb is None:
            raise ConfigError("the flow needs a BuchhaltungsButler client (ctx.bb)")
        self.ctx = ctx
        self.cache = ctx.documents if ctx.documents is not None else MemoryDocumentCache()
        self.fetches = 0
        #: the last entry read, ``(receipt id, fingerprint, entry)``: a flow asking for the
        #: detail and then the document of a receipt costs one cache read. One entry only: an
        #: entry holds a whole parsed document, and a flow reading receipts one after the
        #: other never comes back to an earlier one
        self._last: tuple[str, str, dict[str, Any]] | None = None

    # -- listing ------------------------------------------------------------------------------
    def iter_receipts(
        self,
        *,
        direction: str,
        since: str | None,
        date_from: date | str | None = None,
        date_to: date | str | None = None,
        payment_status: str | None = None,
        types: set[str] | None = None,
    ) -> Iterator[Receipt]:
        """Receipts of ``direction`` (``"outbound"``/``"inbound"``) changed after ``since``
        (BB's ``date_since_last_modified``, Berlin wall time ``YYYY-MM-DD HH:MM:SS``; the
        caller subtracts its overlap window), streamed page by page. ``types`` keeps only
        those receipt types (``{"invoice outbound", "credit outbound"}``)."""
        filters: dict[str, Any] = {"list_direction": direction}
        if since:
            filters["date_since_last_modified"] = since
        if date_from:
            filters["date_from"] = date_from
        if date_to:
            filters["date_to"] = date_to
        if payment_status:
            filters["payment_status"] = payment_status
        for receipt in self.ctx.bb.iter_receipts(**filters):
            if types is not None and receipt.type not in types:
                continue
            yield receipt

    # -- one receipt --------------------------------------------------------------------------
    def detail(self, receipt: Receipt) -> ReceiptDetail:
        """The receipt's detail (currency, VAT, ``e_invoice_type``, payment reference, ...)
        without its file; cached with the document."""
        entry = self._entry(receipt)
        return ReceiptDetail.model_validate(entry["detail"])

    def document(self, receipt: Receipt) -> Document | None:
        """The receipt's e-invoice as a Document; ``None`` when the receipt has no e-invoice
        (``e_invoice_type`` 0: a plain PDF or no file). A file that cannot be read raises
        :class:`~bbvisma.errors.UnsupportedDocument` with its cause (the caller parks)."""
        entry = self._entry(receipt)
        refusal = entry.get("refusal")
        if refusal:
            raise UnsupportedDocument(refusal["message"], cause=refusal["cause"])
        data = entry.get("document")
        if data is None:
            return None
        return Document.model_validate(data)

    def has_einvoice(self, receipt: Receipt) -> bool:
        """Whether BB flags the receipt as an e-invoice (ZUGFeRD/Factur-X or XRechnung)."""
        return (self.detail(receipt).e_invoice_type or E_INVOICE_PDF) != E_INVOICE_PDF

    # -- internals ----------------------------------------------------------------------------
    def _entry(self, receipt: Receipt) -> dict[str, Any]:
        key = receipt.id_by_customer
        fingerprint = receipt_fingerprint(receipt)
        last = self._last
        if last is not None and last[0] == key and last[1] == fingerprint:
            return last[2]
        self._last = None  # the old entry can go while the new one is read
        entry = self.cache.get(key, fingerprint)
        if entry is None:
            entry = self._fetch(receipt)
            self.cache.put(key, fingerprint, entry)
        self._last = (key, fingerprint, entry)
        return entry

    def _fetch(self, receipt: Receipt) -> dict[str, Any]:
        """One BB read of the receipt with its file, parsed into a cache entry."""
        self.fetches += 1
        detail = self.ctx.bb.get_receipt(receipt.id_by_customer, get_file=True)
        entry: dict[str, Any] = {
            "detail": detail.model_dump(mode="json", exclude={"file"}),
            "document": None,
            "refusal": None,
        }
        if (detail.e_invoice_type or E_INVOICE_PDF) == E_INVOICE_PDF:
            return entry
        name = detail.filename or receipt.filename or f"receipt {receipt.id_by_customer}"
        if not detail.file:
            entry["refusal"] = {
                "cause": CAUSE_NO_FILE,
                "message": (
                    f"{name}: BuchhaltungsButler flags receipt {receipt.id_by_customer} as an "
                    f"e-invoice (e_invoice_type {detail.e_invoice_type}) but sends no file"
                ),
            }
            return entry
        try:
            document = read_document(detail.file, name)
        except UnsupportedDocument as exc:
            entry["refusal"] = {"cause": exc.cause, "message": exc.message}
            return entry
        entry["document"] = document.to_mapping_dict()
        return entry
