"""Build ``bb_default.json``, the default BuchhaltungsButler simulator seed (run once, by hand).

    python3 bbvisma/simulators/seed/build_bb_default.py

Why a script: every outgoing receipt of the seed stands for one real reference e-invoice
(``<reference>/einvoices``), and its amount, counterparty, number and dates must be the
document's own. Reading them here, once, keeps the simulator free of XML parsing at runtime
(it only serves the file bytes) and keeps the numbers reviewable in the JSON. The test suite
re-reads the documents and checks the seed still matches them.

The script is deterministic: same reference files, same JSON.
"""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from pathlib import Path

from lxml import etree

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from bbvisma.reference import reference_dir  # noqa: E402

#: fixed "last modified" base of the seed (Europe/Berlin wall time), one minute per receipt
MODIFIED_BASE = "2025-05-{day:02d} {hour:02d}:{minute:02d}:00"


def _first(node, xpath: str) -> str | None:
    found = node.xpath(xpath)
    for item in found:
        text = item if isinstance(item, str) else item.text
        if text and text.strip():
            return " ".join(text.split())
    return None


def _ln(*names: str) -> str:
    """``//*[local-name()='A']/*[local-name()='B']`` -- namespace-agnostic (CII D16B and 1.0)."""
    return "".join(f"/*[local-name()='{n}']" for n in names)


def _cii_date(text: str | None) -> str | None:
    if not text:
        return None
    text = text.strip()
    if len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text[:10]


def read_document(path: Path) -> dict:
    """The facts the seed needs from one e-invoice (CII, UBL, or a PDF with embedded CII)."""
    data = path.read_bytes()
    if path.suffix.lower() == ".pdf":
        import facturx

        _name, xml = facturx.get_xml_from_pdf(data, check_xsd=False)
        e_invoice_type = 1
    else:
        xml = data
        e_invoice_type = 2
    root = etree.fromstring(xml)
    kind = etree.QName(root).localname
    if kind in ("Invoice", "CreditNote"):
        return _read_ubl(root, kind) | {"e_invoice_type": e_invoice_type}
    return _read_cii(root) | {"e_invoice_type": e_invoice_type}


def _read_cii(root) -> dict:
    buyer = root.xpath("//*[local-name()='BuyerTradeParty']")[0]
    header = "//*[local-name()='ExchangedDocument' or local-name()='HeaderExchangedDocument']"
    email = _first(
        buyer, ".//*[local-name()='URIUniversalCommunication']/*[local-name()='URIID']"
    ) or _first(buyer, ".//*[local-name()='EmailURIUniversalCommunication']/*")
    vat_id = None
    for reg in buyer.xpath(".//*[local-name()='SpecifiedTaxRegistration']/*[local-name()='ID']"):
        if reg.get("schemeID") == "VA":
            vat_id = reg.text.strip()
    rates = root.xpath(
        "//*[local-name()='ApplicableHeaderTradeSettlement' or "
        "local-name()='ApplicableSupplyChainTradeSettlement']"
        "/*[local-name()='ApplicableTradeTax']/*[local-name()='RateApplicablePercent' or "
        "local-name()='ApplicablePercent']"
    )
    return {
        "type_code": _first(root, header + _ln("TypeCode")),
        "invoicenumber": _first(root, header + _ln("ID")),
        "date": _cii_date(_first(root, header + _ln("IssueDateTime", "DateTimeString"))),
        "due_date": _cii_date(
            _first(root, "//*[local-name()='DueDateDateTime']/*[local-name()='DateTimeString']")
        ),
        "date_delivery": _cii_date(
            _first(
                root,
                "//*[local-name()='ActualDeliverySupplyChainEvent']"
                "/*[local-name()='OccurrenceDateTime']/*[local-name()='DateTimeString']",
            )
        ),
        "currency": _first(root, "//*[local-name()='InvoiceCurrencyCode']") or "EUR",
        "amount": _first(root, "//*[local-name()='GrandTotalAmount']"),
        "payment_reference": _first(root, "//*[local-name()='PaymentReference']"),
        "vat": rates[0].text.strip() if rates else None,
        "buyer": {
            "name": _first(buyer, "./*[local-name()='Name']"),
            "customer_number": _first(buyer, "./*[local-name()='ID']"),
            "contact_person_name": _first(
                buyer, "./*[local-name()='DefinedTradeContact']/*[local-name()='PersonName']"
            ),
            "street": _first(
                buyer, ".//*[local-name()='PostalTradeAddress']/*[local-name()='LineOne']"
            ),
            "additional_address_line": _first(
                buyer, ".//*[local-name()='PostalTradeAddress']/*[local-name()='LineTwo']"
            ),
            "zip": _first(
                buyer, ".//*[local-name()='PostalTradeAddress']/*[local-name()='PostcodeCode']"
            ),
            "city": _first(
                buyer, ".//*[local-name()='PostalTradeAddress']/*[local-name()='CityName']"
            ),
            "country": _first(
                buyer, ".//*[local-name()='PostalTradeAddress']/*[local-name()='CountryID']"
            ),
            "email": email if email and "@" in email else None,
            "sales_tax_id": vat_id,
        },
    }


