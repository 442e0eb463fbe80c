"""Prices flow: the price each customer price class actually paid -> what Visma.net lets us write.

BuchhaltungsButler has no price lists. Its outgoing e-invoices say what every buyer paid for
every SKU. The customers flow puts customers into Visma.net price classes (value map
``price_classes``); the orders flow records, per receipt, the customer it was sent to (link of
entity ``order``, meta ``customer``). So the newest price per (SKU, price class) is known
(:class:`~bbvisma.flows.derived.PriceBook`).

What Visma.net's API allows to write (checked in the reference OpenAPI document):

* the item's **base price** -- ``defaultPrice`` of ``PUT /v1/inventory/{inventoryNumber}``
  (default mapping ``defaults/prices.json``): written when Visma.net's differs (the newest
  invoice price in the base currency, the same value the products flow sends, so the two flows
  never disagree);
* **group prices** -- none. ``/v1/customerSalesPrice`` is read only (GET), and the discount
  endpoints (``POST /v1/discount``, ``PUT /v1/discount/{code}/{series}``) take a
  ``DiscountUpdateDto`` without customer price classes or items (those lists exist only in the
  read-only ``DiscountDto``): a discount series cannot be bound to a price class and an item
  through the API. The customer's ``priceClassId`` only *assigns* a class.

So every (SKU, price class) record ends as **skip** with the message "Visma.net's API offers no
endpoint to write a sales price for price class X; base price written instead", followed by
what the class paid (price, currency, invoice, date) and what Visma.net's price list says for
it -- never pretending a write. The message is logged when the class price is new or changed
(the record keeps a link with the hash of the reported price; no call is made for it); a class
price equal to Visma.net's own price list entry is a quiet skip.

Check order per record (the seed's): **product exists** (item in Visma.net, one paged read per
run) -> **price class exists** (a class Visma.net knows: on a customer or in the sales price
list) -> write (base) or report the gap (class); otherwise the record parks with a precise
cause (``missing_item:<SKU>``, ``unknown_price_class:<class>``).

Why a full read per run: a newest price is a fold over all documents, and a customer may change
class in Visma.net; documents come from the shared cache (no file fetch for an unchanged
receipt), memory is one entry per (SKU, class).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from bbvisma.engine import Action, Flow, FlowContext, RecordResult, SourceItem
from bbvisma.errors import DataError, NotFound
from bbvisma.flows.derived import (
    DocumentPrices,
    DocumentStats,
    PriceBook,
    PricePoint,
    ProductCatalog,
    addressable,
    read_documents,
)
from bbvisma.flows.documents import ReceiptDocuments
from bbvisma.flows.products import inventory_by_number, setting
from bbvisma.linkstore import Link
from bbvisma.records import Product

__all__ = ["GAP_MESSAGE", "PricesFlow"]

#: the sentence every group-price record carries (format with ``price_class``)
GAP_MESSAGE = (
    "Visma.net's API offers no endpoint to write a sales price for price class "
    "{price_class}; base price written instead"
)
ORDER_ENTITY = "order"
#: receipts looked up in the link store at once (one query per chunk)
LINK_CHUNK = 200


def _plain(value: Decimal | float | None) -> str | None:
    if value is None:
        return None
    text = format(Decimal(str(value)).normalize(), "f")
    return "0" if text in ("-0", "0") else text


@dataclass
class PriceRecord:
    """One record of the flow: the base price of a SKU, or what one class paid for it."""

    sku: str
    price_class: str | None
    product: Product
    point: PricePoint | None = None

    @property
    def key(self) -> str:
        return self.sku if self.price_class is None else f"{self.sku}@{self.price_class}"


class PricesFlow(Flow):
    """Base prices written, group prices reported (see the module docstring)."""

    entity = "price"
    SETTINGS_DEFAULTS: dict[str, Any] = {"base_currency": "EUR"}

    def __init__(self, ctx: FlowContext):
        super().__init__(ctx)
        self.documents = ReceiptDocuments(ctx)
        self.stats = DocumentStats()
        #: receipts whose buyer's class is unknown: not sent by the orders flow / customer gone
        self.unclassified = {"not_sent_by_orders_flow": 0, "customer_not_in_visma": 0}
        #: the catalog of every SKU and the class prices per SKU (sorted by class), folded
        #: once per flow instance (None: not read yet)
        self._folded: tuple[ProductCatalog, dict[str, list[PricePoint]]] | None = None
        #: inventory number -> its defaultPrice, read once per run (None: not read yet)
        self._items: dict[str, Any] | None = None
        self._customers: dict[str, str | None] | None = None
        self._price_list: dict[tuple[str, str], dict[str, Any]] | None = None

    def setting(self, key: str) -> Any:
        return setting(self.ctx, self.SETTINGS_DEFAULTS, key)

    # -- Visma.net reads (once per run) ---------------------------------------------------------
    def items(self) -> dict[str, Any]:
        """``GET /v1/inventory`` (paged), once per run: which items exist, their price."""
        if self._items is None:
            self._items = inventory_by_number(self.ctx, lambda item: item.get("defaultPrice"))
        return self._items

    def customer_classes(self) -> dict[str, str | None]:
        """Customer number -> price class id, ``GET /v1/customer`` (paged) once per run."""
        if self._customers is None:
            self._customers = {
                str(c["number"]): ((c.get("priceClass") or {}).get("id") or None)
                for c in self.ctx.visma.list_customers()
                if c.get("number") is not None
            }
        return self._customers

    def price_list(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Visma.net's class prices (``GET /v1/customerSalesPrice``, read only), once per run:
        ``(item, class) -> newest entry``."""
        if self._price_list is None:
            table: dict[tuple[str, str], dict[str, Any]] = {}
            for entry in self.ctx.visma.list_customer_sales_prices(price_type="CustomerPriceClass"):
                key = (str(entry.get("inventoryId")), str(entry.get("priceCode")))
                old = table.get(key)
                if old is None or str(entry.get("effectiveDate") or "") >= str(
                    old.get("effectiveDate") or ""
                ):
                    table[key] = entry
            self._price_list = table
        return self._price_list

    def known_classes(self) -> set[str]:
        """Price classes Visma.net knows (it has no list of them): those on customers and in
        its sales price list."""
        classes = {c for c in self.customer_classes().values() if c}
        classes.update(code for _item, code in self.price_list())
        return classes

    # -- source ---------------------------------------------------------------------------------
    def folded(self) -> tuple[ProductCatalog, dict[str, list[PricePoint]]]:
        """Every outgoing document folded into the catalog (base prices) and the price book
        (class prices), once per flow instance. The documents stream by: each goes into the
        catalog at once, and only its prices wait in a chunk for the lookup of who bought."""
        if self._folded is None:
            catalog = ProductCatalog(base_currency=self.setting("base_currency"))
            book = PriceBook()
            chunk: list[tuple[str, DocumentPrices | None]] = []
            for receipt, document in read_documents(self.documents, "outbound", self.stats):
                catalog.add(receipt.id_by_customer, document, self.stats)
                chunk.append(
                    (receipt.id_by_customer, DocumentPrices.of(receipt.id_by_customer, document))
                )
                if len(chunk) >= LINK_CHUNK:
                    self._add_chunk(chunk, book)
                    chunk = []
            self._add_chunk(chunk, book)
            by_sku: dict[str, list[PricePoint]] = {}
            for (sku, _cls), point in book.by_class.items():
                by_sku.setdefault(sku, []).append(point)
            for points in by_sku.values():
                points.sort(key=lambda p: p.price_class)
            self._folded = (catalog, by_sku)
        return self._folded

    def records(self) -> Iterator[PriceRecord]:
        """Per SKU (sorted) its base record, then one record per price class that bought it
        (sorted by class); each built when the run asks for it."""
        catalog, by_sku = self.folded()
        for product in catalog.products():
            yield PriceRecord(product.sku, None, product)
            for point in by_sku.get(product.sku, ()):
                yield PriceRecord(product.sku, point.price_class, product, point)

    def record(self, key: str) -> PriceRecord | None:
        """The record of one :attr:`PriceRecord.key` (``SKU`` or ``SKU@class``), or ``None``."""
        catalog, by_sku = self.folded()
        product = catalog.product(key)
        if product is not None:
            return PriceRecord(key, None, product)
        sku, _, price_class = key.rpartition("@")
        for point in by_sku.get(sku, ()):
            if point.price_class == price_class:
                product = catalog.product(sku)
                return PriceRecord(sku, price_class, product, point) if product else None
        return None

    def _add_chunk(self, chunk: list[tuple[str, DocumentPrices | None]], book: PriceBook) -> None:
        if not chunk:
            return
        links = self.ctx.links.get_many(ORDER_ENTITY, [receipt_id for receipt_id, _p in chunk])
        classes = self.customer_classes() if links else {}
        for receipt_id, prices in chunk:
            link = links.get(receipt_id)
            customer = (link.meta or {}).get("customer") if link is not None else None
            if not customer:
                self.unclassified["not_sent_by_orders_flow"] += 1
                continue
            if str(customer) not in classes:
                self.unclassified["customer_not_in_visma"] += 1
                continue
            book.add_prices(prices, classes[str(customer)])

    def source_items(self, since: str | None) -> Iterator[SourceItem]:
        """Per SKU its base record, then one record per price class that bought it.
        ``since`` is not used (see the module docstring)."""
        self.folded()
        if any(self.unclassified.values()):
            self.ctx.logger.info(
                "prices: receipts without a known price class (only in base prices): %s",
                self.unclassified,
            )
        for record in self.records():
            yield SourceItem(record.key, None, record, label=record.product.name)

    def fetch_item(self, source_key: str) -> SourceItem:
        record = self.record(source_key)
        if record is None:
            raise NotFound(f"no price record {source_key!r} in the e-invoices", system="bb")
        return SourceItem(source_key, None, record, label=record.product.name)

    # -- build ----------------------------------------------------------------------------------
    def build(self, item: SourceItem, link: Link | None) -> tuple[dict, dict]:
        record: PriceRecord = item.data
        product = record.product
        source: dict[str, Any] = {
            "sku": record.sku,
            "price_class": record.price_class,
            "base_price": _plain(product.price),
            "base_currency": product.currency,
            "base_price_date": product.price_date.isoformat() if product.price_date else None,
        }
        if record.point is not None:
            source["paid"] = record.point.as_dict()
        # 1. product exists
        if not addressable(record.sku) or record.sku not in self.items():
            raise DataError(
                f"item {record.sku!r} does not exist in Visma.net (run the products flow "
                "first): no price can be written for it",
                cause=f"missing_item:{record.sku}",
            )
        # 2. price class exists
        if record.price_class is not None and record.price_class not in self.known_classes():
            raise DataError(
                f"price class {record.price_class!r} does not exist in Visma.net",
                cause=f"unknown_price_class:{record.price_class}",
            )
        if record.price_class is None:
            return source, self.map(source, link)
        point = record.point
        assert point is not None
        listed = self.price_list().get((record.sku, record.price_class))
        source["visma_price_list"] = (
            {"price": _plain(listed.get("price")), "currency": listed.get("currency")}
            if listed
            else None
        )
        payload = {
            "inventoryNumber": record.sku,
            "priceClass": record.price_class,
            "price": float(point.price),
            "currency": point.currency,
        }
        return source, payload

    # -- write ----------------------------------------------------------------------------------
    def create(self, item: SourceItem, payload: dict) -> tuple[str, Any]:
        return item.data.sku, self._write(item, payload)

    def update(self, item: SourceItem, payload: dict, link: Link) -> Any:
        return self._write(item, payload)

    def _write(self, item: SourceItem, payload: dict) -> dict[str, Any]:
        record: PriceRecord = item.data
        if record.price_class is not None:
            return {"written": False, "gap": True}  # nothing to write: see process()
        current = self.items()[record.sku]
        wanted = payload.get("defaultPrice")
        if wanted is None or (
            current is not None and Decimal(str(current)) == Decimal(str(wanted))
        ):
            return {"written": False, "defaultPrice": current}
        self.ctx.visma.update_inventory(record.sku, payload)
        self.items()[record.sku] = wanted
        return {"written": True, "defaultPrice": wanted, "was": current}

    def process(self, item: SourceItem) -> RecordResult:
        """The engine's handling; a class record that was "written" (its link now holds the
        reported price) is a skip with the gap message, a base record says what it did."""
        result = super().process(item)
        record: PriceRecord = item.data
        if result.action in (Action.PARK, Action.ERROR):
            return result
        product = record.product
        base = f"{_plain(product.price)} {product.currency}" if product.price is not None else "-"
        if record.price_class is None:
            response = result.response or {}
            if product.price is None:
                result.message = (
                    f"no invoice in {self.setting('base_currency')} (only credit notes or "
                    "other currencies): no base price, Visma.net's is left as it is"
                )
            elif result.action is Action.SKIP:
                result.message = f"base price {base} unchanged"
            elif response.get("written"):
                result.message = f"base price {base} written (was {_plain(response.get('was'))})"
            else:
                result.message = f"base price {base} already in Visma.net"
            if response.get("written") is False:
                result.action = Action.SKIP  # nothing was written: no pretending
            return result
        point = record.point
        assert point is not None
        listed = self.price_list().get((record.sku, record.price_class))
        if (
            listed is not None
            and str(listed.get("currency") or "").upper() == point.currency
            and Decimal(str(listed.get("price"))) == point.price
        ):
            result.action = Action.SKIP
            result.message = (
                f"price class {record.price_class} paid {_plain(point.price)} {point.currency}, "
                "as Visma.net's price list says"
            )
            return result
        if result.action is Action.SKIP and not self.ctx.dry_run:
            result.message = f"price class {record.price_class}: reported before, unchanged"
            return result
        listed_text = (
            f"Visma.net's price list says {_plain(listed.get('price'))} {listed.get('currency')}"
            if listed
            else "Visma.net's price list has no entry"
        )
        result.action = Action.SKIP
        result.message = (
            GAP_MESSAGE.format(price_class=record.price_class)
            + f" (item {record.sku}: price class {record.price_class} paid "
            f"{_plain(point.price)} {point.currency} on invoice {point.invoice} of "
            f"{point.date.isoformat()} (receipt {point.receipt}); base price {base}; "
            f"{listed_text})"
        )
        return result
