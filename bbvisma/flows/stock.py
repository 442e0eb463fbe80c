"""Stock flow: quantities derived from e-invoices -> one Visma.net inventory adjustment.

BuchhaltungsButler knows no stock. It knows every purchase and sale: the quantities on the
lines of incoming and outgoing e-invoices. Per SKU the flow derives (see
:class:`~bbvisma.flows.derived.StockLedger`)::

    derived = opening balance (setting opening_balances)
            + incoming invoice quantities - incoming credit notes
            - outgoing invoice quantities + outgoing credit notes

Incoming lines carry the *supplier's* SKU; it is resolved to one of our items by, in this
order, the value map ``supplier_skus`` (supplier SKU -> our SKU), a Visma.net cross-reference
of type ``VPN`` (vendor part number) whose alternate id is the supplier SKU, or the line's
buyer item id (BT-156) when it names an existing item. Unresolved supplier SKUs are listed in
the record's source and message, never guessed.

Modes (setting ``stock_mode``):

* ``on_hand`` -- Visma.net's quantity on hand is set to the derived quantity;
* ``available_minus_reserved`` (default) -- on hand is set to ``derived - soBooked`` (sales
  reservations read from ``GET /v1/inventorysummary/{item}``), so what Visma.net shows on hand
  is what is free to sell;
* ``unmanaged`` -- no quantities are written; items that are stock items in Visma.net are
  flagged non-stock (``type = NonStockItem``), once.

Per run and warehouse (setting ``warehouse_id_visma``) the difference between target and
Visma.net's current on-hand quantity becomes **one** inventory adjustment with a line per SKU,
released at once; none when every SKU is already right. The record of a run is the warehouse
(entity ``stock``, source key = warehouse id), so the log shows the adjustment as one line with
its lines; the per-SKU derivation is in the record's source.

Idempotency and cost:

* a link per SKU and warehouse (entity ``stock_item``) holds the hash of its derived quantity
  (and mode): only SKUs whose derived quantity changed since their last write are read from
  Visma.net (one ``inventorysummary`` call each) and adjusted; the warehouse record's own hash
  covers every SKU's derived quantity, so a run where nothing changed costs no Visma.net call;
* before creating an adjustment the flow looks for one with the same deterministic
  ``externalReference`` (``BBSTOCK-<warehouse>-<sequence>-<hash>``: the sequence counts this
  warehouse's adjustments, the hash covers the lines) among recently modified adjustments: a
  create whose answer was lost is found and released instead of being sent twice.

Why a full derivation per run: a quantity is a sum over *all* documents. Receipts are listed
page by page and their documents come from the shared cache (:class:`~bbvisma.flows.
documents.ReceiptDocuments`): an unchanged receipt costs no file fetch. Memory is one small
position per SKU. Movements made in Visma.net itself (a confirmed shipment, a manual count) are
taken into account the next time the SKU's derived quantity changes (the adjustment is always
``target - current``); replaying the warehouse record checks every SKU again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from bbvisma.engine import Action, Flow, FlowContext, RecordResult, SourceItem
from bbvisma.errors import ConfigError, NotFound, OutcomeUnknown
from bbvisma.flows.derived import (
    DocumentStats,
    StockLedger,
    StockPosition,
    addressable,
    parse_quantity_map,
    read_documents,
)
from bbvisma.flows.documents import ReceiptDocuments
from bbvisma.flows.products import setting
from bbvisma.linkstore import Link, content_hash
from bbvisma.records import DocumentLine

__all__ = ["STOCK_MODES", "StockFlow"]

STOCK_MODES = ("on_hand", "available_minus_reserved", "unmanaged")
#: the per-SKU links (hash of the derived quantity)
ITEM_ENTITY = "stock_item"
ZERO = Decimal(0)


def _plain(value: Decimal | None) -> str | None:
    if value is None:
        return None
    text = format(Decimal(value).normalize(), "f")
    return "0" if text in ("-0", "0") else text


class StockFlow(Flow):
    """Derived stock -> one released inventory adjustment per run and warehouse."""

    entity = "stock"
    SETTINGS_DEFAULTS: dict[str, Any] = {
        "stock_mode": "available_minus_reserved",
        "warehouse_id_visma": None,
        "opening_balances": {},
        "base_currency": "EUR",
        #: how far back (days) the lookup-before-create searches adjustments
        "adjustment_lookup_days": 30,
        "branch": None,
    }

    def __init__(self, ctx: FlowContext):
        super().__init__(ctx)
        self.documents = ReceiptDocuments(ctx)
        self.stats_out = DocumentStats()
        self.stats_in = DocumentStats()
        #: inventory number -> whether it is a stock item, read once per run (None: not yet)
        self._items: dict[str, bool] | None = None
        self._vendor_refs: dict[str, str] = {}
        self._warehouse: str | None = None
        self._notes: dict[str, list[str]] = {}
        #: set during :meth:`replay`: every SKU is checked against Visma.net again
        self._force = False

    # -- settings -------------------------------------------------------------------------------
    def setting(self, key: str) -> Any:
        return setting(self.ctx, self.SETTINGS_DEFAULTS, key)

    @property
    def mode(self) -> str:
        mode = str(self.setting("stock_mode") or "").strip()
        if mode not in STOCK_MODES:
            raise ConfigError(f"stock_mode must be one of {', '.join(STOCK_MODES)}, not {mode!r}")
        return mode

    def warehouse(self) -> str:
        """The configured warehouse; without one, the only active warehouse of Visma.net."""
        if self._warehouse is None:
            configured = self.setting("warehouse_id_visma")
            if configured:
                self._warehouse = str(configured).strip()
            else:
                active = [
                    w.get("warehouseID")
                    for w in self.ctx.visma.list_warehouses()
                    if w.get("active", True)
                ]
                if len(active) != 1:
                    raise ConfigError(
                        "stock: set the Visma.net warehouse (warehouse_id_visma); the company "
                        f"has {len(active)} active warehouses ({', '.join(map(str, active))})"
                    )
                self._warehouse = str(active[0])
        return self._warehouse

    # -- Visma.net items (read once per run) ----------------------------------------------------
    def items(self) -> dict[str, bool]:
        """Every Visma.net item with its cross-references, ``GET /v1/inventory`` once per run
        (paged): which SKUs exist, which are stock items (the value), which vendor part numbers
        they have (:attr:`_vendor_refs`). Nothing else of an item is kept."""
        if self._items is None:
            items: dict[str, bool] = {}
            vendor: dict[str, str] = {}
            for item in self.ctx.visma.list_inventory(expand=["CrossReference"]):
                number = item.get("inventoryNumber")
                if not number:
                    continue
                items[number] = bool(item.get("stockItem"))
                for ref in item.get("crossReferences") or []:
                    if ref.get("alternateType") == "VPN" and ref.get("alternateID"):
                        vendor.setdefault(str(ref["alternateID"]).strip(), number)
            self._items, self._vendor_refs = items, vendor
        return self._items

    def resolve_supplier_sku(self, line: DocumentLine) -> str | None:
        """Our SKU for an incoming line (see the module docstring for the order)."""
        items = self.items()
        supplier_sku = (line.sku or "").strip()
        mapped = (self.ctx.value_maps.get("supplier_skus") or {}).get(supplier_sku)
        if supplier_sku and mapped:
            return str(mapped).strip()
        if supplier_sku and supplier_sku in self._vendor_refs:
            return self._vendor_refs[supplier_sku]
        buyer_id = (line.buyer_item_id or "").strip()
        if buyer_id and buyer_id in items:
            return buyer_id
        return None

    # -- source ---------------------------------------------------------------------------------
    def ledger(self) -> StockLedger:
        """Opening balances + every incoming and outgoing document, summed per SKU."""
        ledger = StockLedger(
            opening=parse_quantity_map(self.setting("opening_balances"), "opening_balances"),
            base_currency=self.setting("base_currency"),
        )
        if self.mode == "unmanaged":
            # nothing is written per quantity: the outgoing SKUs are what gets flagged
            for receipt, document in read_documents(self.documents, "outbound", self.stats_out):
                ledger.add_outgoing(receipt.id_by_customer, document, self.stats_out)
            return ledger
        for receipt, document in read_documents(self.documents, "inbound", self.stats_in):
            ledger.add_incoming(
                receipt.id_by_customer, document, self.resolve_supplier_sku, self.stats_in
            )
        for receipt, document in read_documents(self.documents, "outbound", self.stats_out):
            ledger.add_outgoing(receipt.id_by_customer, document, self.stats_out)
        return ledger

    def source_items(self, since: str | None) -> Iterator[SourceItem]:
        """One record: the configured warehouse with the derived stock of every SKU.
        ``since`` is not used (a quantity is a sum over all documents)."""
        warehouse = self.warehouse()
        yield SourceItem(warehouse, None, self.ledger(), label=f"stock of warehouse {warehouse}")

    def fetch_item(self, source_key: str) -> SourceItem:
        if source_key != self.warehouse():
            raise NotFound(
                f"stock is kept for warehouse {self.warehouse()!r}, not {source_key!r}",
                system="visma",
            )
        return SourceItem(source_key, None, self.ledger(), label=f"stock of warehouse {source_key}")

    def replay(self, source_keys) -> Any:
        """A replay re-checks every SKU against Visma.net (per-SKU hashes are ignored)."""
        self._force = True
        try:
            return super().replay(source_keys)
        finally:
            self._force = False

    # -- build ----------------------------------------------------------------------------------
    def _item_key(self, warehouse: str, sku: str) -> str:
        return f"{warehouse}:{sku}"

    def _item_hash(self, warehouse: str, sku: str, derived: Decimal) -> str:
        return content_hash(
            {"warehouse": warehouse, "sku": sku, "mode": self.mode, "derived": derived}
        )

    def build(self, item: SourceItem, link: Link | None) -> tuple[dict, dict]:
        ledger: StockLedger = item.data
        warehouse = item.key
        mode = self.mode
        notes = self._notes[item.key] = []
        items = self.items()
        managed: dict[str, StockPosition] = {}
        not_in_visma, non_stock, unaddressable = [], [], []
        for sku in sorted(ledger.positions):
            position = ledger.positions[sku]
            stock_item = items.get(sku)
            if not addressable(sku):
                unaddressable.append(sku)
            elif stock_item is None:
                not_in_visma.append(sku)
            elif not stock_item and mode != "unmanaged":
                non_stock.append(sku)
            else:
                managed[sku] = position
        source: dict[str, Any] = {
            "warehouse": warehouse,
            "mode": mode,
            "documents": {
                "outgoing": self.stats_out.as_dict(),
                "incoming": self.stats_in.as_dict(),
            },
            "positions": [p.as_dict() for p in managed.values()],
            "not_in_visma": not_in_visma,
            "non_stock_items": non_stock,
            "unaddressable": unaddressable,
            "unresolved_supplier_skus": {
                k: {"quantity": _plain(v["quantity"]), "receipts": v["receipts"]}
                for k, v in sorted(ledger.unresolved.items())
            },
        }
        if not_in_visma:
            notes.append(
                f"{len(not_in_visma)} SKU(s) not in Visma.net (run the products flow): "
                + _short(not_in_visma)
            )
        if unaddressable:
            notes.append(
                f"{len(unaddressable)} SKU(s) with '/' cannot be addressed in Visma.net: "
                + _short(unaddressable)
            )
        if ledger.unresolved:
            notes.append(
                f"{len(ledger.unresolved)} supplier SKU(s) match no item (add a VPN "
                "cross-reference or a supplier_skus entry): " + _short(sorted(ledger.unresolved))
            )
        derived = {sku: p.derived for sku, p in managed.items()}
        payload: dict[str, Any] = {
            "warehouse": warehouse,
            "mode": mode,
            "derived": {sku: _plain(q) for sku, q in derived.items()},
        }
        changed = self._changed(warehouse, derived)
        payload["checked_skus"] = changed
        if mode == "unmanaged":
            payload["flag_non_stock"] = [sku for sku in changed if items[sku]]
            payload["adjustment"] = None
            return source, payload
        checks = {}
        lines = []
        for sku in changed:
            on_hand, booked = self._current(sku, warehouse)
            target = derived[sku] - booked if mode == "available_minus_reserved" else derived[sku]
            difference = target - on_hand
            checks[sku] = {
                "on_hand": _plain(on_hand),
                "so_booked": _plain(booked),
                "target": _plain(target),
                "difference": _plain(difference),
            }
            if difference != ZERO:
                cost = managed[sku].unit_cost
                lines.append(
                    {
                        "sku": sku,
                        "warehouse": warehouse,
                        "quantity": _plain(difference),
                        # a receipt into stock is valued at the newest purchase price
                        "unit_cost": _plain(cost)
                        if difference > ZERO and cost is not None
                        else None,
                        "derived": _plain(derived[sku]),
                        "target": _plain(target),
                        "mode": mode,
                    }
                )
        source["checked"] = checks
        if lines:
            adjustment = self._adjustment(warehouse, lines, link)
            source["adjustment"] = adjustment
            payload["adjustment"] = self.map(adjustment, None)
        else:
            payload["adjustment"] = None
        return source, payload

    def _changed(self, warehouse: str, derived: dict[str, Decimal]) -> list[str]:
        """SKUs whose derived quantity differs from the one last written (all on a replay)."""
        if self._force:
            return sorted(derived)
        keys = [self._item_key(warehouse, sku) for sku in derived]
        links = self.ctx.links.get_many(ITEM_ENTITY, keys)
        changed = []
        for sku, quantity in derived.items():
            link = links.get(self._item_key(warehouse, sku))
            if link is None or link.content_hash != self._item_hash(warehouse, sku, quantity):
                changed.append(sku)
        return sorted(changed)

    def _current(self, sku: str, warehouse: str) -> tuple[Decimal, Decimal]:
        """(on hand, sales reservations) of one item in one warehouse."""
        rows = self.ctx.visma.get_inventory_summary(sku, warehouse=warehouse)
        for row in rows or []:
            if (row.get("warehouse") or {}).get("id") == warehouse:
                return Decimal(str(row.get("onHand") or 0)), Decimal(str(row.get("soBooked") or 0))
        return ZERO, ZERO

    def _adjustment(self, warehouse: str, lines: list[dict], link: Link | None) -> dict:
        """The canonical adjustment the mapping (``defaults/stock.json``) turns into an
        ``InventoryAdjustmentUpdateDto``; its external reference is deterministic."""
        sequence = int(((link.meta or {}).get("sequence") or 0) if link else 0) + 1
        digest = content_hash({"warehouse": warehouse, "lines": lines})[:10].upper()
        return {
            "external_reference": f"BBSTOCK-{warehouse}-{sequence:04d}-{digest}",
            "warehouse": warehouse,
            "mode": self.mode,
            "date": self.ctx.now().date().isoformat(),
            "branch": self.setting("branch"),
            "lines": lines,
        }

    def hash_payload(self, payload: dict) -> str:
        """The derived quantities (with mode and warehouse), not what Visma.net answered:
        nothing changed in BuchhaltungsButler -> nothing to do, without a call."""
        return content_hash(
            {
                "warehouse": payload["warehouse"],
                "mode": payload["mode"],
                "derived": payload["derived"],
            }
        )

    # -- write ----------------------------------------------------------------------------------
    def create(self, item: SourceItem, payload: dict) -> tuple[str, Any]:
        return item.key, self._write(item, payload)

    def update(self, item: SourceItem, payload: dict, link: Link) -> Any:
        return self._write(item, payload)

    def _write(self, item: SourceItem, payload: dict) -> dict[str, Any]:
        visma = self.ctx.visma
        warehouse = payload["warehouse"]
        response: dict[str, Any] = {"adjustment": None}
        if payload.get("flag_non_stock"):
            for sku in payload["flag_non_stock"]:
                visma.update_inventory(sku, {"type": "NonStockItem"})
            response["flagged_non_stock"] = list(payload["flag_non_stock"])
        body = payload.get("adjustment")
        if body:
            reference, created = self._ensure_adjustment(body)
            response.update(
                adjustment=reference, created=created, lines=len(body["adjustmentLines"])
            )
        self._store_item_links(warehouse, payload, response.get("adjustment"))
        return response

    def _ensure_adjustment(self, body: dict) -> tuple[str, bool]:
        """Find the adjustment by its external reference, else create it; release it."""
        visma = self.ctx.visma
        external = body["externalReference"]

        def find() -> dict | None:
            days = int(self.setting("adjustment_lookup_days") or 30)
            since = self.ctx.now() - dt.timedelta(days=days)
            for adjustment in visma.list_inventory_adjustments(modified_since=since):
                if adjustment.get("externalReference") == external:
                    return adjustment
            return None

        found = find()
        created = False
        if found is None:
            try:
                reference = visma.create_inventory_adjustment(body)
                created = True
            except OutcomeUnknown:
                found = find()
                if found is None:
                    reference = visma.create_inventory_adjustment(body)
                    created = True
        if found is not None:
            reference = str(found.get("referenceNumber"))
            if found.get("status") == "Released":
                return reference, False
        visma.release_inventory_adjustment(reference)
        return reference, created

    def _store_item_links(self, warehouse: str, payload: dict, adjustment: str | None) -> None:
        """Every SKU checked in this write now holds its derived quantity's hash."""
        for sku in payload.get("checked_skus") or []:
            key = self._item_key(warehouse, sku)
            digest = self._item_hash(warehouse, sku, Decimal(payload["derived"][sku]))
            # a cache of the quantity last brought into Visma.net: lost, it costs a read
            self.ctx.links.put(
                ITEM_ENTITY, key, sku, digest, {"adjustment": adjustment}, durable=False
            )

    def link_meta(self, item: SourceItem, payload: dict, response: Any) -> dict | None:
        old = self.link_for(item)
        sequence = int(((old.meta or {}).get("sequence") or 0) if old else 0)
        if (response or {}).get("created"):
            sequence += 1
        return {"sequence": sequence, "last_adjustment": (response or {}).get("adjustment")}

    def process(self, item: SourceItem) -> RecordResult:
        """The engine's handling, plus notes (SKUs not in Visma.net, unresolved supplier SKUs)
        and what was written, as the message of a successful result."""
        result = super().process(item)
        notes = self._notes.pop(item.key, [])
        if result.action in (Action.PARK, Action.ERROR):
            return result
        response = result.response or {}
        if response.get("adjustment"):
            notes.insert(
                0,
                f"adjustment {response['adjustment']} with {response.get('lines')} line(s) "
                + ("created and released" if response.get("created") else "found and released"),
            )
        elif result.action in (Action.CREATE, Action.UPDATE) and not response.get(
            "flagged_non_stock"
        ):
            notes.insert(0, "Visma.net already holds the derived quantities: no adjustment")
        if response.get("flagged_non_stock"):
            notes.insert(0, f"flagged non-stock: {_short(response['flagged_non_stock'])}")
        if notes:
            result.message = "; ".join(notes)
        return result


def _short(values: list[str], limit: int = 10) -> str:
    shown = ", ".join(values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")