def _read_ubl(root, kind: str) -> dict:
    party = root.xpath("./*[local-name()='AccountingCustomerParty']/*[local-name()='Party']")[0]
    vat_id = None
    for scheme in party.xpath("./*[local-name()='PartyTaxScheme']"):
        if _first(scheme, "./*[local-name()='TaxScheme']/*[local-name()='ID']") == "VAT":
            vat_id = _first(scheme, "./*[local-name()='CompanyID']")
    email = _first(party, "./*[local-name()='Contact']/*[local-name()='ElectronicMail']")
    if not email:
        endpoint = party.xpath("./*[local-name()='EndpointID']")
        if endpoint and endpoint[0].get("schemeID") == "EM":
            email = endpoint[0].text.strip()
    addr = "./*[local-name()='PostalAddress']/*[local-name()='{}']"
    type_tag = "InvoiceTypeCode" if kind == "Invoice" else "CreditNoteTypeCode"
    rates = root.xpath(
        "./*[local-name()='TaxTotal']/*[local-name()='TaxSubtotal']/*[local-name()='TaxCategory']"
        "/*[local-name()='Percent']"
    )
    return {
        "type_code": _first(root, f"./*[local-name()='{type_tag}']"),
        "invoicenumber": _first(root, "./*[local-name()='ID']"),
        "date": _first(root, "./*[local-name()='IssueDate']"),
        "due_date": _first(root, "./*[local-name()='DueDate']")
        or _first(root, "./*[local-name()='PaymentMeans']/*[local-name()='PaymentDueDate']"),
        "date_delivery": _first(
            root, "./*[local-name()='Delivery']/*[local-name()='ActualDeliveryDate']"
        ),
        "currency": _first(root, "./*[local-name()='DocumentCurrencyCode']") or "EUR",
        "amount": _first(
            root, "./*[local-name()='LegalMonetaryTotal']/*[local-name()='TaxInclusiveAmount']"
        ),
        "payment_reference": _first(
            root, "./*[local-name()='PaymentMeans']/*[local-name()='PaymentID']"
        ),
        "vat": rates[0].text.strip() if rates else None,
        "buyer": {
            "name": _first(party, "./*[local-name()='PartyName']/*[local-name()='Name']")
            or _first(
                party, "./*[local-name()='PartyLegalEntity']/*[local-name()='RegistrationName']"
            ),
            "customer_number": _first(
                party, "./*[local-name()='PartyIdentification']/*[local-name()='ID']"
            ),
            "contact_person_name": _first(
                party, "./*[local-name()='Contact']/*[local-name()='Name']"
            ),
            "street": _first(party, addr.format("StreetName")),
            "additional_address_line": _first(party, addr.format("AdditionalStreetName")),
            "zip": _first(party, addr.format("PostalZone")),
            "city": _first(party, addr.format("CityName")),
            "country": _first(
                party,
                "./*[local-name()='PostalAddress']/*[local-name()='Country']"
                "/*[local-name()='IdentificationCode']",
            ),
            "email": email,
            "sales_tax_id": vat_id,
        },
    }


