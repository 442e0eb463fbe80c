"""What the products, stock, prices and shipments flows derive from e-invoice lines.

BuchhaltungsButler has no product, stock, price or shipment endpoint (see the reference
README): everything these flows know comes from the lines of the e-invoices behind outgoing
receipts (our sales) and incoming receipts (our purchases). This module holds the pure
derivations they share -- no API call, no Visma.net knowledge -- so each rule is tested on
:class:`~bbvisma.records.Document` objects in milliseconds:

* :func:`read_documents` streams ``(receipt, document)`` pairs through
  :class:`~bbvisma.flows.documents.ReceiptDocuments` (each file is fetched at most once per
  change, whichever flow asks first) and *counts* what it cannot use instead of hiding it;
* :class:`ProductCatalog` keeps one small entry per SKU (newest document wins) and groups
  variants; memory is bounded by the number of SKUs, never by the number of documents;
* :class:`StockLedger` sums signed quantities per SKU (incoming invoices add, outgoing
  invoices subtract, credit notes reverse);
* :class:`PriceBook` keeps the newest price per (SKU, price class).

Conventions used by all of them:

* **Newest** means the greatest ``(issue date, receipt id)``: the receipt id breaks ties
  between documents of the same day deterministically.
* A line's **unit price** is ``net price / price base quantity`` (BT-146 / BT-149): a price
  "36109.00 per 100 LTR" is 361.09 per litre.
* A **credit note** (``Document.is_credit_note``) reverses what an invoice of the same
  direction does; every other document type with lines (380, 384 corrected invoice, 389
  self-billed invoice, ...) counts as an invoice with its signed quantities (a corrected
  invoice with -5 takes back 5).
* A line **without a seller-assigned id** is a service or free-text line (DESIGN.md): it is
  no product and moves no stock; it is counted, not invented into a SKU.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import sys
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

from bbvisma.buchhaltungsbutler.models import Receipt
from bbvisma.errors import ConfigError, UnsupportedDocument
from bbvisma.records import Classification, Document, DocumentLine, Product
from bbvisma.spill import SpillMap

__all__ = [
    "GTIN_SCHEMES",
    "MEMORY_SKUS",
    "addressable",
    "DocumentPrices",
    "DocumentStats",
    "PriceBook",
    "PricePoint",
    "ProductCatalog",
    "StockLedger",
    "StockPosition",
    "attribute_id",
    "document_key",
    "line_gtin",
    "line_unit_price",
    "parse_quantity_map",
    "read_documents",
    "sku_prices",
    "split_dimensions",
]

#: global id schemes (BT-157-1) that carry an EAN/GTIN. ISO/IEC 6523 0160 is GS1 GTIN; many
#: real samples (KoSIT, CEN examples, ZUGFeRD) write EANs with 0088 (EAN Location Code), so
#: both are read as a barcode on products.
GTIN_SCHEMES = frozenset({"0160", "0088"})

ZERO = Decimal(0)


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------
def document_key(document: Document, receipt_id: str) -> tuple[dt.date, int, str]:
    """Sort key of "newest": issue date, then receipt id (numeric where it is a number)."""
    number = int(receipt_id) if str(receipt_id).isdigit() else -1
    return (document.issue_date, number, str(receipt_id))


def line_unit_price(line: DocumentLine) -> Decimal:
    """Net price per one unit of the line's quantity (BT-146 divided by BT-149)."""
    base = line.price_base_quantity
    if base is not None and base > 0:
        return line.net_price / base
    return line.net_price


def line_gtin(line: DocumentLine) -> str | None:
    """The line's EAN/GTIN: BT-157 with scheme 0160, or a global id of scheme 0088."""
    if line.gtin:
        return line.gtin.strip() or None
    if line.global_id and (line.global_id_scheme or "") in GTIN_SCHEMES:
        return line.global_id.strip() or None
    return None


def sku_prices(document: Document) -> dict[str, Decimal]:
    """The unit price of each SKU on a document: its first line's, unless that line is free
    and a later line of the same SKU is not (a second line at 0.00 is goods given away, not
    the price; a first line at 0.00 followed by a priced one is the same)."""
    prices: dict[str, Decimal] = {}
    for line in document.lines:
        sku = (line.sku or "").strip()
        if not sku:
            continue
        price = line_unit_price(line)
        if sku not in prices or (prices[sku] == ZERO and price != ZERO):
            prices[sku] = price
    return prices


