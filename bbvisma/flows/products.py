"""Products flow: SKUs of outgoing e-invoice lines -> Visma.net inventory items.

BuchhaltungsButler has no product endpoint. What it holds are the e-invoices of our sales, and
their lines carry the seller-assigned id (the SKU), name, long description, unit, net price,
VAT, GTIN, characteristics and classification codes. This flow aggregates them per run into
one :class:`~bbvisma.records.Product` per SKU (:class:`~bbvisma.flows.derived.ProductCatalog`:
newest document wins, price from the newest invoice in the base currency) and creates or
updates the item whose ``inventoryNumber`` is the SKU.

Why a full aggregation per run instead of a delta: a product is a fold over *all* documents
that mention its SKU (the newest one wins). Receipts are listed page by page (500 per call)
and their documents come from the shared cache (:class:`~bbvisma.flows.documents.
ReceiptDocuments`), so an unchanged receipt costs no file fetch; the catalog keeps one small
entry per SKU, never the documents, and beyond a bound (``MEMORY_SKUS``) keeps the entries in a
temporary database instead of memory (:mod:`bbvisma.spill`). Unchanged products cost no
Visma.net call (link hash).

What the default mapping sends (``defaults/products.json``; rules are editable data):

* ``inventoryNumber`` <- SKU (BT-155), always;
* ``description`` <- item name (BT-153), create;
* ``body`` <- item description (BT-154), create;
* ``baseUnit`` / ``purchaseUnit`` <- unit (BT-130) via value map ``units``, create;
* ``salesUnit`` <- unit via value map ``units``, always;
* ``defaultPrice`` <- unit net price of the newest invoice in the base currency, always;
* ``vatCode`` <- VAT ``category:rate`` via value map ``vat_codes`` (shared with orders), create;
* ``itemClass`` / ``type`` <- unit -> value map ``product_kinds`` (goods/service) ->
  ``item_classes`` / ``item_types``, create;
* ``attributeLines`` <- characteristics (BT-160/161) and the variant base, always;
* ``_barcode`` <- GTIN (scheme 0160, or an EAN written with scheme 0088), always.

``update_product_info`` (setting): off (default) -> an update sends only the ``always`` rules
(price, sales unit, attributes, barcode), so a description or body a user completed in
Visma.net is never overwritten; on -> an update sends everything mapped (the create-mode
payload), and a change of any mapped field triggers an update. Keys starting with ``_`` are
instructions to this flow, never sent as item fields (``_barcode`` becomes a cross-reference
of type ``Barcode``).

Attributes: a characteristic's name becomes an attribute id (value map ``attribute_ids``, else
the name in capitals, e.g. ``Größe`` -> ``GROESSE``). Attribute definitions are read once per
run; a missing one is created (control type Text) before the item is written. For a Combo
attribute the value must be one of its values: value map ``attribute_values`` (key
``ATTRIBUTEID:value``) or a value id/description equal but for case; an unknown value is left
out with a note (never sent to be refused). Visma.net's API cannot attach an attribute to an
item class (item classes are read only), so attributes a tenant requires on a class must be set
up there.

Variants: SKUs with a common base (``variant_base_pattern``, group ``base`` or the first group)
whose characteristics differ only in ``variant_dimensions`` are variants of one product. Each
variant is its own item carrying its dimension attributes and the attribute
``variant_base_attribute`` (default ``BASESKU``, Text) whose value is the base SKU: the
Visma.net API offers no template/matrix field on items (``InventoryUpdateDto``), and an
attribute is filterable (``GET /v1/inventory?attributes=...``). The base itself is not created
as an item: no document sells it.

Sales categories: classification codes (BT-158) are looked up in value map
``sales_categories`` (key ``code`` or ``listId:code``) and checked against
``GET /v1/salescategory`` (read once per run). Visma.net's API can read categories but neither
create them nor assign them (``InventoryUpdateDto`` has no sales categories), so an unknown
category is reported in the record's message, never invented, and a known one is reported as
"assign in Visma.net".

Images: see :data:`IMAGES_NOTE`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from typing import Any, TypeVar

from bbvisma.engine import Action, Flow, FlowContext, RecordResult, SourceItem
from bbvisma.errors import ConfigError, DataError, NotFound, OutcomeUnknown
from bbvisma.flows.defaults import default_mapping
from bbvisma.flows.derived import (
    DocumentStats,
    ProductCatalog,
    addressable,
    attribute_id,
    read_documents,
)
from bbvisma.flows.documents import ReceiptDocuments
from bbvisma.linkstore import Link, content_hash
from bbvisma.records import Product

__all__ = ["IMAGES_NOTE", "ProductsFlow", "default_mapping", "setting"]

#: shown on the products flow form instead of an image setting
IMAGES_NOTE = (
    "BuchhaltungsButler holds no product images: its API has no product endpoint and e-invoice "
    "lines carry no pictures. Item images can only be added in Visma.net itself (the item's "
    "attachments); this flow uploads none."
)

T = TypeVar("T")

#: the attribute that links a variant to its base SKU (see the module docstring)
VARIANT_BASE_ATTRIBUTE = "BASESKU"


def setting(ctx: FlowContext, defaults: dict[str, Any], key: str) -> Any:
    """A flow setting: the context's value unless absent or ``None`` (Odoo's empty field)."""
    value = ctx.settings.get(key)
    return defaults.get(key) if value is None else value


def inventory_by_number(ctx: FlowContext, keep: Callable[[dict[str, Any]], T]) -> dict[str, T]:
    """``GET /v1/inventory`` (paged): ``keep(item)`` -- what a flow needs of an item -- for
    every item, by its inventory number (items without one are left out).

    Each item is slimmed as the pages stream by, so a run holds a value or two per item, never
    the list of full items (a tenant has tens of thousands). The flows that need it call it
    once per run and keep the answer.
    """
    items = ctx.visma.list_inventory()
    return {i["inventoryNumber"]: keep(i) for i in items if i.get("inventoryNumber")}


class ProductsFlow(Flow):
    """Outgoing e-invoice lines -> Visma.net inventory items (see the module docstring)."""

    entity = "product"
    SETTINGS_DEFAULTS: dict[str, Any] = {
        "update_product_info": False,
        "variant_dimensions": "Farbe,Color,Größe,Size",
        "variant_base_pattern": r"^(?P<base>[^-]+)-.+$",
        "variant_base_attribute": VARIANT_BASE_ATTRIBUTE,
        "base_currency": "EUR",
    }
    IMAGES_NOTE = IMAGES_NOTE

    def __init__(self, ctx: FlowContext):
        super().__init__(ctx)
        self.documents = ReceiptDocuments(ctx)
        self.stats = DocumentStats()
        self._catalog: ProductCatalog | None = None
        #: attribute id -> definition, read once per run (None: not read yet)
        self._attributes: dict[str, dict[str, Any]] | None = None
        #: category id -> description, read once per run (None: not read yet)
        self._categories: dict[int, str] | None = None
        #: notes of the record being handled, put into its result's message
        self._notes: dict[str, list[str]] = {}
        #: attribute id -> the characteristic name it came from (description of a new one)
        self._attribute_names: dict[str, str] = {}
        #: SKU -> the barcodes of its item, when a batch read the item list (all the lookup
        #: before a create needs of an item: that it exists, and which barcodes it has)
        self._index: dict[str, tuple[str, ...]] | None = None

    # -- settings -------------------------------------------------------------------------------
    def setting(self, key: str) -> Any:
        return setting(self.ctx, self.SETTINGS_DEFAULTS, key)

    @property
    def update_info(self) -> bool:
        return bool(self.setting("update_product_info"))

    # -- source ---------------------------------------------------------------------------------
    def catalog(self) -> ProductCatalog:
        """Every SKU of every outgoing document, folded once per flow instance (the documents
        stream by; the catalog keeps a slim entry per SKU -- at most ``MEMORY_SKUS`` of them in
        memory, the rest on disk -- and builds products on demand)."""
        if self._catalog is None:
            catalog = ProductCatalog(
                base_currency=self.setting("base_currency"),
                variant_dimensions=self.setting("variant_dimensions"),
                base_pattern=self.setting("variant_base_pattern"),
            )
            for receipt, document in read_documents(self.documents, "outbound", self.stats):
                catalog.add(receipt.id_by_customer, document, self.stats)
            self._catalog = catalog
            if self.stats.refused:
                self.ctx.logger.warning(
                    "products: %d receipt(s) with an unreadable e-invoice contribute no "
                    "products: %s",
                    len(self.stats.refused),
                    ", ".join(f"{k} ({v})" for k, v in self.stats.refused.items()),
                )
        return self._catalog

    def source_items(self, since: str | None) -> Iterator[SourceItem]:
        """One item per SKU, sorted by SKU. ``since`` is not used: see the module docstring."""
        for product in self.catalog().products():
            yield SourceItem(product.sku, None, product, label=product.name)

    def fetch_item(self, source_key: str) -> SourceItem:
        product = self.catalog().product(source_key)
        if product is None:
            raise NotFound(
                f"SKU {source_key!r} is on no outgoing e-invoice in BuchhaltungsButler (any more)",
                system="bb",
            )
        return SourceItem(source_key, None, product, label=product.name)

    # -- build ----------------------------------------------------------------------------------
    def build(self, item: SourceItem, link: Link | None) -> tuple[dict, dict]:
        product: Product = item.data
        if not addressable(product.sku):
            raise DataError(
                f"SKU {product.sku!r} contains '/': Visma.net could create the item but never "
                "read or update it again (its id is part of the URL path); give the product a "
                "SKU without '/' in the invoicing system",
                cause=f"unaddressable_sku:{product.sku}",
            )
        notes = self._notes[item.key] = self.catalog().notes_of(item.key)
        source = product.to_mapping_dict()
        source["vat"] = _vat_key(product)
        source["attribute_lines"] = self._attribute_lines(product, notes)
        categories = self._categories_of(product, notes)
        if categories:
            source["sales_categories"] = categories
        payload = self.map(source, link)
        return source, payload

    def map(self, source: dict, link: Link | None) -> dict:
        """Create mode for a new item, and for every item when ``update_product_info`` is on
        (an update then sends everything mapped); update mode otherwise."""
        if self.ctx.mapping is None:
            raise ConfigError(f"flow {self.entity!r} has no mapping")
        mode = "create" if self.update_info else self.mode_for(link)
        return self.ctx.mapping.apply(source, mode=mode, value_maps=self.ctx.value_maps)

    def hash_payload(self, payload: dict) -> str:
        """With ``update_product_info`` every mapped field counts (a new description is an
        update); without, only the fields an update sends (the engine's default)."""
        if self.update_info:
            return content_hash(payload)
        return super().hash_payload(payload)

    def _attribute_lines(self, product: Product, notes: list[str]) -> list[dict[str, str]]:
        """Characteristics (and the variant base) as ``attributeLines``; Combo values checked
        against the definitions read once per run."""
        id_map = self.ctx.value_maps.get("attribute_ids") or {}
        value_map = self.ctx.value_maps.get("attribute_values") or {}
        wanted: dict[str, tuple[str, str]] = {}
        for name, value in product.characteristics.items():
            try:
                attr = attribute_id(name, id_map)
            except ValueError as exc:
                notes.append(f"characteristic left out: {exc}")
                continue
            if attr in wanted:
                notes.append(
                    f"characteristics {wanted[attr][0]!r} and {name!r} both map to attribute "
                    f"{attr}: the first is kept"
                )
                continue
            wanted[attr] = (name, value)
            self._attribute_names.setdefault(attr, name)
        if product.base_sku:
            base_attr = str(self.setting("variant_base_attribute") or VARIANT_BASE_ATTRIBUTE)
            wanted[base_attr] = ("variant of", product.base_sku)
            self._attribute_names.setdefault(base_attr, "Variant of (base SKU)")
        if not wanted:
            return []
        definitions = self.attribute_definitions()
        lines = []
        for attr, (name, value) in wanted.items():
            definition = definitions.get(attr)
            resolved = _attribute_value(attr, value, definition, value_map)
            if resolved is None:
                allowed = ", ".join(
                    f"{d.get('valueId')}" for d in (definition or {}).get("details") or []
                )
                notes.append(
                    f"{name} {value!r} is not a value of the Combo attribute {attr} (allowed: "
                    f"{allowed}); left out -- map it in value map attribute_values as "
                    f"'{attr}:{value}'"
                )
                continue
            lines.append({"attributeId": attr, "attributeValue": resolved})
        return lines

    def attribute_definitions(self) -> dict[str, dict[str, Any]]:
        """``GET /v1/attribute``, once per run."""
        if self._attributes is None:
            self._attributes = {
                a["attributeID"]: a
                for a in self.ctx.visma.list_attributes()
                if a.get("attributeID")
            }
        return self._attributes

    def _categories_of(self, product: Product, notes: list[str]) -> list[int]:
        """Classification codes -> existing Visma.net sales categories (reported, never
        created or assigned: the API cannot do either)."""
        if not product.classifications:
            return []
        table = self.ctx.value_maps.get("sales_categories") or {}
        unmapped, unknown, found = [], [], []
        for item in product.classifications:
            qualified = f"{item.list_id}:{item.code}" if item.list_id else None
            target = table.get(qualified) if qualified else None
            if target is None:
                target = table.get(item.code)
            if target in (None, ""):
                unmapped.append(qualified or item.code)
                continue
            try:
                category = int(str(target).strip())
            except ValueError:
                unknown.append(f"{target} (from {qualified or item.code})")
                continue
            if category not in self.sales_categories():
                unknown.append(f"{category} (from {qualified or item.code})")
            elif category not in found:
                found.append(category)
        if unmapped:
            notes.append(
                "classification code(s) "
                + ", ".join(unmapped)
                + " map to no sales category (value map sales_categories)"
            )
        if unknown:
            notes.append(
                "sales categor(y/ies) "
                + ", ".join(unknown)
                + " do not exist in Visma.net; the API cannot create categories, so none was "
                "invented"
            )
        if found:
            names = ", ".join(f"{c} ({self.sales_categories()[c]})" for c in found)
            notes.append(
                f"sales categor(y/ies) {names}: Visma.net's API cannot assign categories to an "
                "item (InventoryUpdateDto has none); assign in Visma.net"
            )
        return found

    def sales_categories(self) -> dict[int, str]:
        """``GET /v1/salescategory`` (a tree), flattened, once per run."""
        if self._categories is None:
            flat: dict[int, str] = {}
            stack = list(self.ctx.visma.list_sales_categories() or [])
            while stack:
                node = stack.pop()
                if node.get("categoryID") is not None:
                    flat[int(node["categoryID"])] = node.get("description") or ""
                stack.extend(node.get("subCategories") or [])
            self._categories = flat
        return self._categories

    # -- write ----------------------------------------------------------------------------------
    def prepare_batch(self, items: list[SourceItem]) -> None:
        """A batch with many SKUs without a link reads the item list once (one call per page)
        instead of looking each SKU up: a new item then costs its POST alone."""
        super().prepare_batch(items)
        if self._index is None and self.index_pays_off(items):
            self._index = inventory_by_number(self.ctx, _barcodes)

    def create(self, item: SourceItem, payload: dict) -> tuple[str, Any]:
        """Lookup before create: an item with this ``inventoryNumber`` (created in Visma.net,
        or by the orders flow for a missing SKU) is updated instead -- with the update-mode
        fields only unless ``update_product_info`` is on -- never duplicated."""
        sku = item.key
        body, barcode = self._split(payload)
        self._ensure_attributes(body)
        visma = self.ctx.visma
        if self._index is not None:
            barcodes = self._index.get(sku)
        else:
            barcodes = _barcodes_of(visma.find_inventory(sku))
        created = False
        if barcodes is None:
            found: dict[str, Any] = {}

            def find() -> str | None:  # always live: the index may be older than the refusal
                found["item"] = visma.find_inventory(sku)
                return sku if found["item"] is not None else None

            def send() -> str:
                visma.create_inventory(body)
                return sku

            # a lost answer is resolved by looking again; an "already exists" refusal (created
            # since the lookup) is adopted and updated like an item found by the lookup
            _, how = self.create_or_adopt(find, send)
            created = how != "adopted"
            barcodes = _barcodes_of(found.get("item")) if how == "adopted" else None
        existed = barcodes is not None
        if existed:
            if not self.update_info and self.ctx.mapping is not None:
                body = self.ctx.mapping.comparable(body)
            visma.update_inventory(sku, body)
        added = self._add_barcode(sku, barcode, barcodes or ())
        return sku, {"created": created, "existed": existed, "barcode_added": added}

    def update(self, item: SourceItem, payload: dict, link: Link) -> Any:
        sku = link.target_key or item.key
        body, barcode = self._split(payload)
        self._ensure_attributes(body)
        self.ctx.visma.update_inventory(sku, body)
        added = None
        if barcode and barcode != (link.meta or {}).get("barcode"):
            refs = self.ctx.visma.list_cross_references(sku)
            existing = [r.get("alternateID") for r in refs if r.get("alternateType") == "Barcode"]
            added = self._add_barcode(sku, barcode, existing)
        return {"updated": True, "barcode_added": added}

    def link_meta(self, item: SourceItem, payload: dict, response: Any) -> dict | None:
        product: Product = item.data
        meta: dict[str, Any] = {"barcode": payload.get("_barcode")}
        if product.base_sku:
            meta["base_sku"] = product.base_sku
        return meta

    def process(self, item: SourceItem) -> RecordResult:
        """The engine's handling, plus the record's notes (variant grouping refused, sales
        categories, attribute values left out) as the message of a successful result."""
        result = super().process(item)
        notes = self._notes.pop(item.key, None)
        if notes and result.action not in (Action.PARK, Action.ERROR):
            result.message = "; ".join(notes)
        return result

    # -- helpers --------------------------------------------------------------------------------
    @staticmethod
    def _split(payload: dict) -> tuple[dict, str | None]:
        """The item body (keys not starting with ``_``) and the barcode instruction."""
        body = {k: v for k, v in payload.items() if not k.startswith("_")}
        barcode = payload.get("_barcode")
        return body, str(barcode).strip() if barcode not in (None, "") else None

    def _ensure_attributes(self, body: dict) -> None:
        """Create the definitions of attributes the item uses but Visma.net lacks (Text)."""
        lines = body.get("attributeLines") or []
        if not lines:
            return
        definitions = self.attribute_definitions()
        for line in lines:
            attr = line.get("attributeId")
            if not attr or attr in definitions:
                continue
            description = self._attribute_names.get(attr, attr)
            payload = {"attributeID": attr, "description": description, "controlType": "Text"}
            try:
                self.ctx.visma.create_attribute(payload)
            except OutcomeUnknown:
                if not self._attribute_exists(attr):
                    self.ctx.visma.create_attribute(payload)
            definitions[attr] = {**payload, "details": []}

    def _attribute_exists(self, attr: str) -> bool:
        try:
            self.ctx.visma.get_attribute(attr)
        except NotFound:
            return False
        return True

    def _add_barcode(self, sku: str, barcode: str | None, existing: Iterable) -> str | None:
        if not barcode or barcode in existing:
            return None
        self.ctx.visma.create_cross_reference(
            sku, {"alternateType": "Barcode", "alternateID": barcode}
        )
        return barcode


def _vat_key(product: Product) -> str | None:
    """``"S:19"``: VAT category and rate, the key of value map ``vat_codes`` (shared with the
    orders flow)."""
    if not product.vat_category:
        return None
    if product.vat_rate is None:
        return product.vat_category
    text = format(Decimal(product.vat_rate).normalize(), "f")
    return f"{product.vat_category}:{'0' if text in ('-0', '0') else text}"


def _attribute_value(
    attr: str, value: str, definition: dict | None, value_map: dict[str, str]
) -> str | None:
    """The value to send, or ``None`` when a Combo attribute has no such value."""
    mapped = value_map.get(f"{attr}:{value}")
    if mapped is not None:
        return mapped
    if definition is None or definition.get("controlType") not in ("Combo", "MultiSelectCombo"):
        return value
    details = [d for d in definition.get("details") or [] if not d.get("disabled")]
    if not details:
        return value
    folded = value.casefold()
    for detail in details:
        if str(detail.get("valueId", "")).casefold() == folded:
            return detail["valueId"]
        if str(detail.get("description", "")).casefold() == folded:
            return detail["valueId"]
    return None


def _barcodes(item: dict[str, Any]) -> tuple[str, ...]:
    """The item's barcodes (cross references of type ``Barcode``)."""
    return tuple(
        r.get("alternateID")
        for r in item.get("crossReferences") or []
        if r.get("alternateType") == "Barcode"
    )


def _barcodes_of(item: dict[str, Any] | None) -> tuple[str, ...] | None:
    """The barcodes of an item found by a lookup; ``None`` when there is no such item."""
    return None if item is None else _barcodes(item)