def _money(text: str | None) -> str:
    return str(Decimal(text).quantize(Decimal("0.01")))


#: debtors that are not buyers of a reference document: persons and companies in DE/AT/FR/NO/DK
EXTRA_DEBTORS = [
    {
        "name": "Anna Schmidt",
        "street": "Lindenstraße 12",
        "zip": "10115",
        "city": "Berlin",
        "country": "DE",
        "email": "anna.schmidt@example.de",
    },
    {
        "name": "Huber Bau GmbH",
        "contact_person_name": "Josef Huber",
        "street": "Mariahilfer Straße 4",
        "zip": "1070",
        "city": "Wien",
        "country": "AT",
        "sales_tax_id": "ATU12345678",
        "email": "office@huber-bau.example.at",
        "iban": "AT611904300234573201",
        "bic": "BKAUATWW",
    },
    {
        "name": "Claire Dubois",
        "street": "12 rue de la Paix",
        "zip": "75002",
        "city": "Paris",
        "country": "FR",
    },
    {
        "name": "Fjord Handel AS",
        "contact_person_name": "Lars Hansen",
        "street": "Karl Johans gate 1",
        "zip": "0154",
        "city": "Oslo",
        "country": "NO",
        "email": "lars@fjordhandel.example.no",
    },
    {
        "name": "Mette Jensen",
        "street": "Strøget 20",
        "zip": "1160",
        "city": "København",
        "country": "DK",
        "email": "mette.jensen@example.dk",
    },
    {
        "name": "Brauerei Sonnenhof AG",
        "street": "Am Sonnenhof 3",
        "zip": "80331",
        "city": "München",
        "country": "DE",
        "sales_tax_id": "DE123456789",
        "customer_number": "K-7001",
    },
    {
        "name": "Thames Widgets Ltd",
        "street": "1 Riverside Way",
        "zip": "SE1 9PX",
        "city": "London",
        "country": "GB",
        "email": "accounts@thameswidgets.example.co.uk",
    },
]


