"""Generated source data for the benchmarks and the fault suite: debtors and outgoing receipts.

Everything is deterministic (seeded) and produced lazily, so 50 000 receipts never sit in
memory as files:

* :func:`debtors` yields BuchhaltungsButler debtor records (seed shape of
  :class:`~bbvisma.simulators.buchhaltungsbutler.BBSimulator`);
* :func:`receipts` yields outgoing receipt *list rows* (no file); the simulator asks
  :meth:`ReceiptFactory.file_bytes` for a receipt's e-invoice only when a client requests
  ``get_file`` (the ``file_loader`` hook of the simulator);
* :class:`ReceiptFactory` builds that e-invoice from a real reference sample used as a
  template (``einvoices/cii/CII_example1.xml``, EN 16931 CII): the number, the buyer, 1-20
  lines with SKUs from a product pool, VAT 19 % / 7 % (category S, mapped by the default
  value map), and totals recomputed the way EN 16931 computes them, so the reader accepts
  every document.

Why a template instead of hand-written XML: the reader is held to real documents; varying a
real one keeps every structure the reader meets in practice (contexts, namespaces, payment
means, terms) and changes only what must differ between documents.
"""

from __future__ import annotations

import copy
import datetime as dt
import random
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from functools import cached_property
from typing import Any

from lxml import etree

from bbvisma.reference import reference_dir

__all__ = [
    "DEBTOR_START",
    "FILE_PREFIX",
    "Product",
    "ReceiptFactory",
    "debtor_number",
    "debtors",
    "product_pool",
    "receipts",
]

TEMPLATE = "einvoices/cii/CII_example1.xml"
NS = {
    "rsm": "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100",
    "ram": "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100",
    "udt": "urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100",
}
RAM = "{" + NS["ram"] + "}"
#: receipts whose file is generated carry ``file = FILE_PREFIX + <id>`` (see the simulator hook)
FILE_PREFIX = "bench:"
#: first posting account number of generated debtors (SKR03/04 debtor range 10000-69999)
DEBTOR_START = 10001
CENT = Decimal("0.01")

_FIRST = (
    "Anna",
    "Ben",
    "Clara",
    "David",
    "Eva",
    "Felix",
    "Greta",
    "Hannes",
    "Ida",
    "Jonas",
    "Katrin",
    "Lukas",
    "Mia",
    "Noah",
    "Olga",
    "Paul",
    "Rita",
    "Sven",
    "Tina",
    "Uwe",
)
_LAST = (
    "Albers",
    "Becker",
    "Conrad",
    "Dietrich",
    "Engel",
    "Fischer",
    "Graf",
    "Hoffmann",
    "Jung",
    "Keller",
    "Lorenz",
    "Meyer",
    "Neumann",
    "Otto",
    "Peters",
    "Richter",
    "Schulz",
    "Vogel",
)
_TRADE = (
    "Bürobedarf",
    "Gastro",
    "Elektro",
    "Holzbau",
    "Feinkost",
    "Textil",
    "Metall",
    "Druck",
    "Garten",
    "Sanitär",
    "Logistik",
    "Medien",
)
_FORMS = ("GmbH", "GmbH & Co. KG", "AG", "KG", "e.K.", "OHG", "UG")
_CITIES = (
    ("10115", "Berlin"),
    ("20095", "Hamburg"),
    ("80331", "München"),
    ("50667", "Köln"),
    ("60311", "Frankfurt am Main"),
    ("70173", "Stuttgart"),
    ("04109", "Leipzig"),
    ("01067", "Dresden"),
    ("28195", "Bremen"),
    ("90402", "Nürnberg"),
)
_ABROAD = (("AT", "1010", "Wien"), ("Dänemark", "1050", "København"), ("NL", "1012", "Amsterdam"))
_PRODUCTS = (
    "Kugelschreiber",
    "Notizblock A5",
    "Kaffeebohnen 1 kg",
    "Druckerpapier A4",
    "LED-Lampe",
    "Kabeltrommel",
    "Arbeitshandschuhe",
    "Schraubensortiment",
    "Tischleuchte",
    "Thermobecher",
    "Ordner breit",
    "Akkuschrauber",
    "Gartenschere",
    "Tafelschokolade",
    "Mineralwasser 12x1 l",
)


def debtor_number(index: int) -> str:
    """The posting account number of the ``index``-th generated debtor (0-based)."""
    return str(DEBTOR_START + index)


