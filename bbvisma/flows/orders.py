"""Orders flow: BuchhaltungsButler outgoing receipts -> Visma.net customer invoices, credit
notes or sales orders.

A receipt has no lines of its own in BuchhaltungsButler; its e-invoice file does. Per receipt
(``invoice outbound`` / ``credit outbound``, filtered by payment status and date window, read
since the watermark) the flow decides, in this order, and every "no" parks the receipt with a
cause that names the offending value:

1. **Already sent?** The link (engine) -- then, before any create, a lookup by the
   deterministic external reference in Visma.net (``externalReference`` of invoices and credit
   notes, ``customerRefNo`` of sales orders; default ``BB-<id_by_customer>``), so a lost link or
   a lost create answer never leads to a duplicate. With the setting ``documents_since`` (no
   document of the integration is older), a batch with many receipts to create reads the
   target's documents created since then once, page by page, into a per-run index of their
   references' hashes (16 bytes a document, :class:`~bbvisma.hashindex.HashIndex`): a miss
   answers the lookup -- a new receipt then costs its create alone --, a hit is looked up in
   Visma.net (which gives the number; a hash shared by chance finds nothing and the receipt is
   created); the documents the run creates go into the index too. A lost create answer or an
   "already exists" refusal is always resolved by a lookup in Visma.net itself, never from
   the index (read before the create). Without the setting, or when the documents since then
   fill more pages than the batch has receipts to create, each receipt is looked up.
2. **What is it?** From the document type: 380 -> invoice (or sales order, setting
   ``order_target``); 381, any credit-note type or BB type ``credit outbound`` -> credit note;
   384 (corrected invoice) -> setting ``corrected_invoice_policy``: ``new_invoice`` books it as
   a new invoice that names the invoice it corrects (BT-25, or -- as in real files -- a note
   like "Ursprungsbeleg-Nr: R123"; a correction whose total is negative becomes a credit note
   with the signs turned), ``park`` parks it; 389 (self-billed) and 751 (MINIMUM, no lines)
   park with the reason. A file that cannot be read (ZUGFeRD 1.0, plain PDF flagged as
   e-invoice, totals that do not add up) parks with the reader's cause.
3. **Lines.** Each document line: its seller-assigned id is the SKU; a line without one goes to
   the ``fallback_item`` with the line's name. Document-level allowances and charges become
   their own lines on the items of the value maps ``allowance_items`` / ``charge_items``
   (key: reason code, then reason text, then ``"*"``), so the lines add up to the document.
   Where quantity x price does not give the document's line amount (price base quantities,
   line allowances), the line carries the document's amount (``manualAmountInCurrency``). A
   receipt without an e-invoice becomes one line per VAT rate on the fallback item (BB gives
   the gross amount and the rate), or parks (``no_einvoice_policy``).
4. **VAT.** Category and rate (``S:19``, ``AE:0``, ...) -> Visma.net VAT category through the
   value map ``vat_codes``; an unmapped combination parks (``unmapped:vat_codes:S:21``).
5. **Customer.** The BB debtor whose name is the receipt's counterparty (or the document
   buyer's name); its e-mail is the debtor's, else the buyer contact's, else the buyer's
   electronic address of scheme EM. The debtors are read once per run into a
   :class:`~bbvisma.flows.debtorindex.DebtorIndex` (name digests and account numbers, 32 bytes
   a debtor; whole records only of debtors without a customer link). A debtor already linked
   -> that customer, no call; else the customers flow's own rules create or adopt it
   (:meth:`CustomersFlow.ensure_customer`).
   A buyer without debtor becomes a customer keyed ``buyer:<e-mail|VAT id|name>``; the default
   debtor (``default_customer_number``) is used when ``use_default_debtor`` is set or no
   customer data exists at all.
6. **Products.** Every SKU must exist in Visma.net: one paged inventory read per run (lazily,
   only when something is written; kept as hashes, 16 bytes an item), a miss re-checked with
   one GET; still missing -> created from the line (``missing_sku_policy=create``) or parked
   (``missing_sku:<SKU>``).
7. **After the creates of a batch** its documents are read back -- one list read per target
   (documents created since the batch began), a GET for any the list does not show -- and
   Visma.net's totals (amount incl. VAT and net) are compared with the source's; a difference
   beyond 0.01 x lines parks the record (``totals_mismatch``) -- never a silent difference.

Payment terms (value map ``payment_terms``: net days ``"30"`` or Skonto ``"14S2"`` -> credit
term) and payment method (``payment_methods``: UNTDID 4461 code -> Visma.net payment method)
are resolved by the flow; an unmapped one is left out (Visma.net takes the customer's) while
the document's due date is always sent. The branch comes from the settings. Currencies stay.

Documents already in Visma.net are never changed by the sync: a receipt that changes after it
was sent parks (``changed_after_sync``) for a human to correct or credit it in Visma.net.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from bbvisma.buchhaltungsbutler.models import (
    Debtor,
    Receipt,
    ReceiptDetail,
    format_berlin_datetime,
    parse_berlin_datetime,
)
from bbvisma.engine import Action, Flow, FlowContext, RecordResult, SourceItem
from bbvisma.errors import ApiError, ConfigError, DataError
from bbvisma.hashindex import HashIndex
from bbvisma.linkstore import Link
from bbvisma.mapper import Mapping
from bbvisma.records import AllowanceCharge, Document, DocumentLine, Party
from bbvisma.vismanet.client import DEFAULT_PAGE_SIZE

from .customers import CustomersFlow, nested_context
from .debtorindex import DebtorIndex
from .defaults import default_mapping
from .documents import ReceiptDocuments

__all__ = [
    "CREDIT_NOTE_FIELDS",
    "SALES_ORDER_FIELDS",
    "OrdersFlow",
    "parse_documents_since",
    "preceding_invoice_number",
]

CENT = Decimal("0.01")
RECEIPT_TYPES = frozenset({"invoice outbound", "credit outbound"})
ORDER_TARGETS = ("customer_invoice", "sales_order")
STATUS_FILTERS = {"all": None, "paid": "paid", "unpaid": "unpaid"}

#: UNTDID 1001 codes booked as invoices (commercial, debit note, prepayment, factored, partial)
INVOICE_TYPES = frozenset({"380", "383", "386", "393", "326", "875", "876", "877"})
CORRECTED_TYPE = "384"
#: refused with a reason a user can act on (751 normally stops in the reader already)
PARKED_TYPES = {
    "389": "a self-billed invoice (type 389) is issued by the buyer: it is not an outgoing "
    "invoice of this company and is not booked as one",
    "751": "an invoice information (type 751, MINIMUM profile) is not a tax invoice and has "
    "no lines",
}

#: targets of the flow and where their documents live
INVOICE, CREDIT_NOTE, SALES_ORDER = "customer_invoice", "customer_credit_note", "sales_order"

#: the lookup index reads documents from this long before ``documents_since``: the time zone
#: in which Visma.net reads a date-time filter is not published, and a day more to read is
#: cheap next to a duplicate
DOCUMENTS_SINCE_MARGIN = dt.timedelta(days=1)
#: debtors whose customer links are read in one query while the debtor index is built
DEBTOR_LINK_CHUNK = 500
#: the read-back of a batch lists documents from this long before its start: the clocks of
#: Visma.net's servers (and ours, for a run's first batch) need not agree to the second; a
#: document the list still misses is read by its GET
READ_BACK_MARGIN = dt.timedelta(minutes=1)
#: what the totals check reads of a document: its totals and when it was created (sales
#: orders: changed -- their DTO has no creation time)
_DOCUMENT_FIELDS = (
    "amountInCurrency",
    "amount",
    "detailTotalInCurrency",
    "detailTotal",
    "createdDateTime",
)
_CHECKED_FIELDS = {
    INVOICE: _DOCUMENT_FIELDS,
    CREDIT_NOTE: _DOCUMENT_FIELDS,
    SALES_ORDER: ("orderTotal", "vatTaxableTotal", "vatExemptTotal", "lastModifiedDateTime"),
}

#: fields of CustomerCreditNoteUpdateDto (POST /v2/customerCreditNote) a credit note keeps
CREDIT_NOTE_FIELDS = frozenset(
    {
        "currencyId",
        "customerRefNumber",
        "externalReference",
        "contact",
        "project",
        "lines",
        "customerVatZoneId",
        "invoiceAddress",
        "invoiceContact",
        "overrideNumberSeries",
        "sendToAutoInvoice",
        "referenceNumber",
        "customerNumber",
        "childCustomerNumber",
        "consolidateInvoices",
        "documentDate",
        "origInvoiceDate",
        "hold",
        "postPeriod",
        "financialPeriod",
        "invoiceText",
        "locationId",
        "salesperson",
        "note",
        "branchNumber",
        "cashAccount",
        "dontPrint",
        "dontEmail",
        "taxDetails",
    }
)
#: fields of CustomerCreditNoteLineUpdateDto
CREDIT_NOTE_LINE_FIELDS = frozenset(
    {
        "operation",
        "inventoryNumber",
        "lineNumber",
        "description",
        "quantity",
        "unitPriceInCurrency",
        "manualAmountInCurrency",
        "accountNumber",
        "vatCodeId",
        "uom",
        "discountPercent",
        "discountAmountInCurrency",
        "manualDiscount",
        "note",
        "branchNumber",
    }
)
#: invoice field -> SalesOrderUpdateDto field (POST /v2/salesorder); others are left out
SALES_ORDER_FIELDS = {
    "customerNumber": "customer",
    "externalReference": "customerRefNo",
    "customerRefNumber": "customerOrder",
    "documentDate": "date",
    "currencyId": "currency",
    "creditTermsId": "terms",
    "paymentMethodId": "paymentMethod",
    "paymentReference": "paymentRef",
    "invoiceText": "description",
    "note": "note",
    "branchNumber": "branchNumber",
}
#: invoice line field -> SalesOrderLineUpdateDto field
SALES_ORDER_LINE_FIELDS = {
    "operation": "operation",
    "inventoryNumber": "inventoryNumber",
    "description": "lineDescription",
    "quantity": "quantity",
    "unitPriceInCurrency": "unitPrice",
    "vatCodeId": "taxCategory",
    "uom": "uom",
    "note": "note",
}

#: how a corrected invoice names the invoice it corrects when BT-25 is missing (German and
#: English wordings seen in real files: "Ursprungsbeleg-Nr  : R87654321012345")
_PRECEDING_NOTE = re.compile(
    r"(?:Ursprungsbeleg|Ursprungsrechnung|Originalrechnung|Bezugsrechnung|urspr(?:\.|üngliche)"
    r"\s*Rechnung|Korrektur\s+(?:zu|der)\s+Rechnung|Rechnungskorrektur\s+zu|corrects\s+invoice|"
    r"preceding\s+invoice|original\s+invoice)"
    r"[\s\-]*(?:Nr\.?|Nummer|No\.?|number|#)?\s*[:.]?\s*(?P<number>[A-Za-z0-9][\w/\-.]*\w)",
    re.IGNORECASE,
)
#: Skonto in a payment-terms text: "3% Skonto innerhalb 10 Tagen", "10 Tage 3 % Skonto"
_SKONTO = (
    re.compile(r"(?P<pct>\d+(?:[.,]\d+)?)\s*%\s*Skonto\D{0,40}?(?P<days>\d+)\s*Tag", re.I),
    re.compile(r"(?P<days>\d+)\s*Tag\w*\D{0,20}?(?P<pct>\d+(?:[.,]\d+)?)\s*%\s*Skonto", re.I),
)


def preceding_invoice_number(document: Document) -> str | None:
    """The number of the invoice a correction refers to: BT-25, else a reference in a note."""
    for preceding in document.preceding_invoices:
        if preceding.number:
            return preceding.number
    for note in document.notes:
        match = _PRECEDING_NOTE.search(note or "")
        if match:
            return match.group("number")
    return None


def _dec(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _plain(number: Decimal) -> str:
    text = format(number.normalize(), "f")
    return "0" if text in ("0", "-0") else text


def parse_documents_since(value: Any, now: dt.datetime) -> dt.datetime | None:
    """The setting ``documents_since`` as an aware date-time (a value without offset is UTC,
    as Odoo keeps date-times), ``None`` when not set. Text that is no ISO 8601 date or
    date-time, or a moment after ``now``, is a ConfigError: a bound later than the documents
    the integration created would hide them from the lookup before a create."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, dt.date):
        moment = dt.datetime.combine(value, dt.time())
    else:
        try:
            moment = dt.datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(
                f"orders: documents_since must be an ISO 8601 date and time such as "
                f"2026-11-30T10:00:00Z, not {value!r}"
            ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    if now.tzinfo is None:
        now = now.replace(tzinfo=dt.timezone.utc)
    if moment > now:
        raise ConfigError(
            f"orders: documents_since ({moment.isoformat()}) lies in the future; it must be "
            "a moment before the integration created its first document in Visma.net"
        )
    return moment


def vat_key(category: str | None, rate: Decimal | None) -> str:
    """``"S:19"``, ``"AE:0"``, ``"S:5.5"``: the key of the value map ``vat_codes``."""
    return f"{(category or '?').upper()}:{_plain(rate if rate is not None else Decimal(0))}"


# --------------------------------------------------------------------------------------------
# The flow
# --------------------------------------------------------------------------------------------
class OrdersFlow(Flow):
    """BB outgoing receipts -> Visma.net customer invoices / credit notes / sales orders."""

    entity = "order"
    SETTINGS_DEFAULTS: dict[str, Any] = {
        "order_target": "customer_invoice",
        "visma_order_type": "SO",
        "status_filter": "all",
        "date_from": None,
        "date_to": None,
        "use_default_debtor": False,
        "default_customer_number": None,
        "missing_sku_policy": "park",
        "no_einvoice_policy": "fallback",
        "fallback_item": "SERVICE",
        "corrected_invoice_policy": "new_invoice",
        "branch": None,
        # -- keys of this flow beyond the common list --
        #: minutes read again before the watermark (BB's delta filter is Berlin wall time)
        "overlap_minutes": 10,
        #: prefix of the external reference that makes a receipt findable in Visma.net
        "external_reference_prefix": "BB-",
        #: item class of items created from lines (None: Visma.net's default class)
        "new_item_class": None,
        #: settings of the customers flow used for the customers of orders
        "customer_settings": None,
        #: rows of the customers mapping ({"rows", "children"} or a Mapping); None: default
        "customer_mapping": None,
        #: allowed difference of Visma.net's totals per document line
        "totals_tolerance": "0.01",
        #: ISO 8601 date and time before which the integration created no document in
        #: Visma.net (the Odoo layer: the integration's creation; no offset = UTC). Set, a
        #: batch with many receipts to create reads the target's documents since then once
        #: instead of looking each receipt up; None: a lookup per receipt
        "documents_since": None,
    }
    CHOICES = {
        "order_target": ORDER_TARGETS,
        "status_filter": tuple(STATUS_FILTERS),
        "missing_sku_policy": ("create", "park"),
        "no_einvoice_policy": ("fallback", "park"),
        "corrected_invoice_policy": ("new_invoice", "park"),
    }

    def __init__(self, ctx: FlowContext):
        super().__init__(ctx)
        given = {k: v for k, v in (ctx.settings or {}).items() if v is not None}
        self.settings = {**self.SETTINGS_DEFAULTS, **given}
        for name, allowed in self.CHOICES.items():
            if self.settings[name] not in allowed:
                raise ConfigError(
                    f"orders: {name} must be one of {', '.join(allowed)}, "
                    f"not {self.settings[name]!r}"
                )
        if ctx.bb is None or ctx.visma is None:
            raise ConfigError("the orders flow needs both clients (ctx.bb and ctx.visma)")
        if self.settings["use_default_debtor"] and not self.settings["default_customer_number"]:
            raise ConfigError(
                "orders: use_default_debtor is set but default_customer_number is not"
            )
        self.documents_since = parse_documents_since(self.settings["documents_since"], ctx.now())
        self.documents = ReceiptDocuments(ctx)
        self.customers = CustomersFlow(
            nested_context(ctx, self._customer_settings(), self._customer_mapping())
        )
        #: canonical source of each record, from build() to check_batch(); kept per batch
        self._sources: dict[str, dict] = {}
        self._batch_started: dt.datetime | None = None
        self._start_run()

    def _start_run(self) -> None:
        """Forget what a run reads lazily, so the next run reads it afresh: the inventory,
        the debtors, the lookup indexes and Visma.net's clock readings."""
        self._known_items: HashIndex | None = None
        self._debtors: DebtorIndex | None = None
        #: set by a batch with many receipts to create (and documents_since): lookups before
        #: creates are answered from per-target indexes, each read on first use
        self._indexing = False
        #: target -> the lookup keys of its documents; None: too long to be worth reading
        self._indexes: dict[str, HashIndex | None] = {}
        #: receipts to create in the batch that turned indexing on
        self._to_create = 0
        #: target -> the latest creation (sales orders: change) time Visma.net reported for a
        #: document of this run, as Visma.net writes it
        self._marks: dict[str, dt.datetime] = {}

    # ========================================================================================
    # Settings helpers
    # ========================================================================================
    def _customer_settings(self) -> dict[str, Any]:
        given = self.settings.get("customer_settings") or {}
        top = {
            k: self.settings[k]
            for k in CustomersFlow.SETTINGS_DEFAULTS
            if k in (self.ctx.settings or {})
        }
        return {**CustomersFlow.SETTINGS_DEFAULTS, **top, **given}

    def _customer_mapping(self) -> Mapping:
        given = self.settings.get("customer_mapping")
        if given is None:
            return default_mapping("customers")
        if isinstance(given, Mapping):
            return given
        return Mapping.from_rows(
            given.get("name") or "customers", given.get("rows") or [], given.get("children")
        )

    # ========================================================================================
    # Reading
    # ========================================================================================
    def source_items(self, since: str | None) -> Iterator[SourceItem]:
        """Outgoing invoices and credit notes changed since ``since`` minus the overlap,
        within the date window and status filter, page by page."""
        self._start_run()
        for receipt in self.documents.iter_receipts(
            direction="outbound",
            since=self._since(since),
            date_from=self.settings["date_from"],
            date_to=self.settings["date_to"],
            payment_status=STATUS_FILTERS[self.settings["status_filter"]],
            types=set(RECEIPT_TYPES),
        ):
            yield self._item(receipt)

    def _since(self, since: str | None) -> str | None:
        if not since:
            return None
        moment = parse_berlin_datetime(since)
        overlap = dt.timedelta(minutes=float(self.settings["overlap_minutes"] or 0))
        return format_berlin_datetime(moment - overlap)

    def run_watermark(self, started: dt.datetime) -> str | None:
        """Receipts carry no modification time: a complete run stores its start (Berlin)."""
        return format_berlin_datetime(started)

    def _item(self, receipt: Receipt) -> SourceItem:
        label = " ".join(p for p in (receipt.invoicenumber, receipt.counterparty) if p)
        return SourceItem(receipt.id_by_customer, None, receipt.model_dump(mode="json"), label)

    def fetch_item(self, source_key: str) -> SourceItem:
        """The receipt's list row (its fingerprint keys the document cache): found through
        its invoice number, the narrowest filter the list offers."""
        detail = self.ctx.bb.get_receipt(source_key)
        filters: dict[str, Any] = {"list_direction": "outbound"}
        if detail.invoicenumber:
            filters["invoicenumber"] = detail.invoicenumber
        for receipt in self.ctx.bb.iter_receipts(**filters):
            if receipt.id_by_customer == str(source_key):
                return self._item(receipt)
        raise DataError(
            f"receipt {source_key} is no longer listed in BuchhaltungsButler (deleted?)",
            cause=f"receipt_gone:{source_key}",
        )

    def replay(self, source_keys):
        self._start_run()  # the user may have fixed items in Visma.net meanwhile
        return super().replay(source_keys)

    def prepare_batch(self, items: list[SourceItem]) -> None:
        # a record's canonical source is needed from build() to check_batch(): one batch at
        # most (memory stays flat however many receipts a run reads)
        self._sources.clear()
        super().prepare_batch(items)
        self._batch_started = self.ctx.now()
        if not self._indexing and self.documents_since is not None:
            self._indexing = self.index_pays_off(items)
            self._to_create = self.records_to_create(items)

    # ========================================================================================
    # Building
    # ========================================================================================
    def build(self, item: SourceItem, link: Link | None) -> tuple[dict, dict]:
        receipt = Receipt.model_validate(item.data)
        detail = self.documents.detail(receipt)
        document = self.documents.document(receipt)  # UnsupportedDocument parks
        source = self._canonical(receipt, detail, document)
        self._check_vat(source)
        # the customer last: everything that can park the record without a write comes first
        source["customer_number"] = self._customer_number(receipt, document, link)
        self._sources[item.key] = source
        payload = self.map(source, link)
        return source, self._shape(payload, source)

    def _canonical(
        self, receipt: Receipt, detail: ReceiptDetail, document: Document | None
    ) -> dict[str, Any]:
        settings = self.settings
        if document is None:
            return self._canonical_without_einvoice(receipt, detail)
        code = document.type_code
        sign = Decimal(1)
        preceding = None
        if code in PARKED_TYPES:
            raise DataError(
                f"receipt {receipt.id_by_customer} ({document.number}): {PARKED_TYPES[code]}",
                cause=f"document_type:{code}",
            )
        if code == CORRECTED_TYPE:
            if settings["corrected_invoice_policy"] == "park":
                raise DataError(
                    f"receipt {receipt.id_by_customer} ({document.number}) is a corrected "
                    "invoice (type 384); the setting corrected_invoice_policy=park keeps "
                    "corrections for a human",
                    cause="document_type:384",
                )
            preceding = preceding_invoice_number(document)
            if not preceding:
                raise DataError(
                    f"receipt {receipt.id_by_customer} ({document.number}) is a corrected "
                    "invoice (type 384) that names no invoice it corrects (no BT-25, no "
                    "reference in its notes)",
                    cause="corrected_invoice_without_reference",
                )
            if document.totals.grand_total < 0:
                kind, target, sign = "corrected_invoice", CREDIT_NOTE, Decimal(-1)
            else:
                kind, target = "corrected_invoice", INVOICE
        elif document.is_credit_note or receipt.is_credit:
            kind, target = "credit_note", CREDIT_NOTE
            preceding = preceding_invoice_number(document)
        elif code in INVOICE_TYPES:
            kind, target = "invoice", INVOICE
        else:
            raise DataError(
                f"receipt {receipt.id_by_customer} ({document.number}): document type {code} "
                "is neither an invoice nor a credit note",
                cause=f"document_type:{code}",
            )
        if target == INVOICE and settings["order_target"] == "sales_order":
            target = SALES_ORDER
        lines = [self._line(line, sign) for line in document.lines]
        for charge in document.allowances_charges:
            if charge.amount:
                lines.append(self._allowance_line(charge, sign))
        totals = document.totals
        terms = document.payment_terms
        due = (terms.due_date if terms else None) or receipt.due_date or detail.date_payment_due
        net_days = terms.net_days if terms else None
        if net_days is None and due is not None:
            net_days = (due - document.issue_date).days
        if due is None and net_days is not None:
            due = document.issue_date + dt.timedelta(days=net_days)
        means = document.payment_means[0].code if document.payment_means else None
        note = f"Bezug: Rechnung {preceding}" if preceding else None
        order = self._order_dict(
            receipt,
            kind=kind,
            target=target,
            number=document.number,
            date=document.issue_date,
            due_date=due,
            currency=document.currency,
            lines=lines,
            net=totals.tax_basis_total * sign,
            tax=totals.tax_total * sign,
            gross=totals.grand_total * sign,
            payment_means_code=means,
            payment_terms_key=self._terms_key(terms, net_days),
            preceding=preceding,
            order_ref=document.order_ref,
            delivery_date=document.delivery_date,
            payment_reference=document.payment_reference or detail.payment_reference,
            note=note,
            document_type=code,
            buyer_email=document.buyer.email if document.buyer else None,
        )
        tax_details = self._tax_details(document, sign, lines) if target != SALES_ORDER else None
        if tax_details:
            order["tax_details"] = tax_details
        return order

    def _tax_details(
        self, document: Document, sign: Decimal, lines: list[dict[str, Any]]
    ) -> list[dict[str, Any]] | None:
        """The document's own VAT amounts where Visma.net would compute another one.

        Visma.net computes a document's VAT per VAT from its lines (net x rate, rounded to the
        cent); a document may round otherwise -- a Hungarian invoice rounds its VAT to whole
        forints. For such a VAT a tax detail line (``TaxDetailUpdateDto``: VAT id, taxable
        amount, VAT amount) carries the document's amounts, so that the invoice in Visma.net
        says what the issued invoice says; every other VAT is left to Visma.net, so documents
        without such a difference are sent exactly as before. The VAT id comes from the value
        map ``vat_ids`` (Visma.net VAT category -> its VAT id); without an entry the document
        goes without tax details and the totals check reports the difference. Sales orders
        have no tax details in the API.
        """
        vat_codes = self.ctx.value_maps.get("vat_codes") or {}
        vat_ids = self.ctx.value_maps.get("vat_ids") or {}
        details = []
        for subtotal in document.tax_subtotals:
            key = vat_key(subtotal.category, subtotal.rate)
            net = sum((line["line_amount"] for line in lines if line["vat_key"] == key), Decimal(0))
            rate = subtotal.rate or Decimal(0)
            computed = (net * rate / 100).quantize(CENT, rounding=ROUND_HALF_UP)
            amount = subtotal.amount * sign
            if amount == computed:
                continue
            tax_id = vat_ids.get(vat_codes.get(key) or "")
            if not tax_id:
                return None
            details.append(
                {
                    "vat_key": key,
                    "tax_id": tax_id,
                    "taxable": _text(net),
                    "amount": _text(amount),
                }
            )
        return details or None

    def _canonical_without_einvoice(self, receipt: Receipt, detail: ReceiptDetail) -> dict:
        """One line per VAT rate on the fallback item, from BB's gross amount and rate."""
        if self.settings["no_einvoice_policy"] == "park":
            raise DataError(
                f"receipt {receipt.id_by_customer} ({receipt.invoicenumber}) has no e-invoice "
                "(plain PDF); the setting no_einvoice_policy=park keeps it for a human",
                cause="no_einvoice",
            )
        gross = detail.amount if detail.amount is not None else receipt.amount
        if gross is None:
            raise DataError(
                f"receipt {receipt.id_by_customer} has neither an e-invoice nor an amount",
                cause="no_einvoice_no_amount",
            )
        rate = detail.vat
        if rate is None:
            raise DataError(
                f"receipt {receipt.id_by_customer} ({receipt.invoicenumber}) has no e-invoice "
                "and BuchhaltungsButler gives no single VAT rate for it (none or several): its "
                "lines cannot be derived",
                cause="no_einvoice_vat_unknown",
            )
        net = (gross * 100 / (100 + rate)).quantize(CENT, rounding=ROUND_HALF_UP)
        category = "S" if rate > 0 else "E"
        number = receipt.invoicenumber or receipt.id_by_customer
        line = {
            "kind": "fallback",
            "sku": None,
            "item": self.settings["fallback_item"],
            "description": f"{number} ({_plain(rate)} %)",
            "quantity": Decimal(1),
            "unit_price": net,
            "line_amount": net,
            "manual_amount": None,
            "vat_category": category,
            "vat_rate": rate,
            "vat_key": vat_key(category, rate),
            "unit_code": None,
            "source_line_id": None,
        }
        target = CREDIT_NOTE if receipt.is_credit else INVOICE
        if target == INVOICE and self.settings["order_target"] == "sales_order":
            target = SALES_ORDER
        return self._order_dict(
            receipt,
            kind="credit_note" if receipt.is_credit else "invoice",
            target=target,
            number=number,
            date=receipt.date or detail.date,
            due_date=receipt.due_date or detail.date_payment_due,
            currency=detail.currency or "EUR",
            lines=[line],
            net=net,
            tax=gross - net,
            gross=gross,
            payment_means_code=None,
            payment_terms_key=None,
            preceding=None,
            order_ref=None,
            delivery_date=receipt.date_delivery,
            payment_reference=detail.payment_reference,
            note=None,
            document_type=None,
            buyer_email=None,
        )

    def _order_dict(self, receipt: Receipt, **values: Any) -> dict[str, Any]:
        """The canonical order (what the mapper reads and the log shows), JSON-ready."""
        value_maps = self.ctx.value_maps
        terms_key = values["payment_terms_key"]
        means = values["payment_means_code"]
        terms_map = value_maps.get("payment_terms") or {}
        means_map = value_maps.get("payment_methods") or {}
        lines = values["lines"]
        order = {
            "source_key": receipt.id_by_customer,
            "receipt_type": receipt.type,
            "document_kind": values["kind"],
            "document_type": values["document_type"],
            "target": values["target"],
            "external_reference": f"{self.settings['external_reference_prefix']}"
            f"{receipt.id_by_customer}",
            "number": values["number"],
            "date": _iso(values["date"]),
            "due_date": _iso(values["due_date"]),
            "delivery_date": _iso(values["delivery_date"]),
            "currency": values["currency"],
            "amount": _text(receipt.amount),
            "paid": receipt.is_paid,
            "counterparty": receipt.counterparty,
            "buyer_email": values["buyer_email"],
            "payment_reference": values["payment_reference"],
            "order_ref": values["order_ref"],
            "preceding_invoice": values["preceding"],
            "note": values["note"],
            "payment_means_code": means,
            "payment_method_id": means_map.get(means, means_map.get("*")) if means else None,
            "payment_terms_key": terms_key,
            "credit_terms_id": (
                terms_map.get(terms_key, terms_map.get("*")) if terms_key else None
            ),
            "branch": self.settings["branch"],
            "net_total": _text(values["net"]),
            "tax_total": _text(values["tax"]),
            "gross_total": _text(values["gross"]),
            "lines": [_json_line(line) for line in lines],
        }
        return order

    def _line(self, line: DocumentLine, sign: Decimal) -> dict[str, Any]:
        base = line.price_base_quantity or Decimal(1)
        quantity = line.quantity * sign
        unit_price = line.net_price / base if base else line.net_price
        amount = line.line_net_amount * sign
        description = line.name
        return {
            "kind": "product" if line.sku else "service",
            "sku": line.sku,
            "item": line.sku or self.settings["fallback_item"],
            "description": description,
            "quantity": quantity,
            "unit_price": unit_price,
            "line_amount": amount,
            "manual_amount": _manual(quantity, unit_price, amount),
            "vat_category": line.vat_category,
            "vat_rate": line.vat_rate,
            "vat_key": vat_key(line.vat_category, line.vat_rate),
            "unit_code": line.unit_code,
            "source_line_id": line.line_id,
        }

    def _allowance_line(self, charge: AllowanceCharge, sign: Decimal) -> dict[str, Any]:
        map_name = "charge_items" if charge.is_charge else "allowance_items"
        table = self.ctx.value_maps.get(map_name) or {}
        item = None
        for key in (charge.reason_code, charge.reason, "*"):
            if key and key in table:
                item = table[key]
                break
        if item is None:
            what = charge.reason_code or charge.reason or "(no reason)"
            raise DataError(
                f"value map {map_name!r} has no item for the document-level "
                f"{'charge' if charge.is_charge else 'allowance'} {what!r} (and no '*')",
                cause=f"unmapped:{map_name}:{what}",
            )
        amount = (charge.amount if charge.is_charge else -charge.amount) * sign
        return {
            "kind": "charge" if charge.is_charge else "allowance",
            "sku": None,
            "item": item,
            "description": charge.reason or ("Zuschlag" if charge.is_charge else "Nachlass"),
            "quantity": Decimal(1),
            "unit_price": amount,
            "line_amount": amount,
            "manual_amount": None,
            "vat_category": charge.vat_category,
            "vat_rate": charge.vat_rate,
            "vat_key": vat_key(charge.vat_category, charge.vat_rate),
            "unit_code": None,
            "source_line_id": None,
        }

    @staticmethod
    def _terms_key(terms, net_days: int | None) -> str | None:
        """``"14S2"`` (Skonto days, percent) or ``"30"`` (net days): key of ``payment_terms``."""
        percent = days = None
        if terms is not None:
            percent, days = terms.discount_percent, terms.discount_days
            if (percent is None or days is None) and terms.description:
                for pattern in _SKONTO:
                    match = pattern.search(terms.description)
                    if match:
                        percent = Decimal(match.group("pct").replace(",", "."))
                        days = int(match.group("days"))
                        break
        if percent and days:
            return f"{days}S{_plain(percent)}"
        return str(net_days) if net_days is not None else None

    def _check_vat(self, source: dict) -> None:
        """Park early (before any write) naming the first unmapped VAT combination."""
        table = self.ctx.value_maps.get("vat_codes")
        if table is None:
            raise ConfigError("value map 'vat_codes' is not defined")
        if "*" in table:
            return
        for line in source["lines"]:
            if line["vat_key"] not in table:
                raise DataError(
                    f"value map 'vat_codes' has no Visma.net VAT category for "
                    f"{line['vat_key']} (VAT category {line['vat_category']}, rate "
                    f"{line['vat_rate']} %) of the line {line['description']!r}",
                    cause=f"unmapped:vat_codes:{line['vat_key']}",
                )

    # ========================================================================================
    # Customer
    # ========================================================================================
    def _customer_number(
        self, receipt: Receipt, document: Document | None, link: Link | None
    ) -> str | None:
        settings = self.settings
        if settings["use_default_debtor"]:
            return str(settings["default_customer_number"])
        if link is not None and link.meta.get("customer"):
            return str(link.meta["customer"])  # the order was sent: keep its customer
        buyer = document.buyer if document is not None else None
        number = self._debtor_for(receipt, buyer)
        if number is not None:
            linked = self._linked_customer(number)
            if linked is not None:
                return linked  # the common case: the customers flow synced the debtor
            data = self._debtor(number).model_dump(mode="json")
            if not data.get("email") and buyer is not None and buyer.email:
                data["email"] = buyer.email  # debtor e-mail first, then the document's
            return self._ensure_customer(number, data)
        if buyer is not None and buyer.name:
            key, data = _buyer_customer(buyer)
            return self._ensure_customer(key, data)
        if settings["default_customer_number"]:
            return str(settings["default_customer_number"])
        raise DataError(
            f"receipt {receipt.id_by_customer}: no debtor named {receipt.counterparty!r} in "
            "BuchhaltungsButler, no buyer in a document and no default_customer_number",
            cause="no_customer",
        )

    def _linked_customer(self, key: str) -> str | None:
        """The Visma.net customer the customers flow linked to ``key`` (a debtor's account
        number, a buyer key), if any."""
        link = self.ctx.links.get(self.customers.entity, key)
        return link.target_key if link is not None and link.target_key else None

    def _ensure_customer(self, key: str, data: dict[str, Any]) -> str | None:
        linked = self._linked_customer(key)
        if linked is not None:
            return linked
        item = self.customers.item_for(data, key=key)
        try:
            number, action = self.customers.ensure_customer(item)
        except (DataError, ApiError) as exc:
            raise DataError(
                f"customer {key} ({data.get('name')}): {exc.message}",
                cause=f"customer:{getattr(exc, 'cause', None) or exc.cause_key}",
            ) from None
        if number is None and action is Action.CREATE and self.ctx.dry_run:
            return f"(new customer {key})"
        return number

    def _debtor_for(self, receipt: Receipt, buyer: Party | None) -> str | None:
        """The account number of the debtor named like the receipt's counterparty (or the
        document's buyer); several debtors of that name: the one with the buyer's e-mail, else
        a DataError naming them all."""
        index = self._debtor_index()
        names = [receipt.counterparty]
        if buyer is not None:
            names += [buyer.name, buyer.trading_name]
        for name in names:
            candidates = index.named(_name_key(name)) if name else []
            if len(candidates) == 1:
                return candidates[0].number
            if len(candidates) > 1:
                email = buyer.email if buyer is not None else None
                exact = [c for c in candidates if c.has_email(email)]
                if len(exact) == 1:
                    return exact[0].number
                numbers = sorted(c.number for c in candidates)
                raise DataError(
                    f"receipt {receipt.id_by_customer}: {len(candidates)} debtors are named "
                    f"{name!r} ({', '.join(numbers)}); the customer is ambiguous",
                    cause=f"ambiguous_debtor:{name}",
                )
        return None

    def _debtor_index(self) -> DebtorIndex:
        """The debtors of BuchhaltungsButler by name, read once per run page by page; whole
        records are kept only of the debtors without a customer link (a customer may have to be
        created from them), so the index costs 32 bytes a synced debtor."""
        if self._debtors is None:
            index = DebtorIndex()
            page: list[Debtor] = []
            for debtor in self.ctx.bb.iter_debtors():
                page.append(debtor)
                if len(page) == DEBTOR_LINK_CHUNK:
                    self._index_debtors(index, page)
                    page = []
            self._index_debtors(index, page)
            self._debtors = index.seal()
        return self._debtors

    def _index_debtors(self, index: DebtorIndex, debtors: list[Debtor]) -> None:
        links = self.ctx.links.get_many(
            self.customers.entity, [d.postingaccount_number for d in debtors]
        )
        for debtor in debtors:
            link = links.get(debtor.postingaccount_number)
            index.append(_name_key(debtor.name), debtor, keep=not (link and link.target_key))

    def _debtor(self, number: str) -> Debtor:
        """The whole debtor of an account number the index named: kept by the index when it
        had no customer link; else (its link is gone since) read again from the list."""
        debtor = self._debtors.record(number) if self._debtors is not None else None
        if debtor is None:
            debtor = self.ctx.bb.find_debtor(number)
        if debtor is None:
            raise DataError(
                f"debtor {number} no longer exists in BuchhaltungsButler",
                cause=f"debtor_gone:{number}",
            )
        return debtor

    # ========================================================================================
    # Payload shape per target
    # ========================================================================================
    def _shape(self, payload: dict, source: dict) -> dict:
        target = source["target"]
        if target == INVOICE:
            return payload
        if target == CREDIT_NOTE:
            renamed = {
                {
                    "invoiceLines": "lines",
                    "billingAddress": "invoiceAddress",
                    "taxDetailLines": "taxDetails",
                }.get(k, k): v
                for k, v in payload.items()
            }
            out = {k: v for k, v in renamed.items() if k in CREDIT_NOTE_FIELDS}
            out["lines"] = [
                {k: v for k, v in line.items() if k in CREDIT_NOTE_LINE_FIELDS}
                for line in renamed.get("lines") or []
            ]
            return out
        out: dict[str, Any] = {"orderType": self.settings["visma_order_type"]}
        for key, value in payload.items():
            if key in SALES_ORDER_FIELDS:
                out[SALES_ORDER_FIELDS[key]] = value
        lines = []
        for line in payload.get("invoiceLines") or []:
            shaped = {
                SALES_ORDER_LINE_FIELDS[k]: v
                for k, v in line.items()
                if k in SALES_ORDER_LINE_FIELDS
            }
            manual = line.get("manualAmountInCurrency")
            quantity = line.get("quantity")
            if manual is not None and quantity:
                # order lines have no manual amount: the price carries the document's amount
                shaped["unitPrice"] = float(
                    (Decimal(str(manual)) / Decimal(str(quantity))).quantize(Decimal("1E-6"))
                )
            lines.append(shaped)
        out["lines"] = lines
        return out

    # ========================================================================================
    # Writing
    # ========================================================================================
    def create(self, item: SourceItem, payload: dict) -> tuple[str, Any]:
        source = self._sources.get(item.key) or self.build(item, None)[0]
        target = source["target"]
        find, create = self._target_calls(target, payload, source)
        index = self._lookup_index(target)
        key = self._lookup_key(target, source["external_reference"], source["customer_number"])
        # the index's miss is certain: no call. A hit (a document with this key, or one whose
        # key shares its hash) is looked up in Visma.net, which gives the number -- or None
        # for a shared hash, and the document is created
        known = index is None or (key is not None and key in index)
        existing = find() if known else None
        if existing is not None:
            return existing, {"target": target, "number": existing, "adopted": True}
        self._ensure_items(source)
        # a lost answer or an "already exists" refusal: looked up again in Visma.net itself
        # (``find``, never the index read before the create), never resent blindly
        number, how = self.create_or_adopt(find, create)
        if index is not None and key is not None:
            index.add(key)
        if how == "recovered":
            return number, {"target": target, "number": number, "recovered": True}
        if how == "adopted":
            return number, {"target": target, "number": number, "adopted": True}
        return number, {"target": target, "number": number, "created": True}

    def update(self, item: SourceItem, payload: dict, link: Link) -> Any:
        what = (link.meta or {}).get("target", "document").replace("_", " ")
        raise DataError(
            f"receipt {item.key} is already in Visma.net as {what} {link.target_key} and has "
            "changed since (or its totals did not match); documents in Visma.net are not "
            "changed by the sync -- correct or credit it there",
            cause="changed_after_sync",
        )

    def link_meta(self, item: SourceItem, payload: dict, response: Any) -> dict | None:
        source = self._sources.get(item.key) or {}
        meta = {
            "target": source.get("target"),
            "customer": source.get("customer_number"),
            "external_reference": source.get("external_reference"),
            "document_number": source.get("number"),
        }
        if source.get("target") == SALES_ORDER:
            meta["order_type"] = self.settings["visma_order_type"]
        return meta

    def _target_calls(
        self, target: str, payload: dict, source: dict
    ) -> tuple[Callable[[], str | None], Callable[[], str]]:
        visma = self.ctx.visma
        ref = source["external_reference"]
        if target == INVOICE:

            def find() -> str | None:
                found = visma.find_customer_invoice_by_external_ref(ref)
                return found.get("referenceNumber") if found else None

            return find, lambda: visma.create_customer_invoice(payload)
        if target == CREDIT_NOTE:

            def find_credit() -> str | None:
                found = visma.find_customer_credit_note_by_external_ref(ref)
                return found.get("referenceNumber") if found else None

            return find_credit, lambda: visma.create_customer_credit_note(payload)
        order_type = self.settings["visma_order_type"]

        def find_order() -> str | None:
            found = visma.find_sales_order_by_customer_ref(
                source["customer_number"], ref, order_type=order_type
            )
            return found.get("orderNo") if found else None

        return find_order, lambda: visma.create_sales_order(payload)

    # -- items --------------------------------------------------------------------------------
    def _ensure_items(self, source: dict) -> None:
        """Every item of the lines exists in Visma.net, or the record parks naming it."""
        known = self._inventory()
        visma = self.ctx.visma
        create = self.settings["missing_sku_policy"] == "create"
        missing_skus: list[dict] = []
        for line in source["lines"]:
            item_id = line["item"]
            if item_id in known:
                continue
            if line["kind"] == "product" and create:
                # ensure_inventory looks the SKU up first (created since the read?) and
                # creates it only if it is still missing
                number, _created = visma.ensure_inventory(self._item_payload(line))
                known.add(str(number))
                continue
            if visma.find_inventory(item_id) is not None:  # created since the read
                known.add(item_id)
                continue
            if line["kind"] != "product":
                setting = {
                    "service": "fallback_item",
                    "fallback": "fallback_item",
                    "allowance": "value map allowance_items",
                    "charge": "value map charge_items",
                }[line["kind"]]
                raise DataError(
                    f"item {item_id!r} ({setting}) does not exist in Visma.net",
                    cause=f"missing_item:{item_id}",
                )
            if all(m["item"] != item_id for m in missing_skus):
                missing_skus.append(line)
        if missing_skus:
            names = ", ".join(m["item"] for m in missing_skus)
            raise DataError(
                f"SKU {names} does not exist in Visma.net (missing_sku_policy=park): create "
                "the item(s) or set missing_sku_policy=create, then replay",
                cause=f"missing_sku:{missing_skus[0]['item']}",
            )

    def _inventory(self) -> HashIndex:
        """The item numbers of Visma.net, read once per run page by page (16 bytes an item).
        A hit is not confirmed: a SKU sharing a 64-bit hash with an item (about one chance in
        10^9 for 10^5 items) would be sent as it is and refused by Visma.net with the item's
        name -- an error on the record, never a wrong document."""
        if self._known_items is None:
            index = HashIndex()
            for item in self.ctx.visma.list_inventory():
                index.append(str(item.get("inventoryNumber")))
            self._known_items = index.seal()
        return self._known_items

    def _item_payload(self, line: dict) -> dict[str, Any]:
        """A Visma.net item (InventoryUpdateDto) for a SKU first seen on a document line."""
        units = self.ctx.value_maps.get("units") or {}
        vat_codes = self.ctx.value_maps.get("vat_codes") or {}
        unit = units.get(line.get("unit_code") or "") if line.get("unit_code") else None
        price = abs(Decimal(line["unit_price"]))
        payload: dict[str, Any] = {
            "inventoryNumber": line["item"],
            "description": line["description"],
            "status": "Active",
            "defaultPrice": float(price.quantize(Decimal("1E-4"))),
        }
        if self.settings["new_item_class"]:
            payload["itemClass"] = self.settings["new_item_class"]
        if unit:
            payload["baseUnit"] = payload["salesUnit"] = unit
        vat = vat_codes.get(line["vat_key"])
        if vat:
            payload["vatCode"] = vat
        return payload

    # -- documents in Visma.net, per target ---------------------------------------------------
    @staticmethod
    def _lookup_key(target: str, reference: str | None, customer: str | None) -> str | None:
        """What the lookup before a create matches, as one string: the external reference;
        for a sales order the customer's reference within the customer (as
        ``find_sales_order_by_customer_ref`` looks), the customer number written with its
        length first (``"5:10001|BB-7"``) so that no other pair reads the same. ``None``
        without a reference."""
        if not reference:
            return None
        if target == SALES_ORDER:
            customer = str(customer)
            return f"{len(customer)}:{customer}|{reference}"
        return reference

    def _document_key(self, target: str, document: dict) -> str | None:
        if target == SALES_ORDER:
            customer = (document.get("customer") or {}).get("number")
            return self._lookup_key(target, document.get("customerRefNo"), customer)
        return self._lookup_key(target, document.get("externalReference"), None)

    @staticmethod
    def _number_of(target: str, document: dict) -> str | None:
        number = document.get("orderNo" if target == SALES_ORDER else "referenceNumber")
        return str(number) if number else None

    def _documents(
        self, target: str, since: dt.datetime, *, page_size: int = DEFAULT_PAGE_SIZE
    ) -> Iterator[dict]:
        """Documents of ``target`` created at or after ``since``, page by page. The sales
        order list has no creation filter (spec): orders *changed* since are read -- a
        superset, since an order created since then was changed since then."""
        visma = self.ctx.visma
        if target == SALES_ORDER:
            return visma.list_sales_orders(
                order_type=self.settings["visma_order_type"],
                modified_since=since,
                page_size=page_size,
            )
        documents = (
            visma.list_customer_invoices if target == INVOICE else visma.list_customer_credit_notes
        )
        return documents(created_since=since, page_size=page_size)

    def _read_document(self, target: str, number: str) -> dict:
        visma = self.ctx.visma
        if target == SALES_ORDER:
            return visma.get_sales_order(number, order_type=self.settings["visma_order_type"])
        if target == INVOICE:
            return visma.get_customer_invoice(number)
        return visma.get_customer_credit_note(number)

    def _lookup_index(self, target: str) -> HashIndex | None:
        """The run's index of the lookup keys of ``target`` documents, read on first use from
        the documents created since ``documents_since``; ``None``: look up per receipt (no
        batch with enough receipts to create, or no ``documents_since``).

        A :class:`~bbvisma.hashindex.HashIndex` (16 bytes a document, so the run's memory does
        not grow with the documents since then nor with those it creates): a miss is certain
        -- the document is not in Visma.net --, a hit is looked up in Visma.net (which gives
        the number), see :meth:`create`.

        Unlike master data, the documents since ``documents_since`` grow with the years: a
        list longer in pages than the batch has receipts to create (its first page's metadata
        says how long it is) costs more than looking them up, and is not read further."""
        if not self._indexing or self.documents_since is None:
            return None
        if target in self._indexes:
            return self._indexes[target]
        index: HashIndex | None = HashIndex()
        since = self.documents_since - DOCUMENTS_SINCE_MARGIN
        for position, document in enumerate(self._documents(target, since)):
            pages = _pages(document) if position == 0 else 0
            if pages > self._to_create:
                self.ctx.logger.info(
                    "orders: the %ss since %s fill %d pages, more than the %d receipt(s) to "
                    "create: looked up one by one",
                    target.replace("_", " "),
                    since,
                    pages,
                    self._to_create,
                )
                index = None
                break
            key = self._document_key(target, document)
            if key is not None:
                index.append(key)
        self._indexes[target] = index.seal() if index is not None else None
        return self._indexes[target]

    # -- after the writes of a batch ----------------------------------------------------------
    def check_batch(self, written: list[tuple[SourceItem, RecordResult]]) -> dict[str, Exception]:
        """Visma.net's totals of every document the batch created must equal the source's
        (0.01 per line): one list read per target for the whole batch, a GET for a document
        the list does not show (an adopted older one; clocks that disagree) -- none passes
        unchecked."""
        by_target: dict[str, dict[str, str]] = {}  # target -> number -> source key
        for item, result in written:
            target = self._sources[item.key]["target"]
            by_target.setdefault(target, {})[str(result.target_key)] = item.key
        failures: dict[str, Exception] = {}
        for target, keys in by_target.items():
            listed = self._read_back(target, set(keys))
            for number, key in keys.items():
                try:
                    document = listed.get(number) or self._read_document(target, number)
                    self._note_clock(target, document)
                    self._check_totals(self._sources[key], key, number, document)
                except Exception as exc:  # the engine applies its policy to the record
                    failures[key] = exc
        return failures

    def _read_back(self, target: str, numbers: set[str]) -> dict[str, dict]:
        """The batch's documents of ``target`` (by number) from one list read: those created
        since the batch began -- by Visma.net's own clock once a document of the run told
        it (:meth:`_note_clock`), else by ours -- less :data:`READ_BACK_MARGIN`, paged only
        until all are seen. A single document is left to its GET (as cheap, and exact)."""
        if len(numbers) < 2 or self._batch_started is None:
            return {}
        since = self._marks.get(target, self._batch_started) - READ_BACK_MARGIN
        page_size = max(DEFAULT_PAGE_SIZE, self.ctx.batch_size)
        found: dict[str, dict] = {}
        for document in self._documents(target, since, page_size=page_size):
            number = self._number_of(target, document)
            if number in numbers:  # kept slim: a page may hold hundreds of documents
                found[number] = {k: document[k] for k in _CHECKED_FIELDS[target] if k in document}
                if len(found) == len(numbers):
                    break
        if len(found) < len(numbers):
            self.ctx.logger.info(
                "orders: %d of %d %s(s) of the batch not in the list since %s; read one by one",
                len(numbers) - len(found),
                len(numbers),
                target.replace("_", " "),
                since,
            )
        return found

    def _note_clock(self, target: str, document: dict) -> None:
        """Keep the latest creation time (sales orders: change time) Visma.net reports for a
        document of this run, as Visma.net writes it: the next batch's read-back counts from
        Visma.net's clock, whatever ours says."""
        text = document.get("lastModifiedDateTime" if target == SALES_ORDER else "createdDateTime")
        if not text:
            return
        try:
            stamp = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
        except ValueError:
            return
        stamp = stamp.replace(tzinfo=None)  # Visma.net's own wall clock, as its filter reads
        if target not in self._marks or stamp > self._marks[target]:
            self._marks[target] = stamp

    def _check_totals(self, source: dict, key: str, number: str, document: dict) -> None:
        """DataError ``totals_mismatch`` unless the document's amount incl. VAT and its net
        amount are the source's (tolerance ``totals_tolerance`` per line)."""
        target = source["target"]
        if target == SALES_ORDER:
            gross = _dec(document.get("orderTotal"))
            net = (_dec(document.get("vatTaxableTotal")) or Decimal(0)) + (
                _dec(document.get("vatExemptTotal")) or Decimal(0)
            )
        else:
            gross = _dec(document.get("amountInCurrency", document.get("amount")))
            net = _dec(document.get("detailTotalInCurrency", document.get("detailTotal")))
        want_gross = Decimal(source["gross_total"])
        want_net = Decimal(source["net_total"])
        tolerance = Decimal(str(self.settings["totals_tolerance"])) * max(1, len(source["lines"]))
        problems = []
        if gross is None or abs(gross - want_gross) > tolerance:
            problems.append(f"amount incl. VAT {gross} in Visma.net, {want_gross} in the source")
        if net is None or abs(net - want_net) > tolerance:
            problems.append(f"net {net} in Visma.net, {want_net} in the source")
        if problems:
            raise DataError(
                f"{target.replace('_', ' ')} {number} in Visma.net does not match receipt "
                f"{key} ({source['number']}): " + "; ".join(problems) + f" (tolerance {tolerance})",
                cause="totals_mismatch",
            )


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def _pages(document: dict) -> int:
    """How many pages the list a document came in fills, from its ``metadata`` (0: unknown)."""
    meta = document.get("metadata") or {}
    total = meta.get("totalCount")
    if not total:
        return 0
    size = min(DEFAULT_PAGE_SIZE, int(meta.get("maxPageSize") or DEFAULT_PAGE_SIZE))
    return -(-int(total) // size)


def _name_key(name: str | None) -> str:
    return " ".join((name or "").split()).casefold()


def _buyer_customer(buyer: Party) -> tuple[str, dict[str, Any]]:
    """A debtor-shaped dict and a stable key for a buyer known only from documents."""
    email = buyer.email
    key = "buyer:" + (email or buyer.vat_id or _name_key(buyer.name))
    address = buyer.address
    data = {
        "name": buyer.name,
        "contact_person_name": buyer.contact.name if buyer.contact else None,
        "street": address.line1 if address else None,
        "additional_address_line": address.line2 if address else None,
        "zip": address.postal_code if address else None,
        "city": address.city if address else None,
        "country": address.country_code if address else None,
        "sales_tax_id": buyer.vat_id,
        "email": email,
        "phone": buyer.contact.phone if buyer.contact else None,
    }
    return key, data


def _manual(quantity: Decimal, unit_price: Decimal, amount: Decimal) -> Decimal | None:
    """The document's line amount where the sent quantity x price would not give it."""
    sent = quantity.quantize(Decimal("1E-4"), rounding=ROUND_HALF_UP) * unit_price.quantize(
        Decimal("1E-6"), rounding=ROUND_HALF_UP
    )
    if sent.quantize(CENT, rounding=ROUND_HALF_UP) == amount.quantize(CENT, rounding=ROUND_HALF_UP):
        return None
    return amount


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _iso(value: dt.date | None) -> str | None:
    return value.isoformat() if value is not None else None


def _json_line(line: dict[str, Any]) -> dict[str, Any]:
    """Decimals as strings (exact; the mapper's ``number`` turns them into numbers)."""
    return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in line.items()}