def addressable(sku: str) -> bool:
    """Whether Visma.net can address the item in a URL path (``/v1/inventory/{sku}``): an
    escaped ``/`` (``%2F``) is decoded before routing, so such an id can be created (POST body)
    but never read, updated or counted afterwards."""
    return "/" not in sku and "\\" not in sku


def split_dimensions(setting: str | Iterable[str] | None) -> frozenset[str]:
    """``"Farbe,Color,Größe,Size"`` -> the case-folded set of variant dimension names."""
    if setting is None:
        return frozenset()
    parts = setting.split(",") if isinstance(setting, str) else list(setting)
    return frozenset(p.strip().casefold() for p in parts if p and p.strip())


_NON_ID = re.compile(r"[^A-Z0-9]+")
_FOLD = str.maketrans({"Ä": "AE", "Ö": "OE", "Ü": "UE", "ß": "SS", "ẞ": "SS"})

#: Visma.net attribute ids are short codes; longer names are cut
ATTRIBUTE_ID_LENGTH = 10


def attribute_id(name: str, id_map: dict[str, str] | None = None) -> str:
    """The Visma.net attribute id for a characteristic name (BT-160).

    The value map (``attribute_ids``: name -> id, e.g. ``"Color": "FARBE"``) wins, matched
    exactly, then case-insensitively; otherwise the name in upper case, German umlauts spelt
    out, accents and anything but letters and digits removed, cut to 10 characters
    (``"Größe"`` -> ``"GROESSE"``). Raises ``ValueError`` for a name that leaves nothing.
    """
    if id_map:
        if name in id_map:
            return id_map[name]
        folded = name.casefold()
        for key, value in id_map.items():
            if key.casefold() == folded:
                return value
    text = name.upper().translate(_FOLD)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = _NON_ID.sub("", text)[:ATTRIBUTE_ID_LENGTH]
    if not text:
        raise ValueError(f"characteristic name {name!r} gives no usable attribute id")
    return text


def parse_quantity_map(value: Any, what: str) -> dict[str, Decimal]:
    """A ``{sku: quantity}`` setting (opening balances) as Decimals; ConfigError if broken."""
    if value in (None, "", False):
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{what} must be a mapping SKU -> quantity, not {type(value).__name__}")
    out: dict[str, Decimal] = {}
    for sku, quantity in value.items():
        try:
            number = Decimal(str(quantity).strip())
        except (InvalidOperation, ValueError):
            raise ConfigError(f"{what}: {quantity!r} for SKU {sku!r} is not a number") from None
        if not number.is_finite():
            raise ConfigError(f"{what}: {quantity!r} for SKU {sku!r} is not a number")
        out[str(sku).strip()] = number
    return out


# --------------------------------------------------------------------------------------------
# Reading documents
# --------------------------------------------------------------------------------------------
@dataclass
class DocumentStats:
    """What a derivation read, and what it could not use (so nothing is skipped silently)."""

    receipts: int = 0
    documents: int = 0
    #: receipts without an e-invoice (plain PDF): no lines to derive from
    without_einvoice: int = 0
    #: receipt id -> cause of a refused file (ZUGFeRD 1.0, MINIMUM profile, ...)
    refused: dict[str, str] = field(default_factory=dict)
    #: lines without a seller-assigned id (services, free text): no product, no stock
    lines_without_sku: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "receipts": self.receipts,
            "documents": self.documents,
            "without_einvoice": self.without_einvoice,
            "refused": dict(sorted(self.refused.items(), key=lambda kv: _id_order(kv[0]))),
            "lines_without_sku": self.lines_without_sku,
        }


def _id_order(receipt_id: str) -> tuple[int, str]:
    return (int(receipt_id) if receipt_id.isdigit() else -1, receipt_id)


