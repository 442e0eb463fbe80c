"""Shipments flow: delivery data of e-invoices -> confirmed Visma.net shipments of sales orders.

BuchhaltungsButler has no shipments. An outgoing e-invoice says what was delivered (its lines),
when (delivery date BT-72, else the issue date), where (deliver-to party BG-13) and under which
despatch advice (BT-16). For every outgoing receipt the orders flow sent as a **sales order**
(its link of entity ``order`` with meta ``target == "sales_order"``, ``target_key`` = order
number, meta ``order_type``) this flow ships the order in Visma.net:

1. **Look up** (before any write): the order (``GET /v1/salesorder/{type}/{nbr}``) -- its open
   quantities decide what can be shipped, and its shipments: an open or confirmed shipment of
   the order that no other receipt's link claims is this receipt's own (a create or confirm
   whose answer was lost) and is adopted, never duplicated. A receipt without product lines
   (services only) or without an e-invoice has nothing physical to ship: a skip with that
   message, no call.
2. **Plan** the quantities: per SKU the invoice's quantity, spread over the order's lines of
   that SKU up to their open quantity. Partial delivery: lines of stock items the invoice does
   not cover are shipped with 0; a quantity the order cannot take (more invoiced than open, a
   SKU not on the order, lines in several warehouses) cannot be represented in one shipment of
   this order -- the record's message says exactly what was left out, and a receipt of which
   nothing is open parks (``nothing_to_ship``) before anything is created.
3. **Create** the shipment from the order (``POST /v1/salesorder/{nbr}/action/createShipment``,
   warehouse of the order lines, shipment date = delivery date).
4. **Update** it (``PUT /v1/shipment/{nbr}`` with ``If-Match``; on 412 the client re-reads and
   retries once): carrier ``shipVia`` (value map ``carriers`` -- a key found as a word in the
   document's notes or the deliver-to name -- else setting ``default_carrier``), shipment date,
   note, the planned ``shippedQty`` per line, and a package line with the tracking value (the
   despatch advice reference by default; Visma.net keeps tracking numbers on package lines,
   which need a box: setting ``package_box_id``).
5. **Confirm** it (``POST /v1/shipment/{nbr}/action/confirmShipment``).

Idempotent: the link (entity ``shipment``, key = receipt id, target = shipment number) makes a
second run skip without a call. A confirmed shipment is never changed: a receipt that changes
afterwards parks (``changed_after_shipment``) for a human.

Default mapping ``defaults/shipments.json``: canonical shipment (this module's
:meth:`ShipmentsFlow.canonical`) -> ``ShipmentUpdateDto`` fields; targets starting with ``_``
are instructions to the flow (``_tracking``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from bbvisma.buchhaltungsbutler.models import Receipt
from bbvisma.engine import Action, Flow, FlowContext, RecordResult, SourceItem
from bbvisma.errors import DataError, NotFound, OutcomeUnknown
from bbvisma.flows.documents import ReceiptDocuments
from bbvisma.flows.products import inventory_by_number, setting
from bbvisma.linkstore import Link
from bbvisma.records import Document

__all__ = ["ShipmentsFlow"]

ORDER_ENTITY = "order"
SALES_ORDER = "sales_order"
#: receipts looked up in the link store at once
LINK_CHUNK = 200
ZERO = Decimal(0)
#: cause of receipts with nothing physical to ship: reported as a skip, not parked
NOTHING_PHYSICAL = "nothing_physical"
STOCK_TYPES = frozenset({"FinishedGoodItem", "ComponentPartItem", "SubassemblyItem"})


def _dec(value: Any) -> Decimal:
    return Decimal(str(value)) if value not in (None, "") else ZERO


def _plain(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text


class ShipmentsFlow(Flow):
    """Receipts sent as sales orders -> shipped and confirmed in Visma.net."""

    entity = "shipment"
    SETTINGS_DEFAULTS: dict[str, Any] = {
        "default_carrier": None,
        #: box id of the package line that carries the tracking value (None: no package line)
        "package_box_id": None,
    }

    def __init__(self, ctx: FlowContext):
        super().__init__(ctx)
        self.documents = ReceiptDocuments(ctx)
        #: inventory number -> item type, read once per run (None: not read yet)
        self._items: dict[str, str | None] | None = None
        self._orders: dict[str, Link] = {}
        self._plans: dict[str, dict[str, Any]] = {}
        self._notes: dict[str, list[str]] = {}

    def setting(self, key: str) -> Any:
        return setting(self.ctx, self.SETTINGS_DEFAULTS, key)

    # -- source ---------------------------------------------------------------------------------
    def source_items(self, since: str | None) -> Iterator[SourceItem]:
        """Outgoing invoices whose order link says "sales order", page by page (the link store
        is asked once per chunk). ``since`` is not used: a receipt becomes shippable when the
        orders flow sends it, which may be long after the receipt last changed."""
        chunk: list[Receipt] = []
        for receipt in self.documents.iter_receipts(
            direction="outbound", since=None, types={"invoice outbound"}
        ):
            chunk.append(receipt)
            if len(chunk) >= LINK_CHUNK:
                yield from self._shippable(chunk)
                chunk = []
        yield from self._shippable(chunk)

    def _shippable(self, receipts: list[Receipt]) -> Iterator[SourceItem]:
        if not receipts:
            return
        links = self.ctx.links.get_many(ORDER_ENTITY, [r.id_by_customer for r in receipts])
        for receipt in receipts:
            link = links.get(receipt.id_by_customer)
            if (
                link is None
                or not link.target_key
                or (link.meta or {}).get("target") != SALES_ORDER
            ):
                continue
            self._orders[receipt.id_by_customer] = link
            yield SourceItem(
                receipt.id_by_customer, None, receipt, label=receipt.invoicenumber or ""
            )

    def fetch_item(self, source_key: str) -> SourceItem:
        link = self.ctx.links.get(ORDER_ENTITY, source_key)
        if link is None or (link.meta or {}).get("target") != SALES_ORDER:
            raise NotFound(
                f"receipt {source_key} was not sent to Visma.net as a sales order", system="bb"
            )
        for receipt in self.documents.iter_receipts(direction="outbound", since=None):
            if receipt.id_by_customer == source_key:
                self._orders[source_key] = link
                return SourceItem(source_key, None, receipt, label=receipt.invoicenumber or "")
        raise NotFound(f"receipt {source_key} is not in BuchhaltungsButler (any more)", system="bb")

    # -- build ----------------------------------------------------------------------------------
    def canonical(self, receipt: Receipt, document: Document, order: Link) -> dict[str, Any]:
        """What the mapping sees: order, delivery data, carrier and the invoiced quantities."""
        quantities: dict[str, Decimal] = {}
        for line in document.lines:
            sku = (line.sku or "").strip()
            if sku and line.quantity > 0:
                quantities[sku] = quantities.get(sku, ZERO) + line.quantity
        ship_to = document.ship_to
        return {
            "receipt": receipt.id_by_customer,
            "invoice_number": document.number,
            "order_number": order.target_key,
            "order_type": (order.meta or {}).get("order_type") or "SO",
            "delivery_date": (document.delivery_date or document.issue_date).isoformat(),
            "despatch_advice_ref": document.despatch_advice_ref,
            "carrier": self._carrier(document),
            "ship_to": ship_to.to_mapping_dict() if ship_to is not None else None,
            "quantities": {sku: _plain(q) for sku, q in sorted(quantities.items())},
        }

    def _carrier(self, document: Document) -> str | None:
        """A key of value map ``carriers`` named in the notes or the deliver-to name, else the
        setting ``default_carrier``."""
        table = self.ctx.value_maps.get("carriers") or {}
        texts = list(document.notes)
        if document.ship_to is not None and document.ship_to.name:
            texts.append(document.ship_to.name)
        for key, carrier in table.items():
            if key == "*" or not key.strip():
                continue
            pattern = re.compile(rf"(?<!\w){re.escape(key.strip())}(?!\w)", re.IGNORECASE)
            if any(pattern.search(text or "") for text in texts):
                return carrier
        default = self.setting("default_carrier")
        return str(default) if default else table.get("*")

    def build(self, item: SourceItem, link: Link | None) -> tuple[dict, dict]:
        receipt: Receipt = item.data
        order = self._orders.get(item.key) or self.ctx.links.get(ORDER_ENTITY, item.key)
        document = self.documents.document(receipt)  # UnsupportedDocument parks
        if document is None:
            raise DataError(
                f"receipt {item.key} has no e-invoice: nothing known to ship",
                cause=NOTHING_PHYSICAL,
            )
        source = self.canonical(receipt, document, order)
        if not source["quantities"]:
            raise DataError(
                f"invoice {document.number} has no product lines (services and free text "
                "only): nothing to ship",
                cause=NOTHING_PHYSICAL,
            )
        payload = self.map(source, link)
        payload["_quantities"] = source["quantities"]
        return source, payload

    # -- write ----------------------------------------------------------------------------------
    def create(self, item: SourceItem, payload: dict) -> tuple[str, Any]:
        visma = self.ctx.visma
        order_link = self._orders.get(item.key) or self.ctx.links.get(ORDER_ENTITY, item.key)
        order_number = str(order_link.target_key)
        order_type = (order_link.meta or {}).get("order_type") or "SO"
        order = visma.get_sales_order(order_number, order_type=order_type)
        notes = self._notes.setdefault(item.key, [])
        adopted = self._own_shipment(item.key, order)
        if adopted is not None:
            shipment, _etag = visma.get_shipment_with_etag(adopted)
            if shipment.get("status") == "Confirmed":
                notes.append(f"shipment {adopted} of order {order_number} found confirmed")
                return adopted, {"shipment": adopted, "adopted": True, "confirmed": True}
            notes.append(f"open shipment {adopted} of order {order_number} adopted")
            number = adopted
        else:
            plan = self._plan(order, payload["_quantities"], notes)
            try:
                number = visma.create_shipment(
                    order_number,
                    order_type=order_type,
                    shipment_date=payload.get("shipmentDate") or self.ctx.now().date(),
                    warehouse=plan["warehouse"],
                )
            except OutcomeUnknown:
                refreshed = visma.get_sales_order(order_number, order_type=order_type)
                number = self._own_shipment(item.key, refreshed)
                if number is None:
                    raise
        shipped = self._complete(number, order_number, payload, notes)
        visma.confirm_shipment(number)
        return number, {"shipment": number, "order": order_number, "shipped": shipped}

    def update(self, item: SourceItem, payload: dict, link: Link) -> Any:
        raise DataError(
            f"receipt {item.key} changed after shipment {link.target_key} was confirmed in "
            "Visma.net; a confirmed shipment is not changed by the sync -- correct it there",
            cause="changed_after_shipment",
        )

    def _own_shipment(self, receipt_id: str, order: dict[str, Any]) -> str | None:
        """A shipment of the order that no other receipt's link claims."""
        for entry in order.get("shipments") or []:
            number = entry.get("shipmentNo") or entry.get("shipmentNumber")
            if not number:
                continue
            owner = self.ctx.links.find_by_target(self.entity, str(number))
            if owner is None or owner.source_key == receipt_id:
                return str(number)
        return None

    def _plan(
        self, order: dict[str, Any], quantities: dict[str, str], notes: list[str]
    ) -> dict[str, Any]:
        """The warehouse to ship from; parks when nothing of the invoice is open or the lines
        are spread over several warehouses (one shipment cannot hold that split)."""
        open_by_sku: dict[str, Decimal] = {}
        warehouses: set[str] = set()
        for line in order.get("lines") or []:
            sku = str((line.get("inventory") or {}).get("number") or "")
            remaining = _dec(line.get("openQty")) - _dec(line.get("qtyOnShipments"))
            if sku in quantities and remaining > 0:
                open_by_sku[sku] = open_by_sku.get(sku, ZERO) + remaining
                warehouses.add(str((line.get("warehouse") or {}).get("id") or ""))
        if not open_by_sku:
            raise DataError(
                f"nothing the invoice delivers ({', '.join(quantities) or 'no SKU'}) is open on "
                f"order {order.get('orderNo')}",
                cause="nothing_to_ship",
            )
        if len(warehouses) > 1:
            raise DataError(
                f"the invoiced lines of order {order.get('orderNo')} are in several warehouses "
                f"({', '.join(sorted(warehouses))}): one shipment per receipt cannot represent "
                "that split -- ship it in Visma.net",
                cause="split_warehouses",
            )
        return {"warehouse": warehouses.pop()}

    def _complete(
        self, number: str, order_number: str, payload: dict, notes: list[str]
    ) -> dict[str, str]:
        """Set quantities, carrier, date, note and tracking on the (open) shipment."""
        visma = self.ctx.visma
        shipment, etag = visma.get_shipment_with_etag(number)
        wanted = {sku: Decimal(q) for sku, q in payload["_quantities"].items()}
        items = self.items()
        changes: list[dict[str, Any]] = []
        shipped: dict[str, Decimal] = {}
        for line in shipment.get("shipmentDetailLines") or []:
            sku = str(line.get("inventoryNumber") or "")
            current = _dec(line.get("shippedQty"))
            if sku in wanted:
                quantity = min(current, wanted[sku])
                wanted[sku] -= quantity
            elif items.get(sku) in STOCK_TYPES:
                quantity = ZERO  # a stock item the invoice does not deliver
                notes.append(f"{sku}: on the order but not on the invoice, not shipped")
            else:
                continue  # non-stock lines (charges, services) go as the order has them
            if quantity != current:
                changes.append(
                    {
                        "operation": "Update",
                        "lineNumber": line.get("lineNumber"),
                        "shippedQty": float(quantity),
                    }
                )
            if quantity > 0:
                shipped[sku] = shipped.get(sku, ZERO) + quantity
        for sku, rest in wanted.items():
            if rest > 0:
                notes.append(
                    f"{sku}: the invoice delivers {_plain(rest)} more than order {order_number} "
                    "has open -- this split cannot be represented on the order's shipment, "
                    "not shipped"
                )
        if not shipped:
            raise DataError(
                f"shipment {number}: nothing of the invoice can be shipped",
                cause="nothing_to_ship",
            )
        body = {k: v for k, v in payload.items() if not k.startswith("_")}
        if changes:
            body["shipmentDetailLines"] = changes
        tracking = payload.get("_tracking")
        box = self.setting("package_box_id")
        if tracking and box:
            existing = [p.get("trackingNumber") for p in shipment.get("shipmentPackageLines") or []]
            if tracking not in existing:
                body["shipmentPackageLines"] = [
                    {"operation": "Insert", "boxId": str(box), "trackingNumber": str(tracking)}
                ]
        elif tracking:
            notes.append(
                f"tracking value {tracking} not stored: Visma.net keeps tracking numbers on "
                "package lines, which need a box (setting package_box_id)"
            )
        visma.update_shipment(number, body, etag=etag)
        return {sku: _plain(q) for sku, q in shipped.items()}

    def items(self) -> dict[str, str | None]:
        """Item types (``GET /v1/inventory``, paged) once per run: which lines are stock."""
        if self._items is None:
            self._items = inventory_by_number(self.ctx, lambda item: item.get("type"))
        return self._items

    def link_meta(self, item: SourceItem, payload: dict, response: Any) -> dict | None:
        response = response or {}
        return {
            "order": response.get("order"),
            "shipped": response.get("shipped"),
            "tracking": payload.get("_tracking"),
        }

    def process(self, item: SourceItem) -> RecordResult:
        """The engine's handling plus what was left out or adopted, as the message."""
        result = super().process(item)
        notes = self._notes.pop(item.key, [])
        if result.action is Action.PARK and result.cause_key == f"data:{NOTHING_PHYSICAL}":
            result.action = Action.SKIP  # a service invoice needs no human
            return result
        if notes and result.action not in (Action.PARK, Action.ERROR):
            result.message = "; ".join(notes)
        elif notes and result.action is Action.PARK:
            result.message = f"{result.message} ({'; '.join(notes)})"
        return result
