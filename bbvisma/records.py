"""Canonical records: what the flows speak, independent of both APIs.

Two families live here:

* the **document** model (:class:`Document` and its parts) -- what the e-invoice reader gets out
  of a CII/UBL/ZUGFeRD file, close to EN 16931's business terms (BT-/BG- numbers in comments);
* the **sync** records (:class:`Customer`, :class:`Order`, :class:`Product`, ...) -- what a flow
  derives from BuchhaltungsButler data (debtors, receipts and their documents) and hands to the
  mapper, which turns them into Visma.net payloads.

Amounts are :class:`~decimal.Decimal`; ``to_mapping_dict()`` gives the plain dict the mapper's
source paths address (decimals as strings, dates as ISO strings).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=False)

    def to_mapping_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=False)


# --------------------------------------------------------------------------------------------
# Parties
# --------------------------------------------------------------------------------------------
class Address(Record):
    line1: str | None = None  # BT-35 / BT-50 / BT-75
    line2: str | None = None
    line3: str | None = None
    postal_code: str | None = None
    city: str | None = None
    country_code: str | None = None  # ISO 3166-1 alpha-2
    subdivision: str | None = None


class Contact(Record):
    name: str | None = None  # BT-56
    phone: str | None = None  # BT-57
    email: str | None = None  # BT-58


class Party(Record):
    name: str | None = None  # BT-44
    trading_name: str | None = None
    ids: list[str] = Field(default_factory=list)  # BT-46 buyer identifier(s)
    global_ids: list[tuple[str, str]] = Field(default_factory=list)  # (scheme, id)
    vat_id: str | None = None  # BT-48
    tax_number: str | None = None
    legal_id: str | None = None  # BT-47
    electronic_address: str | None = None  # BT-49
    electronic_address_scheme: str | None = None  # e.g. "EM" for e-mail
    address: Address | None = None
    contact: Contact | None = None

    @property
    def email(self) -> str | None:
        """The party's e-mail: contact e-mail first, else an electronic address of scheme EM."""
        if self.contact and self.contact.email:
            return self.contact.email
        if self.electronic_address_scheme == "EM" and self.electronic_address:
            return self.electronic_address
        return None


# --------------------------------------------------------------------------------------------
# Document (e-invoice) model
# --------------------------------------------------------------------------------------------
class Characteristic(Record):
    name: str  # BT-160
    value: str  # BT-161


class Classification(Record):
    code: str  # BT-158
    list_id: str | None = None  # BT-158-1 (e.g. "TST", "STI", "CV")
    list_version: str | None = None
    name: str | None = None


class AllowanceCharge(Record):
    is_charge: bool
    amount: Decimal  # BT-92 / BT-99 / BT-136 / BT-141
    base_amount: Decimal | None = None
    percent: Decimal | None = None
    reason: str | None = None
    reason_code: str | None = None
    vat_category: str | None = None  # document level only: BT-95 / BT-102
    vat_rate: Decimal | None = None


class DocumentLine(Record):
    line_id: str  # BT-126
    sku: str | None = None  # BT-155 seller's item identifier
    buyer_item_id: str | None = None  # BT-156
    gtin: str | None = None  # BT-157 with scheme 0160
    global_id: str | None = None
    global_id_scheme: str | None = None
    name: str  # BT-153
    description: str | None = None  # BT-154
    note: str | None = None
    quantity: Decimal  # BT-129
    unit_code: str | None = None  # BT-130 (UN/ECE rec 20)
    net_price: Decimal  # BT-146
    gross_price: Decimal | None = None  # BT-148
    price_base_quantity: Decimal | None = None  # BT-149
    line_net_amount: Decimal  # BT-131
    allowances_charges: list[AllowanceCharge] = Field(default_factory=list)
    vat_category: str | None = None  # BT-151
    vat_rate: Decimal | None = None  # BT-152
    characteristics: list[Characteristic] = Field(default_factory=list)
    classifications: list[Classification] = Field(default_factory=list)
    origin_country: str | None = None
    order_line_ref: str | None = None
    period_start: dt.date | None = None
    period_end: dt.date | None = None


class TaxSubtotal(Record):
    category: str  # BT-118
    rate: Decimal | None = None  # BT-119
    basis: Decimal  # BT-116
    amount: Decimal  # BT-117
    exemption_reason: str | None = None
    exemption_reason_code: str | None = None


class PaymentTerms(Record):
    description: str | None = None  # BT-20
    due_date: dt.date | None = None  # BT-9
    discount_percent: Decimal | None = None  # Skonto
    discount_days: int | None = None
    net_days: int | None = None


class PaymentMeans(Record):
    code: str  # BT-81 (UNTDID 4461: 30 transfer, 58 SEPA transfer, 59 direct debit, ...)
    text: str | None = None
    iban: str | None = None
    bic: str | None = None
    mandate_ref: str | None = None