def debtors(count: int, *, seed: int = 7) -> Iterator[dict[str, Any]]:
    """``count`` debtors: mostly German companies (legal form, contact person, VAT id), some
    persons, some abroad (one country as BuchhaltungsButler users type it: "Dänemark").
    Every debtor has its own e-mail address, so matching by e-mail is unambiguous."""
    rng = random.Random(seed)
    for index in range(count):
        number = debtor_number(index)
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        company = rng.random() < 0.7
        if rng.random() < 0.1:
            country, zip_code, city = rng.choice(_ABROAD)
        else:
            country, (zip_code, city) = "DE", rng.choice(_CITIES)
        record: dict[str, Any] = {
            "postingaccount_number": number,
            "customer_number": f"K{number}",
            "street": f"{rng.choice(_LAST)}straße {rng.randint(1, 180)}",
            "zip": zip_code,
            "city": city,
            "country": country,
            "email": f"rechnung.{number}@kunde{number}.de",
        }
        if company:
            record["name"] = f"{last} {rng.choice(_TRADE)} {rng.choice(_FORMS)} {number}"
            record["contact_person_name"] = f"{first} {last}"
            record["sales_tax_id"] = f"DE{100000000 + int(number) * 7919 % 899999999:09d}"
        else:
            record["name"] = f"{first} {last} {number}"
        yield record


@dataclass(frozen=True)
class Product:
    sku: str
    name: str
    price: Decimal
    rate: int  # VAT rate, category S
    unit: str


def product_pool(size: int, *, seed: int = 11) -> list[Product]:
    """``size`` products with SKUs ``BN000001``...; 19 % VAT mostly, 7 % for some."""
    rng = random.Random(seed)
    pool = []
    for index in range(size):
        base = rng.choice(_PRODUCTS)
        price = (Decimal(rng.randint(99, 49999)) / 100).quantize(CENT)
        pool.append(
            Product(
                sku=f"BN{index + 1:06d}",
                name=f"{base} {index + 1}",
                price=price,
                rate=7 if "kaffee" in base.lower() or "wasser" in base.lower() else 19,
                unit=rng.choice(("H87", "C62")),
            )
        )
    return pool


def _money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass
class _Plan:
    """What one generated document says (everything the receipt row needs too)."""

    number: str
    issue: dt.date
    debtor: dict[str, Any]
    lines: list[tuple[Product, int]]

    @cached_property
    def totals(self) -> tuple[Decimal, dict[int, tuple[Decimal, Decimal]], Decimal, Decimal]:
        """(line total, {rate: (basis, tax)}, tax total, grand total) as EN 16931 computes."""
        per_rate: dict[int, Decimal] = {}
        line_total = Decimal("0")
        for product, qty in self.lines:
            amount = _money(product.price * qty)
            line_total += amount
            per_rate[product.rate] = per_rate.get(product.rate, Decimal("0")) + amount
        breakdown = {rate: (basis, _money(basis * rate / 100)) for rate, basis in per_rate.items()}
        tax = sum((t for _b, t in breakdown.values()), Decimal("0"))
        return line_total, breakdown, tax, line_total + tax


