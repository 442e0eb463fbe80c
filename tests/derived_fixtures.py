"""Helpers for the tests of the flows that derive from e-invoice lines (products, stock, prices,
shipments). Built on :mod:`flow_fixtures` (the shared rig: both simulators, both clients, a link
store and a document cache that survive between runs).

Documents: the default BuchhaltungsButler seed serves the reference e-invoices. Where a test
needs a document the references do not have (variants, a purchase of our SKUs, a newer price)
:func:`add_document` adds a receipt to the BB simulator and puts a parsed document -- a
reference document changed with ``model_copy`` -- into the shared document cache under that
receipt's fingerprint, exactly where :class:`~bbvisma.flows.documents.ReceiptDocuments` would
store it after a fetch. The flows then read it as they read any other receipt.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from flow_fixtures import Rig

from bbvisma.einvoice import read_path
from bbvisma.flows.defaults import default_mapping, default_value_maps
from bbvisma.flows.documents import receipt_fingerprint
from bbvisma.flows.products import ProductsFlow
from bbvisma.flows.stock import StockFlow
from bbvisma.records import Characteristic, Document, DocumentLine
from bbvisma.reference import reference_dir


def value_maps(**extra: dict[str, str]) -> dict[str, dict[str, str]]:
    """The default value maps (``defaults/value_maps.json``), plus/overridden by ``extra``."""
    maps = default_value_maps()
    maps.update(extra)
    return maps


def reference(relpath: str) -> Document:
    """A reference e-invoice, parsed (``"einvoices/ubl/ubl-21-en16931.xml"``)."""
    return read_path(reference_dir() / relpath)


def line(
    template: DocumentLine,
    *,
    sku: str | None,
    quantity: str | Decimal = "1",
    price: str | Decimal | None = None,
    name: str | None = None,
    characteristics: dict[str, str] | None = None,
    line_id: str | None = None,
    **changes: Any,
) -> DocumentLine:
    """A copy of a reference line with another SKU, quantity, price, name, characteristics."""
    update: dict[str, Any] = {"sku": sku, "quantity": Decimal(str(quantity)), **changes}
    if price is not None:
        update["net_price"] = Decimal(str(price))
        update["price_base_quantity"] = None
        update["line_net_amount"] = Decimal(str(price)) * Decimal(str(quantity))
    if name is not None:
        update["name"] = name
    if characteristics is not None:
        update["characteristics"] = [
            Characteristic(name=k, value=v) for k, v in characteristics.items()
        ]
    if line_id is not None:
        update["line_id"] = line_id
    return template.model_copy(update=update)


def document(
    template: Document,
    lines: list[DocumentLine],
    *,
    number: str,
    issue_date: dt.date,
    type_code: str = "380",
    currency: str = "EUR",
    **changes: Any,
) -> Document:
    """A copy of a reference document with other lines, number, date, type, currency."""
    numbered = [
        item.model_copy(update={"line_id": str(index)}) for index, item in enumerate(lines, 1)
    ]
    return template.model_copy(
        update={
            "lines": numbered,
            "number": number,
            "issue_date": issue_date,
            "type_code": type_code,
            "currency": currency,
            "allowances_charges": [],
            **changes,
        }
    )


def add_document(
    rig: Rig,
    doc: Document,
    *,
    direction: str = "outbound",
    counterparty: str | None = None,
    **fields: Any,
) -> str:
    """Add a receipt for ``doc`` to the BB simulator and put ``doc`` into the shared document
    cache under the receipt's fingerprint; returns the receipt id."""
    kind = "credit" if doc.is_credit_note else "invoice"
    receipt_type = f"{kind} {direction}"
    receipt_id = rig.bb_sim.add_receipt(
        rig.api_key,
        type=receipt_type,
        date=doc.issue_date.isoformat(),
        counterparty=counterparty or doc.buyer.name or doc.seller.name,
        invoicenumber=doc.number,
        amount=str(doc.totals.grand_total),
        currency=doc.currency,
        e_invoice_type=2,
        filename=f"{doc.number}.xml",
        **fields,
    )
    row = next(
        r for r in rig.bb.iter_receipts(list_direction=direction) if r.id_by_customer == receipt_id
    )
    detail = {
        "id_by_customer": receipt_id,
        "type": receipt_type,
        "currency": doc.currency,
        "e_invoice_type": 2,
        "filename": f"{doc.number}.xml",
    }
    entry = {"detail": detail, "document": doc.to_mapping_dict(), "refusal": None}
    rig.documents.put(receipt_id, receipt_fingerprint(row), entry)
    return receipt_id


def run_products(
    rig: Rig, *, settings: dict | None = None, maps: dict | None = None, batch_size: int = 50
):
    """One products run with the default mapping and value maps."""
    ctx = rig.context(
        mapping=default_mapping("products"),
        value_maps=maps if maps is not None else value_maps(),
        settings=settings,
        batch_size=batch_size,
    )
    flow = ProductsFlow(ctx)
    return flow, flow.run()


def run_stock(rig: Rig, *, maps: dict | None = None, **settings: Any):
    """One stock run (warehouse MAIN unless ``settings`` say otherwise): ``(flow, result)``."""
    settings.setdefault("warehouse_id_visma", "MAIN")
    flow = StockFlow(
        rig.context(
            mapping=default_mapping("stock"),
            value_maps=maps if maps is not None else value_maps(),
            settings=settings,
        )
    )
    report = flow.run()
    assert len(report.results) == 1  # one record per run and warehouse
    return flow, report.results[0]


def results_by_key(report) -> dict[str, Any]:
    return {r.source_key: r for r in report.results}


def file_fetches(rig: Rig) -> list[str]:
    """Receipt ids whose file BB served (``/receipts/get/<id>`` with ``get_file``)."""
    fetched = []
    for entry in rig.bb_sim.requests.entries:
        path = entry["path"]
        if "/receipts/get/" in path:
            fetched.append(path.rsplit("/", 1)[-1])
    return fetched


_SNAPSHOT: dict[str, tuple[str, dict]] | None = None


def warm_documents(rig: Rig) -> None:
    """Fill the rig's document cache with the default seed's parsed documents, as an
    integration that ran before holds them (parsed once per test session, not per test).
    Tests that count file fetches must not call this."""
    global _SNAPSHOT
    if _SNAPSHOT is None:
        from flow_fixtures import make_rig

        from bbvisma.flows.documents import ReceiptDocuments

        source = make_rig()
        docs = ReceiptDocuments(source.context())
        snapshot = {}
        for direction in ("outbound", "inbound"):
            for receipt in docs.iter_receipts(direction=direction, since=None):
                fingerprint = receipt_fingerprint(receipt)
                docs._entry(receipt)  # fetch and parse once
                snapshot[receipt.id_by_customer] = (
                    fingerprint,
                    source.documents.get(receipt.id_by_customer, fingerprint),
                )
        _SNAPSHOT = snapshot
    for receipt_id, (fingerprint, entry) in _SNAPSHOT.items():
        rig.documents.put(receipt_id, fingerprint, entry)