class DocumentTotals(Record):
    line_total: Decimal  # BT-106
    allowance_total: Decimal = Decimal("0")  # BT-107
    charge_total: Decimal = Decimal("0")  # BT-108
    tax_basis_total: Decimal  # BT-109
    tax_total: Decimal  # BT-110
    grand_total: Decimal  # BT-112
    prepaid: Decimal = Decimal("0")  # BT-113
    rounding: Decimal = Decimal("0")  # BT-114
    due_payable: Decimal  # BT-115


class PrecedingInvoice(Record):
    number: str  # BT-25
    date: dt.date | None = None  # BT-26


class Document(Record):
    """An EN 16931 invoice or credit note as read from a CII or UBL file."""

    syntax: Literal["CII", "UBL"]
    profile: str | None = None  # BT-24 specification identifier
    type_code: str  # BT-3: 380, 381, 384, 389, 751, ...
    number: str  # BT-1
    issue_date: dt.date  # BT-2
    currency: str  # BT-5
    tax_currency: str | None = None
    buyer_reference: str | None = None  # BT-10
    order_ref: str | None = None  # BT-13 purchase order reference
    sales_order_ref: str | None = None  # BT-14
    despatch_advice_ref: str | None = None  # BT-16
    contract_ref: str | None = None
    project_ref: str | None = None
    payment_reference: str | None = None  # BT-83 remittance information
    preceding_invoices: list[PrecedingInvoice] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    seller: Party
    buyer: Party
    ship_to: Party | None = None  # BG-13 deliver to
    delivery_date: dt.date | None = None  # BT-72
    payment_means: list[PaymentMeans] = Field(default_factory=list)
    payment_terms: PaymentTerms | None = None
    lines: list[DocumentLine] = Field(default_factory=list)
    allowances_charges: list[AllowanceCharge] = Field(default_factory=list)
    tax_subtotals: list[TaxSubtotal] = Field(default_factory=list)
    totals: DocumentTotals

    @property
    def is_credit_note(self) -> bool:
        return self.type_code in ("381", "261", "262", "296", "308", "396", "420", "458", "532")


# --------------------------------------------------------------------------------------------
# Sync records
# --------------------------------------------------------------------------------------------
class Customer(Record):
    """A BuchhaltungsButler debtor, or the buyer of a document, ready for the mapper."""

    source_key: str  # debtor postingaccount_number, or "doc:<receipt id>" for buyer-only
    number: str | None = None  # BB customer_number
    name: str
    is_company: bool = False
    contact_name: str | None = None
    email: str | None = None
    phone: str | None = None
    vat_id: str | None = None
    address: Address | None = None
    currency: str | None = None
    iban: str | None = None
    bic: str | None = None
    #: values resolved through value maps by the mapper (customer class, price class, ...)
    extra: dict[str, Any] = Field(default_factory=dict)


class OrderLine(Record):
    sku: str | None = None  # None: a service / free-text line -> fallback item
    gtin: str | None = None
    description: str
    quantity: Decimal
    unit_code: str | None = None
    unit_price: Decimal
    line_amount: Decimal
    vat_category: str | None = None
    vat_rate: Decimal | None = None
    #: "product", "service" (no seller id), "allowance", "charge" (document level), "fallback"
    kind: str = "product"
    source_line_id: str | None = None


class Order(Record):
    """An outgoing receipt of BuchhaltungsButler with what its document says."""

    source_key: str  # receipt id_by_customer
    receipt_type: str  # "invoice outbound", "credit outbound", ...
    document_kind: Literal["invoice", "credit_note", "corrected_invoice", "unsupported"]
    number: str  # invoice number
    date: dt.date
    due_date: dt.date | None = None
    currency: str = "EUR"
    amount: Decimal  # gross as in BB
    amount_paid: Decimal | None = None
    paid: bool = False
    counterparty: str | None = None
    payment_reference: str | None = None
    customer: Customer | None = None
    lines: list[OrderLine] = Field(default_factory=list)
    net_total: Decimal | None = None
    tax_total: Decimal | None = None
    gross_total: Decimal | None = None
    payment_means_code: str | None = None
    payment_terms_days: int | None = None
    preceding_invoice: str | None = None
    order_ref: str | None = None
    delivery_date: dt.date | None = None
    despatch_advice_ref: str | None = None
    ship_to: Party | None = None
    note: str | None = None


class Product(Record):
    """An item derived from document lines (newest invoice wins for price and texts)."""

    sku: str
    name: str
    description: str | None = None
    unit_code: str | None = None
    price: Decimal | None = None
    currency: str | None = None
    price_date: dt.date | None = None
    vat_category: str | None = None
    vat_rate: Decimal | None = None
    gtin: str | None = None
    characteristics: dict[str, str] = Field(default_factory=dict)
    classifications: list[Classification] = Field(default_factory=list)
    base_sku: str | None = None  # set for variants
    variant_attributes: dict[str, str] = Field(default_factory=dict)
    source_documents: list[str] = Field(default_factory=list)