def read_documents(
    documents: Any,
    direction: str,
    stats: DocumentStats,
    *,
    since: str | None = None,
    date_from: dt.date | str | None = None,
    date_to: dt.date | str | None = None,
) -> Iterator[tuple[Receipt, Document]]:
    """``(receipt, document)`` for every receipt of ``direction`` that has a readable
    e-invoice, page by page through ``documents`` (a
    :class:`~bbvisma.flows.documents.ReceiptDocuments`). Receipts without an e-invoice and
    refused files are counted in ``stats``; a refused file is the orders flow's to park, here
    it only cannot contribute lines."""
    for receipt in documents.iter_receipts(
        direction=direction, since=since, date_from=date_from, date_to=date_to
    ):
        stats.receipts += 1
        try:
            document = documents.document(receipt)
        except UnsupportedDocument as exc:
            stats.refused[receipt.id_by_customer] = exc.cause
            continue
        if document is None:
            stats.without_einvoice += 1
            continue
        stats.documents += 1
        yield receipt, document


# --------------------------------------------------------------------------------------------
# Products
# --------------------------------------------------------------------------------------------
class _SkuEntry:
    """What a catalog keeps per SKU while documents stream by: the values its product is built
    from and the keys that decide "newest" -- never the line or the document they came from
    (a validated line with its nested models costs some KiB; these slots a few hundred bytes).

    The keys are :func:`document_key` tuples ``(issue date, number, receipt id)``, shared by
    every SKU of one document; they also say which receipt (and, for the price, which date)
    a value comes from.
    """

    __slots__ = (
        "info_key",
        "name",
        "description",
        "unit_code",
        "vat_category",
        "vat_rate",
        "characteristics",
        "classifications",
        "gtin",
        "gtin_key",
        "price",
        "price_key",
        "foreign",
    )

    def __init__(self, key: tuple, line: DocumentLine, share: Callable[[Any], Any]):
        self.take_line(key, line, share)
        self.gtin: str | None = None
        self.gtin_key: tuple | None = None
        #: unit price of the newest invoice in the base currency
        self.price: Decimal | None = None
        self.price_key: tuple | None = None
        #: the newest price in another currency ``(key, currency, price)``: reported when the
        #: SKU has no base-currency price
        self.foreign: tuple[tuple, str, Decimal] | None = None

    def __getstate__(self) -> list:
        """What a spilled catalog writes to disk: the slots' values in order, with the keys'
        dates as ordinals and the Decimals as their exact text (``"19.00"`` stays ``"19.00"``):
        plain values pickle four times faster than dates and Decimals."""
        foreign = self.foreign
        return [
            _key_state(self.info_key),
            self.name,
            self.description,
            self.unit_code,
            self.vat_category,
            None if self.vat_rate is None else str(self.vat_rate),
            self.characteristics,
            self.classifications,
            self.gtin,
            _key_state(self.gtin_key),
            None if self.price is None else str(self.price),
            _key_state(self.price_key),
            None if foreign is None else (_key_state(foreign[0]), foreign[1], str(foreign[2])),
        ]

    def __setstate__(self, state: list) -> None:
        """The entry :meth:`__getstate__` wrote; units, VAT categories and rates shared again
        (the catalog's ``share`` is not at hand here: interned strings, cached Decimals)."""
        (
            info,
            self.name,
            self.description,
            unit,
            category,
            rate,
            self.characteristics,
            self.classifications,
            self.gtin,
            gtin_key,
            price,
            price_key,
            foreign,
        ) = state
        self.info_key = _state_key(info)
        self.unit_code = None if unit is None else sys.intern(unit)
        self.vat_category = None if category is None else sys.intern(category)
        self.vat_rate = None if rate is None else _shared_decimal(rate)
        self.gtin_key = _state_key(gtin_key)
        self.price = None if price is None else Decimal(price)
        self.price_key = _state_key(price_key)
        self.foreign = (
            None if foreign is None else (_state_key(foreign[0]), foreign[1], Decimal(foreign[2]))
        )

    def take_line(self, key: tuple, line: DocumentLine, share: Callable[[Any], Any]) -> None:
        """Texts, unit, VAT, characteristics (the first of each name) and classifications of
        the SKU's line on the newest document. ``share`` gives the values most SKUs have in
        common (unit, VAT) as one object each."""
        self.info_key = key
        self.name: str = line.name
        self.description: str | None = line.description
        self.unit_code: str | None = share(line.unit_code)
        self.vat_category: str | None = share(line.vat_category)
        self.vat_rate: Decimal | None = share(line.vat_rate)
        characteristics: dict[str, str] = {}
        for item in line.characteristics:
            characteristics.setdefault(item.name, item.value)
        self.characteristics: tuple[tuple[str, str], ...] = tuple(characteristics.items())
        self.classifications: tuple[Classification, ...] = tuple(line.classifications)