class ReceiptFactory:
    """Outgoing receipts of ``debtor_count`` generated debtors over a pool of ``pool_size``
    products; receipt ``i`` (1-based) is fully determined by ``(seed, i)``.

    Receipt ``i``'s first line sells product ``(i - 1) % pool_size``, so ``count >=
    pool_size`` receipts sell every product of the pool at least once (the products flow then
    finds exactly ``pool_size`` SKUs); the other lines (0-19 more) pick products at random.
    """

    def __init__(self, debtor_count: int, pool_size: int, *, seed: int = 23):
        if debtor_count < 1 or pool_size < 1:
            raise ValueError("a receipt factory needs at least one debtor and one product")
        self.debtor_count = debtor_count
        self.pool = product_pool(pool_size)
        self.seed = seed
        self._debtors: list[dict[str, Any]] | None = None
        self._template: etree._Element | None = None
        self._line_template: etree._Element | None = None

    # -- the rows ---------------------------------------------------------------------------
    def debtor(self, index: int) -> dict[str, Any]:
        """The generated debtor ``index`` (0-based); the debtors are generated once."""
        if self._debtors is None:
            self._debtors = list(debtors(self.debtor_count))
        return self._debtors[index]

    def plan(self, receipt_id: int) -> _Plan:
        rng = random.Random(self.seed * 1_000_003 + receipt_id)
        debtor = self.debtor((receipt_id - 1) % self.debtor_count)
        first = self.pool[(receipt_id - 1) % len(self.pool)]
        lines = [(first, rng.randint(1, 5))]
        for _ in range(rng.randint(0, 19)):
            lines.append((rng.choice(self.pool), rng.randint(1, 12)))
        issue = dt.date(2025, 1, 1) + dt.timedelta(days=receipt_id % 150)
        return _Plan(f"RE-2025-{receipt_id:06d}", issue, debtor, lines)

    def row(self, receipt_id: int) -> dict[str, Any]:
        """The receipt as the simulator stores it (seed shape), without its file."""
        plan = self.plan(receipt_id)
        _lines, _breakdown, tax, grand = plan.totals
        return {
            "id_by_customer": str(receipt_id),
            "type": "invoice outbound",
            "date": plan.issue.isoformat(),
            "counterparty": plan.debtor["name"],
            "invoicenumber": plan.number,
            "amount": str(grand),
            "currency": "EUR",
            "vat": str(tax),
            "due_date": (plan.issue + dt.timedelta(days=30)).isoformat(),
            "date_delivery": plan.issue.isoformat(),
            "payment_reference": f"{plan.number} / {plan.debtor['postingaccount_number']}",
            "payment_date": None,
            "debtor": plan.debtor["postingaccount_number"],
            "e_invoice_type": 2,
            "file": f"{FILE_PREFIX}{receipt_id}",
            "filename": f"{plan.number}.xml",
            "date_uploaded": plan.issue.isoformat(),
            "modified": f"{plan.issue.isoformat()} 09:00:00",
        }

    # -- the file ---------------------------------------------------------------------------
    def file_bytes(self, receipt_id: int) -> bytes:
        """The receipt's e-invoice (CII XML), built on demand from the reference template."""
        plan = self.plan(receipt_id)
        root = copy.deepcopy(self._root())
        _set(root, "rsm:ExchangedDocument/ram:ID", plan.number)
        _set(
            root,
            "rsm:ExchangedDocument/ram:IssueDateTime/udt:DateTimeString",
            plan.issue.strftime("%Y%m%d"),
        )
        transaction = root.find("rsm:SupplyChainTradeTransaction", NS)
        agreement = transaction.find("ram:ApplicableHeaderTradeAgreement", NS)
        for position, (product, qty) in enumerate(plan.lines, start=1):
            agreement.addprevious(self._line(position, product, qty))
        self._buyer(agreement, plan.debtor)
        self._settlement(transaction, plan)
        return etree.tostring(root, xml_declaration=True, encoding="utf-8")

    def _root(self) -> etree._Element:
        if self._template is None:
            path = reference_dir() / TEMPLATE
            root = etree.parse(str(path)).getroot()
            document = root.find("rsm:ExchangedDocument", NS)
            for note in document.findall("ram:IncludedNote", NS):
                document.remove(note)
            transaction = root.find("rsm:SupplyChainTradeTransaction", NS)
            items = transaction.findall("ram:IncludedSupplyChainTradeLineItem", NS)
            self._line_template = copy.deepcopy(items[0])
            for item in items:
                transaction.remove(item)
            seller = transaction.find("ram:ApplicableHeaderTradeAgreement/ram:SellerTradeParty", NS)
            _set(seller, "ram:Name", "Bench Handel GmbH")
            _set(seller, "ram:PostalTradeAddress/ram:PostcodeCode", "10115")
            _set(seller, "ram:PostalTradeAddress/ram:LineOne", "Musterstraße 1")
            _set(seller, "ram:PostalTradeAddress/ram:CityName", "Berlin")
            _set(seller, "ram:PostalTradeAddress/ram:CountryID", "DE")
            _set(seller, "ram:SpecifiedTaxRegistration/ram:ID", "DE123456789")
            self._template = root
        return self._template

    def _line(self, position: int, product: Product, qty: int) -> etree._Element:
        line = copy.deepcopy(self._line_template)
        _set(line, "ram:AssociatedDocumentLineDocument/ram:LineID", str(position))
        _set(line, "ram:SpecifiedTradeProduct/ram:SellerAssignedID", product.sku)
        _set(line, "ram:SpecifiedTradeProduct/ram:Name", product.name)
        _set(
            line,
            "ram:SpecifiedLineTradeAgreement/ram:NetPriceProductTradePrice/ram:ChargeAmount",
            str(product.price),
        )
        quantity = line.find("ram:SpecifiedLineTradeDelivery/ram:BilledQuantity", NS)
        quantity.text = str(qty)
        quantity.set("unitCode", product.unit)
        tax = "ram:SpecifiedLineTradeSettlement/ram:ApplicableTradeTax/"
        _set(line, tax + "ram:CategoryCode", "S")
        _set(line, tax + "ram:RateApplicablePercent", str(product.rate))
        _set(
            line,
            "ram:SpecifiedLineTradeSettlement/ram:SpecifiedTradeSettlementLineMonetarySummation/"
            "ram:LineTotalAmount",
            str(_money(product.price * qty)),
        )
        return line

    @staticmethod
    def _buyer(agreement: etree._Element, debtor: dict[str, Any]) -> None:
        buyer = agreement.find("ram:BuyerTradeParty", NS)
        for child in list(buyer):
            buyer.remove(child)
        _add(buyer, "ID", debtor["postingaccount_number"])
        _add(buyer, "Name", debtor["name"])
        if debtor.get("contact_person_name"):
            contact = _add(buyer, "DefinedTradeContact")
            _add(contact, "PersonName", debtor["contact_person_name"])
        address = _add(buyer, "PostalTradeAddress")
        _add(address, "PostcodeCode", debtor["zip"])
        _add(address, "LineOne", debtor["street"])
        _add(address, "CityName", debtor["city"])
        country = debtor["country"] if len(debtor["country"]) == 2 else "DK"
        _add(address, "CountryID", country)
        uri = _add(buyer, "URIUniversalCommunication")
        _add(uri, "URIID", debtor["email"]).set("schemeID", "EM")
        if debtor.get("sales_tax_id"):
            _add(_add(buyer, "SpecifiedTaxRegistration"), "ID", debtor["sales_tax_id"]).set(
                "schemeID", "VA"
            )

    @staticmethod
    def _settlement(transaction: etree._Element, plan: _Plan) -> None:
        settlement = transaction.find("ram:ApplicableHeaderTradeSettlement", NS)
        line_total, breakdown, tax, grand = plan.totals
        reference = f"{plan.number} / {plan.debtor['postingaccount_number']}"
        _set(settlement, "ram:PaymentReference", reference)
        taxes = settlement.findall("ram:ApplicableTradeTax", NS)
        anchor = taxes[0]
        for rate, (basis, amount) in sorted(breakdown.items()):
            node = copy.deepcopy(anchor)
            _set(node, "ram:CalculatedAmount", str(amount))
            _set(node, "ram:BasisAmount", str(basis))
            _set(node, "ram:CategoryCode", "S")
            _set(node, "ram:RateApplicablePercent", str(rate))
            anchor.addprevious(node)
        for node in taxes:
            settlement.remove(node)
        due = plan.issue + dt.timedelta(days=30)
        _set(
            settlement,
            "ram:SpecifiedTradePaymentTerms/ram:DueDateDateTime/udt:DateTimeString",
            due.strftime("%Y%m%d"),
        )
        summation = "ram:SpecifiedTradeSettlementHeaderMonetarySummation/"
        _set(settlement, summation + "ram:LineTotalAmount", str(line_total))
        _set(settlement, summation + "ram:TaxBasisTotalAmount", str(line_total))
        _set(settlement, summation + "ram:TaxTotalAmount", str(tax))
        _set(settlement, summation + "ram:GrandTotalAmount", str(grand))
        _set(settlement, summation + "ram:DuePayableAmount", str(grand))


def receipts(factory: ReceiptFactory, count: int, *, start: int = 1) -> Iterator[dict[str, Any]]:
    """Receipt rows ``start .. start + count - 1``, one at a time."""
    for receipt_id in range(start, start + count):
        yield factory.row(receipt_id)


def _set(node: etree._Element, path: str, text: str) -> None:
    found = node.find(path, NS)
    if found is None:
        raise LookupError(f"template has no {path}")
    found.text = text


def _add(parent: etree._Element, tag: str, text: str | None = None) -> etree._Element:
    child = etree.SubElement(parent, RAM + tag)
    if text is not None:
        child.text = text
    return child