def build() -> dict:
    ref = reference_dir()
    files = sorted(
        p
        for sub in ("cii", "ubl", "zugferd-pdf")
        for p in (ref / "einvoices" / sub).iterdir()
        if p.suffix.lower() in (".xml", ".pdf")
    )
    debtors: dict[str, dict] = {}
    receipts: list[dict] = []
    transactions: list[dict] = []
    next_account = 10001

    def debtor_for(fields: dict) -> dict:
        nonlocal next_account
        key = fields["name"].casefold()
        if key not in debtors:
            clean = {k: v for k, v in fields.items() if v}
            if clean.get("country") and len(clean["country"]) != 2:
                clean.pop("country")
            debtors[key] = {"postingaccount_number": str(next_account), **clean}
            next_account += 1
        return debtors[key]

    for index, path in enumerate(files, start=1):
        doc = read_document(path)
        debtor = debtor_for(doc["buyer"])
        receipt_type = "credit outbound" if doc["type_code"] == "381" else "invoice outbound"
        paid = index % 3 == 0
        minute = index * 7
        receipt = {
            "id_by_customer": str(index),
            "type": receipt_type,
            "date": doc["date"],
            "counterparty": doc["buyer"]["name"],
            "invoicenumber": doc["invoicenumber"],
            "amount": _money(doc["amount"]),
            "currency": doc["currency"],
            "vat": _money(doc["vat"]) if doc["vat"] else None,
            "due_date": doc["due_date"],
            "date_delivery": doc["date_delivery"],
            "payment_reference": doc["payment_reference"],
            "payment_date": None,
            "debtor": debtor["postingaccount_number"],
            "e_invoice_type": doc["e_invoice_type"],
            "file": str(path.relative_to(ref)),
            "filename": path.name,
            "date_uploaded": "2025-05-02",
            "modified": MODIFIED_BASE.format(day=2, hour=8 + minute // 60, minute=minute % 60),
            "source_document_type": doc["type_code"],
        }
        if paid:
            receipt["payment_date"] = doc["due_date"] or doc["date"]
            transactions.append(
                {
                    "id_by_customer": str(len(transactions) + 1),
                    "account": 1200,
                    "to_from": debtor["name"],
                    "amount": receipt["amount"],
                    "currency": doc["currency"],
                    "booking_date": f"{receipt['payment_date']} 00:00:00",
                    "value_date": f"{receipt['payment_date']} 00:00:00",
                    "purpose": f"Rechnung {doc['invoicenumber']}",
                    "type": "Gutschrift",
                    "booking_text": "SEPA-Gutschrift",
                    "payment_reference": doc["payment_reference"],
                    "modified": receipt["modified"],
                }
            )
        receipts.append({k: v for k, v in receipt.items() if v is not None or k == "payment_date"})

    for extra in EXTRA_DEBTORS:
        debtor_for(extra)
    # a receipt without an e-invoice: e_invoice_type 0 and no file (served without file_content)
    plain = debtors["anna schmidt"]
    receipts.append(
        {
            "id_by_customer": str(len(receipts) + 1),
            "type": "invoice outbound",
            "date": "2025-04-28",
            "counterparty": plain["name"],
            "invoicenumber": "RE-2025-0417",
            "amount": "238.00",
            "currency": "EUR",
            "vat": "19.00",
            "due_date": "2025-05-12",
            "payment_date": None,
            "debtor": plain["postingaccount_number"],
            "e_invoice_type": 0,
            "filename": "RE-2025-0417.pdf",
            "date_uploaded": "2025-04-28",
            "modified": "2025-05-03 10:15:00",
        }
    )
    # inbound receipts, so that list_direction has something to tell apart
    for n, (party, amount, day) in enumerate(
        [("Bürobedarf Müller KG", "89.25", 5), ("Stadtwerke Musterstadt", "412.60", 7)], start=1
    ):
        receipts.append(
            {
                "id_by_customer": str(len(receipts) + 1),
                "type": "invoice inbound",
                "date": f"2025-04-{day:02d}",
                "counterparty": party,
                "invoicenumber": f"ER-{n:04d}",
                "amount": amount,
                "currency": "EUR",
                "vat": "19.00",
                "due_date": f"2025-05-{day:02d}",
                "payment_date": None,
                "e_invoice_type": 0,
                "filename": f"ER-{n:04d}.pdf",
                "date_uploaded": f"2025-04-{day:02d}",
                "modified": f"2025-05-01 09:0{n}:00",
            }
        )
    return {
        "buchhaltungsbutler": {
            "_about": (
                "Default BuchhaltungsButler simulator seed, generated by build_bb_default.py "
                "from the reference e-invoices. Credentials are simulator-only."
            ),
            "api_clients": [
                {"api_client": "bbsim-client", "api_secret": "bbsim-secret-5f3a9c2e7d41"}
            ],
            "companies": [
                {
                    "api_key": "bbsim-key-demo-gmbh-8c1d2e",
                    "name": "Demo Handels GmbH",
                    "active": True,
                    "debtors": list(debtors.values()),
                    "receipts": receipts,
                    "transactions": transactions,
                },
                {
                    "api_key": "bbsim-key-inactive-4b7a0f",
                    "name": "Ruhende Beteiligungs GmbH",
                    "active": False,
                    "debtors": [],
                    "receipts": [],
                    "transactions": [],
                },
            ],
        }
    }


if __name__ == "__main__":
    out = HERE / "bb_default.json"
    out.write_text(json.dumps(build(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {out}")