def _key_state(key: tuple | None) -> tuple | None:
    """A :func:`document_key` as plain values (the date as its ordinal)."""
    return None if key is None else (key[0].toordinal(), key[1], key[2])


def _state_key(state: tuple | None) -> tuple | None:
    return None if state is None else (dt.date.fromordinal(state[0]), state[1], state[2])


@functools.lru_cache(maxsize=64)
def _shared_decimal(text: str) -> Decimal:
    """One Decimal per VAT rate as written (Decimals are immutable: sharing is safe)."""
    return Decimal(text)


#: SKUs a :class:`ProductCatalog` keeps in memory (0.5-0.9 KiB each, so under 1 MiB); beyond
#: that the least recently used entries spill to a temporary database (:mod:`bbvisma.spill`).
#: A small tenant's catalog never touches the disk; for a large one the bound hardly matters
#: to speed (sales spread over the catalog miss an LRU front of 500 or of 5 000 alike: a
#: no-change products run over 10 000 SKUs took 0.29-0.34 ms CPU per SKU with any bound from
#: 500 to 5 000, 0.19-0.21 ms all in memory), so it is chosen by memory
MEMORY_SKUS = 1000


class ProductCatalog:
    """Products from outgoing e-invoice lines, one entry per SKU (newest document wins).

    * Texts, unit, VAT, characteristics and classifications come from the SKU's newest
      document (invoice or credit note); its first line with that SKU counts.
    * The price (``defaultPrice``) comes from the newest *invoice* in ``base_currency``: a
      credit note's price is no selling price, and a NOK price is no EUR price. A SKU sold
      only in other currencies gets no price (:meth:`notes_of` says so).
    * The GTIN comes from the newest document that carries one.

    Variants: SKUs whose base (the ``base_pattern`` regex's group named ``base``, else its
    first group) is the same, and whose characteristics differ only in the variant dimensions,
    become variants of that base: ``Product.base_sku`` is set and ``variant_attributes`` holds
    their dimension values. SKUs with a common base whose other characteristics differ are
    *not* grouped; :meth:`notes_of` says why.

    Memory: documents are folded in as they stream by (:meth:`add`) and never kept; what
    stays is one slim :class:`_SkuEntry` per SKU, in a :class:`~bbvisma.spill.SpillMap` that
    keeps at most ``memory_skus`` of them in memory and the rest in a temporary database, so
    the catalog's memory does not grow with the number of SKUs. The SKUs per variant base and
    the grouping's outcome per SKU live in spill maps too. :meth:`products` builds the
    :class:`~bbvisma.records.Product` records one at a time as the caller iterates, so a run
    holds the products of one batch, not of the whole catalog.
    """

    def __init__(
        self,
        *,
        base_currency: str = "EUR",
        variant_dimensions: Iterable[str] | str | None = None,
        base_pattern: str | None = None,
        memory_skus: int = MEMORY_SKUS,
    ):
        self.base_currency = (base_currency or "EUR").upper()
        self.dimensions = split_dimensions(variant_dimensions)
        self.pattern = _compile_base_pattern(base_pattern)
        self.memory_skus = memory_skus
        self._entries = SpillMap(memory_skus)
        #: base -> the SKUs that have it (only when variants are grouped at all)
        self._bases = SpillMap(memory_skus) if self.pattern and self.dimensions else None
        #: whether :attr:`_variants` reflects every document added
        self._grouped = False
        #: sku -> ``(base SKU, None)`` for a variant, ``(None, why not)`` for a SKU that shares
        #: a base with others but was not grouped; SKUs without a base have no entry
        self._variants = SpillMap(memory_skus)
        #: one object per distinct unit / VAT value (see :meth:`_share`)
        self._values: dict[tuple[type, str], Any] = {}

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def spilled(self) -> bool:
        """Whether the catalog outgrew ``memory_skus`` and entries went to disk."""
        return self._entries.spilled

    def close(self) -> None:
        """Free the temporary databases now instead of when the catalog is collected."""
        for spill in (self._entries, self._bases, self._variants):
            if spill is not None:
                spill.close()

    def add(self, receipt_id: str, document: Document, stats: DocumentStats | None = None) -> None:
        """Take what ``document`` (an outgoing invoice or credit note) says about its SKUs."""
        key = document_key(document, receipt_id)
        self._grouped = False
        seen: set[str] = set()
        for line in document.lines:
            sku = (line.sku or "").strip()
            if not sku:
                if stats is not None:
                    stats.lines_without_sku += 1
                continue
            entry = self._entries.get(sku)
            if entry is None:
                entry = _SkuEntry(key, line, self._share)
                self._entries.add(sku, entry)
                self._index_base(sku)
            elif sku not in seen and key > entry.info_key:
                entry.take_line(key, line, self._share)
            seen.add(sku)
            gtin = line_gtin(line)
            if gtin and (entry.gtin_key is None or key > entry.gtin_key):
                entry.gtin, entry.gtin_key = gtin, key
        if not document.is_credit_note:
            currency = (document.currency or "").upper()
            for sku, price in sku_prices(document).items():
                entry = self._entries.get(sku)
                if currency != self.base_currency:
                    if entry.foreign is None or key > entry.foreign[0]:
                        entry.foreign = (key, currency, price)
                elif entry.price_key is None or key > entry.price_key:
                    entry.price, entry.price_key = price, key
        # the document's entries are settled: only now may the least recently used spill
        self._entries.trim()

    def _index_base(self, sku: str) -> None:
        """Note a new SKU under its variant base (when it has one other than itself)."""
        if self._bases is None:
            return
        base = _base_of(self.pattern, sku)
        if not base or base == sku:
            return
        skus = self._bases.get(base)
        if skus is None:
            self._bases.add(base, [sku])
        else:
            skus.append(sku)
        self._bases.trim()

    def _share(self, value: Any) -> Any:
        """The first object seen equal to ``value`` *and written the same* (``19`` and
        ``19.00`` stay apart): thousands of SKUs then share one ``"C62"``, ``"S"`` and
        ``Decimal("19")`` instead of each holding its own copy read from its document."""
        if value is None:
            return None
        return self._values.setdefault((type(value), str(value)), value)

    def products(self) -> Iterator[Product]:
        """Every product, sorted by SKU, with variants grouped; each built when the caller
        asks for it (the catalog never holds them all)."""
        self._group_variants()
        for sku, entry in self._entries.items():
            yield self._product(sku, entry)

    def product(self, sku: str) -> Product | None:
        """The product of one SKU, or ``None`` when no document has it."""
        entry = self._entries.peek(sku)
        if entry is None:
            return None
        self._group_variants()
        return self._product(sku, entry)

    def notes_of(self, sku: str) -> list[str]:
        """What the log should say about the SKU: a price seen only in other currencies, a
        variant grouping refused."""
        entry = self._entries.peek(sku)
        if entry is None:
            return []
        self._group_variants()
        notes = []
        if entry.price is None and entry.foreign is not None:
            _key, currency, price = entry.foreign
            notes.append(
                f"sold only in {currency} (newest {_plain(price)} {currency}): no "
                f"{self.base_currency} price, defaultPrice left as it is"
            )
        _base_sku, refused = self._variants.peek(sku) or (None, None)
        if refused:
            notes.append(refused)
        return notes

    def _product(self, sku: str, entry: _SkuEntry) -> Product:
        sources = [entry.info_key[2]]
        if entry.price_key is not None and entry.price_key[2] not in sources:
            sources.append(entry.price_key[2])
        base_sku, _refused = self._variants.peek(sku) or (None, None)
        return Product(
            sku=sku,
            name=entry.name,
            description=entry.description,
            unit_code=entry.unit_code,
            price=entry.price,
            currency=self.base_currency if entry.price_key is not None else None,
            price_date=entry.price_key[0] if entry.price_key is not None else None,
            vat_category=entry.vat_category,
            vat_rate=entry.vat_rate,
            gtin=entry.gtin,
            characteristics=dict(entry.characteristics),
            classifications=list(entry.classifications),
            base_sku=base_sku,
            variant_attributes=self._variant_values(entry) if base_sku else {},
            source_documents=sources,
        )

    def _group_variants(self) -> None:
        """Decide for every base shared by two or more SKUs whether they are its variants;
        once per change of the catalog (documents added since the last grouping). The bases
        stream by in order and only one base's entries are read at a time."""
        if self._grouped:
            return
        self._grouped = True
        self._variants.close()
        self._variants = SpillMap(self.memory_skus)
        if self._bases is None:
            return
        for base, skus in self._bases.items():
            if len(skus) < 2:
                continue
            members = [self._entries.peek(sku) for sku in skus]
            signatures = {self._fixed_signature(entry) for entry in members}
            variant_values = [self._variant_values(entry) for entry in members]
            if len(signatures) > 1:
                self._note_not_grouped(
                    skus,
                    base,
                    "differ in characteristics other than the variant dimensions",
                )
            elif (
                not all(variant_values)
                or len({tuple(sorted(v.items())) for v in variant_values}) < 2
            ):
                self._note_not_grouped(skus, base, "do not differ in a variant dimension")
            else:
                for sku in skus:
                    self._variants.add(sku, (base, None))
            self._variants.trim()

    def _note_not_grouped(self, skus: list[str], base: str, why: str) -> None:
        """Tell each SKU sharing ``base`` why they were not grouped as variants of it."""
        names = ", ".join(sorted(skus))
        note = f"SKUs {names} share the base {base!r} but {why}: not grouped as variants"
        for sku in skus:
            self._variants.add(sku, (None, note))

    def _fixed_signature(self, entry: _SkuEntry) -> frozenset[tuple[str, str]]:
        return frozenset(
            (name.casefold(), value)
            for name, value in entry.characteristics
            if name.casefold() not in self.dimensions
        )

    def _variant_values(self, entry: _SkuEntry) -> dict[str, str]:
        return {
            name: value
            for name, value in entry.characteristics
            if name.casefold() in self.dimensions
        }


