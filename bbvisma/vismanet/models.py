"""Pydantic read models for the Visma.net answers the flows reason about.

The client returns plain dicts (read bodies are plain JSON, and most of a record is only passed
through). Where a flow *decides* something from an answer -- compare an invoice's totals with
the source, read stock per warehouse, find a shipment's tracking numbers -- it parses the dict
into one of these models: names from the OpenAPI document, amounts as ``Decimal``, unknown
fields ignored (Visma.net adds fields between versions).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class VismaModel(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class IdDescription(VismaModel):
    id: str | None = None
    description: str | None = None


class NumberName(VismaModel):
    number: str | None = None
    name: str | None = None


class Metadata(VismaModel):
    totalCount: int | None = None
    maxPageSize: int | None = None


# --------------------------------------------------------------------------------------------
class Customer(VismaModel):
    """``CustomerDto`` (the parts the customer flow compares)."""

    internalId: int | None = None
    number: str
    name: str | None = None
    status: str | None = None
    corporateId: str | None = None
    vatRegistrationId: str | None = None
    currencyId: str | None = None
    customerClass: IdDescription | None = None
    creditTerms: IdDescription | None = None
    priceClass: IdDescription | None = None
    defaultPaymentMethodId: str | None = None
    mainAddress: dict[str, Any] | None = None
    mainContact: dict[str, Any] | None = None
    lastModifiedDateTime: dt.datetime | None = None

    @property
    def email(self) -> str | None:
        return (self.mainContact or {}).get("email")


class CrossReference(VismaModel):
    alternateType: str | None = None
    alternateID: str | None = None
    description: str | None = None


class InventoryItem(VismaModel):
    """``InventoryDto``."""

    inventoryId: int | None = None
    inventoryNumber: str
    status: str | None = None
    type: str | None = None
    description: str | None = None
    itemClass: IdDescription | None = None
    vatCode: IdDescription | None = None
    defaultPrice: Decimal | None = None
    baseUnit: str | None = None
    stockItem: bool | None = None
    crossReferences: list[CrossReference] = Field(default_factory=list)
    attachments: list[dict[str, Any]] = Field(default_factory=list)
    attributes: list[dict[str, Any]] = Field(default_factory=list)
    lastModifiedDateTime: dt.datetime | None = None

    @property
    def barcodes(self) -> list[str]:
        return [
            ref.alternateID
            for ref in self.crossReferences
            if ref.alternateType == "Barcode" and ref.alternateID
        ]


class InventorySummary(VismaModel):
    """One row of ``/v1/inventorysummary/{inventoryNumber}`` (per warehouse)."""

    inventory: NumberName | dict[str, Any] | None = None
    warehouse: IdDescription | None = None
    available: Decimal = Decimal(0)
    availableForShipment: Decimal = Decimal(0)
    onHand: Decimal = Decimal(0)
    soBooked: Decimal = Decimal(0)
    soAllocated: Decimal = Decimal(0)
    soShipped: Decimal = Decimal(0)
    baseUnit: str | None = None


# --------------------------------------------------------------------------------------------
class TaxDetail(VismaModel):
    taxId: str | None = None
    vatRate: Decimal | None = None
    taxableAmount: Decimal | None = None
    vatAmount: Decimal | None = None


class DocumentLine(VismaModel):
    lineNumber: int | None = None
    inventoryNumber: str | None = None
    description: str | None = None
    quantity: Decimal | None = None
    unitPriceInCurrency: Decimal | None = None
    amountInCurrency: Decimal | None = None
    amount: Decimal | None = None
    vatCode: IdDescription | None = None


class CustomerDocument(VismaModel):
    """``CustomerInvoiceDto`` / ``CustomerCreditNoteDto``: what a flow checks after a create."""

    referenceNumber: str
    documentType: str | None = None
    status: str | None = None
    customer: NumberName | None = None
    currencyId: str | None = None
    externalReference: str | None = None
    customerRefNumber: str | None = None
    documentDate: dt.datetime | None = None
    documentDueDate: dt.datetime | None = None
    detailTotal: Decimal | None = None
    detailTotalInCurrency: Decimal | None = None
    vatTotal: Decimal | None = None
    vatTotalInCurrency: Decimal | None = None
    amount: Decimal | None = None
    amountInCurrency: Decimal | None = None
    balance: Decimal | None = None
    taxDetails: list[TaxDetail] = Field(default_factory=list)
    invoiceLines: list[DocumentLine] = Field(default_factory=list)
    lines: list[DocumentLine] = Field(default_factory=list)  # credit notes name them so
    lastModifiedDateTime: dt.datetime | None = None

    @property
    def total(self) -> Decimal | None:
        """Gross total in the document currency (what the source document's total is)."""
        return self.amountInCurrency if self.amountInCurrency is not None else self.amount

    @property
    def all_lines(self) -> list[DocumentLine]:
        return self.invoiceLines or self.lines


# --------------------------------------------------------------------------------------------
class SalesOrderLine(VismaModel):
    lineNbr: int | None = None
    inventory: NumberName | dict[str, Any] | None = None
    warehouse: IdDescription | None = None
    quantity: Decimal | None = None
    openQty: Decimal | None = None
    qtyOnShipments: Decimal | None = None
    unitPrice: Decimal | None = None


class SalesOrder(VismaModel):
    orderType: str | None = None
    orderNo: str
    status: str | None = None
    customer: NumberName | None = None
    customerRefNo: str | None = None
    orderTotal: Decimal | None = None
    taxTotal: Decimal | None = None
    lines: list[SalesOrderLine] = Field(default_factory=list)
    lastModifiedDateTime: dt.datetime | None = None


class PackageLine(VismaModel):
    lineNumber: int | None = None
    boxId: str | None = None
    trackingNumber: str | None = None
    confirmed: bool | None = None


class ShipmentLine(VismaModel):
    lineNumber: int | None = None
    orderNbr: str | None = None
    inventoryNumber: str | None = None
    shippedQty: Decimal | None = None
    orderedQty: Decimal | None = None


class Shipment(VismaModel):
    shipmentNumber: str
    status: str | None = None
    shipVia: IdDescription | None = None
    customer: NumberName | None = None
    shipmentDetailLines: list[ShipmentLine] = Field(default_factory=list)
    shipmentPackageLines: list[PackageLine] = Field(default_factory=list)
    lastModifiedDateTime: dt.datetime | None = None

    @property
    def tracking_numbers(self) -> list[str]:
        return [p.trackingNumber for p in self.shipmentPackageLines if p.trackingNumber]


class CreditTerm(VismaModel):
    termsId: str
    description: str | None = None
    dueDateType: str | None = None
    dueDay1: int | None = None
    discountDay: int | None = None
    discountPercent: Decimal | None = None