def _compile_base_pattern(pattern: str | None) -> re.Pattern | None:
    if not pattern:
        return None
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"variant_base_pattern {pattern!r} is not a valid regex: {exc}")
    if compiled.groups < 1:
        raise ConfigError(
            f"variant_base_pattern {pattern!r} needs a group (named 'base', or the first) "
            "that captures the base SKU"
        )
    return compiled


def _base_of(pattern: re.Pattern, sku: str) -> str | None:
    match = pattern.fullmatch(sku)
    if match is None:
        return None
    base = match.groupdict().get("base") if "base" in pattern.groupindex else match.group(1)
    return base or None


def _plain(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text


# --------------------------------------------------------------------------------------------
# Stock
# --------------------------------------------------------------------------------------------
@dataclass(slots=True)
class StockPosition:
    """The derived quantity of one SKU and where it comes from."""

    sku: str
    opening: Decimal = ZERO
    purchased: Decimal = ZERO  # incoming invoices
    returned_to_suppliers: Decimal = ZERO  # incoming credit notes
    sold: Decimal = ZERO  # outgoing invoices
    returned_by_customers: Decimal = ZERO  # outgoing credit notes
    #: newest purchase unit price in the base currency (the adjustment's unit cost)
    unit_cost: Decimal | None = None
    unit_cost_key: tuple | None = None

    @property
    def derived(self) -> Decimal:
        return (
            self.opening
            + self.purchased
            - self.returned_to_suppliers
            - self.sold
            + self.returned_by_customers
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "sku": self.sku,
            "opening": _plain(self.opening),
            "purchased": _plain(self.purchased),
            "returned_to_suppliers": _plain(self.returned_to_suppliers),
            "sold": _plain(self.sold),
            "returned_by_customers": _plain(self.returned_by_customers),
            "derived": _plain(self.derived),
        }


class StockLedger:
    """Signed quantities per SKU: opening + incoming invoices - incoming credit notes -
    outgoing invoices + outgoing credit notes.

    ``resolve_supplier_sku(line) -> our SKU | None`` maps an incoming line (whose
    seller-assigned id is the *supplier's* SKU) to one of our items; lines it cannot resolve
    are collected in :attr:`unresolved` (supplier SKU -> quantity and receipts) for the log.
    """

    def __init__(
        self,
        *,
        opening: dict[str, Decimal] | None = None,
        base_currency: str = "EUR",
    ):
        self.base_currency = (base_currency or "EUR").upper()
        self.positions: dict[str, StockPosition] = {}
        for sku, quantity in (opening or {}).items():
            self.position(sku).opening = quantity
        #: supplier SKU -> {"quantity": Decimal, "receipts": [ids]} (receipts capped at 5)
        self.unresolved: dict[str, dict[str, Any]] = {}

    def position(self, sku: str) -> StockPosition:
        position = self.positions.get(sku)
        if position is None:
            position = self.positions[sku] = StockPosition(sku)
        return position

    def add_outgoing(
        self, receipt_id: str, document: Document, stats: DocumentStats | None = None
    ) -> None:
        credit = document.is_credit_note
        for line in document.lines:
            sku = (line.sku or "").strip()
            if not sku:
                if stats is not None:
                    stats.lines_without_sku += 1
                continue
            position = self.position(sku)
            if credit:
                position.returned_by_customers += line.quantity
            else:
                position.sold += line.quantity

    def add_incoming(
        self,
        receipt_id: str,
        document: Document,
        resolve_supplier_sku: Callable[[DocumentLine], str | None],
        stats: DocumentStats | None = None,
    ) -> None:
        credit = document.is_credit_note
        key = document_key(document, receipt_id)
        for line in document.lines:
            supplier_sku = (line.sku or "").strip()
            if not supplier_sku and not (line.buyer_item_id or "").strip():
                if stats is not None:
                    stats.lines_without_sku += 1
                continue
            sku = resolve_supplier_sku(line)
            if sku is None:
                entry = self.unresolved.setdefault(
                    supplier_sku or f"buyer id {line.buyer_item_id}",
                    {"quantity": ZERO, "receipts": []},
                )
                entry["quantity"] += -line.quantity if credit else line.quantity
                if receipt_id not in entry["receipts"] and len(entry["receipts"]) < 5:
                    entry["receipts"].append(receipt_id)
                continue
            position = self.position(sku)
            if credit:
                position.returned_to_suppliers += line.quantity
                continue
            position.purchased += line.quantity
            if (document.currency or "").upper() == self.base_currency and (
                position.unit_cost_key is None or key > position.unit_cost_key
            ):
                position.unit_cost, position.unit_cost_key = line_unit_price(line), key


# --------------------------------------------------------------------------------------------
# Prices
# --------------------------------------------------------------------------------------------
@dataclass(slots=True)
class PricePoint:
    """The newest price one group paid for one SKU."""

    sku: str
    price_class: str | None
    price: Decimal
    currency: str
    date: dt.date
    receipt: str
    invoice: str
    key: tuple = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "sku": self.sku,
            "price_class": self.price_class,
            "price": _plain(self.price),
            "currency": self.currency,
            "date": self.date.isoformat(),
            "receipt": self.receipt,
            "invoice": self.invoice,
        }


class DocumentPrices(NamedTuple):
    """What the :class:`PriceBook` needs of one invoice: a few values instead of the whole
    document, so a flow can hold a chunk of them while it finds out who bought (the prices
    flow looks the buyers of 200 receipts up at once)."""

    #: :func:`document_key` (issue date and receipt id are in it)
    key: tuple
    currency: str
    number: str
    #: :func:`sku_prices`
    prices: dict[str, Decimal]

    @classmethod
    def of(cls, receipt_id: str, document: Document) -> DocumentPrices | None:
        """The prices of ``document``; ``None`` for a credit note (it sets no price)."""
        if document.is_credit_note:
            return None
        return cls(
            document_key(document, receipt_id),
            (document.currency or "").upper(),
            document.number,
            sku_prices(document),
        )


class PriceBook:
    """Newest unit price per (SKU, price class) from outgoing invoices (the price each group
    actually paid). Credit notes set no price. Every currency is kept: a class price is
    reported with its currency, never converted. The base price is the
    :class:`ProductCatalog`'s (newest invoice in the base currency), so the products and the
    prices flow agree on ``defaultPrice``."""

    def __init__(self) -> None:
        self.by_class: dict[tuple[str, str], PricePoint] = {}

    def add(self, receipt_id: str, document: Document, price_class: str | None) -> None:
        self.add_prices(DocumentPrices.of(receipt_id, document), price_class)

    def add_prices(self, prices: DocumentPrices | None, price_class: str | None) -> None:
        """Take the prices of one invoice (``None``: a credit note) paid by ``price_class``."""
        if prices is None or not price_class:
            return
        key = prices.key
        for sku, price in prices.prices.items():
            old = self.by_class.get((sku, price_class))
            if old is None or key > old.key:
                self.by_class[(sku, price_class)] = PricePoint(
                    sku, price_class, price, prices.currency, key[0], key[2], prices.number, key
                )
