"""The e-invoice reader against every real sample in ../shared/reference/einvoices.

Each sample is proof: it is either read completely (its lines reproduce its totals to the cent,
and as many lines are read as the reference README -- written independently of this reader --
counts) or refused with the cause the README's caveats predict. Spot checks compare values that
were read by eye from the files themselves.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
from lxml import etree

from bbvisma.einvoice import check_totals, computed_totals, extract_xml, read_document, read_path
from bbvisma.einvoice._base import NS, skonto_from_text
from bbvisma.errors import DataError, UnsupportedDocument
from bbvisma.reference import reference_dir

EINVOICES = reference_dir() / "einvoices"
SAMPLES = sorted(
    p for folder in ("cii", "ubl", "zugferd-pdf") for p in (EINVOICES / folder).iterdir()
)
EXPECTED_REFUSALS = {
    "zugferd_2p0_MINIMUM.pdf": "no_lines",
    "ZUGFeRD_1p0_COMFORT_Einfach.pdf": "zugferd1",
}
CENT = Decimal("0.01")


def _readme_rows() -> dict[str, tuple[str, int, str | None]]:
    """``folder/file`` -> (type code, line count, embedded XML name) from the README's table."""
    rows = {}
    for line in (EINVOICES / "README.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 7 and cells[1].startswith("`") and cells[6].isdigit():
            type_code = re.search(r"\((\d{3})", cells[5]).group(1)
            embedded = re.search(r"embedded `([^`]+)`", cells[4])
            rows[cells[1].strip("`")] = (
                type_code,
                int(cells[6]),
                embedded.group(1) if embedded else None,
            )
    return rows


README_ROWS = _readme_rows()


def _sample(rel: str) -> Path:
    return EINVOICES / rel


def _read(rel: str):
    return read_path(_sample(rel))


def _xml_of(rel: str) -> bytes:
    """The XML itself (for PDFs: the embedded attachment)."""
    data = _sample(rel).read_bytes()
    if rel.endswith(".pdf"):
        return extract_xml(data, rel)[1]
    return data


def _refusal(data: bytes, filename: str = "x.xml") -> UnsupportedDocument:
    with pytest.raises(UnsupportedDocument) as info:
        read_document(data, filename)
    return info.value


def _cents(value: Decimal) -> Decimal:
    return value.quantize(CENT)


# --------------------------------------------------------------------------------------------
# Every sample
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_sample_is_read_completely_or_refused_with_its_cause(path: Path):
    rel = f"{path.parent.name}/{path.name}"
    assert rel in README_ROWS, f"{rel} is not described in the reference README"
    type_code, readme_lines, embedded = README_ROWS[rel]
    if path.suffix == ".pdf":  # the attachment the README found with factur-x is the one read
        assert extract_xml(path.read_bytes(), path.name)[0] == embedded

    if path.name in EXPECTED_REFUSALS:
        with pytest.raises(UnsupportedDocument) as info:
            read_path(path)
        assert info.value.cause == EXPECTED_REFUSALS[path.name]
        assert path.name in str(info.value)  # the reason names the file
        return

    doc = read_path(path)
    assert doc.type_code == type_code
    assert len(doc.lines) == readme_lines > 0
    assert doc.number and doc.currency and doc.buyer.name and doc.seller.name
    assert isinstance(doc.issue_date, dt.date)
    t = doc.totals
    line_sum = sum((line.line_net_amount for line in doc.lines), Decimal("0"))
    assert _cents(line_sum) == _cents(t.line_total)
    assert _cents(t.line_total - t.allowance_total + t.charge_total) == _cents(t.tax_basis_total)
    assert _cents(t.tax_basis_total + t.tax_total) == _cents(t.grand_total)
    assert _cents(sum((s.basis for s in doc.tax_subtotals), Decimal("0"))) == _cents(
        t.tax_basis_total
    )
    computed = computed_totals(doc)
    assert _cents(computed["tax_basis_total"]) == _cents(t.tax_basis_total)
    assert _cents(computed["grand_total"]) == _cents(t.grand_total)
    assert _cents(computed["due_payable"]) == _cents(t.due_payable)
    assert check_totals(doc) == []
    for line in doc.lines:
        assert line.line_id and line.name and line.vat_category


def test_refusals_are_data_errors_grouped_by_cause():
    """The flows park a refused document like any data problem: a DataError keyed by cause."""
    err = _refusal(_sample("zugferd-pdf/zugferd_2p0_MINIMUM.pdf").read_bytes(), "min.pdf")
    assert isinstance(err, DataError)
    assert err.cause_key == "data:no_lines"
    assert "751" in str(err) and "urn:zugferd.de:2p0:minimum" in str(err)
    assert err.details["file"] == "min.pdf"


# --------------------------------------------------------------------------------------------
# Spot checks (values read from the files by eye)
# --------------------------------------------------------------------------------------------
def test_factur_x_pdf_gives_characteristics_classifications_gtin_and_ship_to():
    doc = _read("zugferd-pdf/invoice_EN16931.pdf")
    assert (doc.number, doc.issue_date, doc.profile) == (
        "F20260023",
        dt.date(2026, 1, 31),
        "urn:cen.eu:en16931:2017",
    )
    first, second = doc.lines[0], doc.lines[1]
    assert (first.sku, first.buyer_item_id, first.gtin) == (
        "ART_1254",
        "REF5487",
        "598785412598745",
    )
    assert [(c.name, c.value) for c in first.characteristics] == [("CATEGORIE", "JOUR 8H-20H")]
    assert [(c.code, c.list_id) for c in first.classifications] == [("SKU2578", "SK")]
    assert [(c.name, c.value) for c in second.characteristics] == [
        ("COULEUR", "BLANC"),
        ("GRAMMAGE", "80g"),
    ]
    assert [(c.code, c.list_id) for c in second.classifications] == [("LOT6254784", "BB")]
    assert (first.period_start, first.period_end) == (dt.date(2026, 1, 1), dt.date(2026, 1, 31))
    assert (first.net_price, first.gross_price, first.line_net_amount) == (
        Decimal("60.0000"),
        Decimal("65.0000"),
        Decimal("60.00"),
    )
    assert len(first.allowances_charges) == 8  # 4 allowances + 4 charges, already in 60.00
    ship_to = doc.ship_to
    assert ship_to.name == "DEL Name" and ship_to.ids == ["PRIVATE_ID_DEL"]
    assert (ship_to.address.line1, ship_to.address.postal_code, ship_to.address.city) == (
        "DEL ADRESSE LIGNE 1",
        "06000",
        "NICE",
    )
    assert doc.delivery_date == dt.date(2026, 1, 28)
    assert (doc.order_ref, doc.despatch_advice_ref) == ("PO201925478", "DESPADV002")
    assert [(p.number, p.date) for p in doc.preceding_invoices] == [
        ("F20260003", dt.date(2026, 1, 1))
    ]
    assert doc.buyer.vat_id == "FR 05 987 654 321"
    assert doc.seller.global_ids[0] == ("0088", "587451236587")
    assert len(doc.allowances_charges) == 8
    assert {(s.category, s.rate) for s in doc.tax_subtotals} == {
        ("S", Decimal("20.00")),
        ("S", Decimal("10.00")),
        ("E", Decimal("0.00")),
        ("K", Decimal("0.00")),
    }


def test_cii_example2_is_in_nok_with_the_sellers_skus_and_negative_lines():
    doc = _read("cii/CII_example2.xml")
    assert doc.currency == "NOK"
    assert [line.sku for line in doc.lines] == ["JB007", "JB008", "JB009", "JB010", "JB011"]
    assert [line.line_net_amount for line in doc.lines] == [
        Decimal("1273"),
        Decimal("-3.96"),
        Decimal("4.96"),
        Decimal("-25"),
        Decimal("187.5"),
    ]
    # EAN under scheme 0088 (GLN) is kept as a global id, not promoted to a GTIN (0160)
    assert (doc.lines[0].gtin, doc.lines[0].global_id, doc.lines[0].global_id_scheme) == (
        None,
        "1234567890128",
        "0088",
    )


def test_cii_credit_note_381_is_read_as_a_credit_note():
    doc = _read("cii/testout-ZF2PushCreditNote.xml")
    assert doc.type_code == "381" and doc.is_credit_note
    assert len(doc.lines) == 3


def test_ubl_credit_note_uses_credit_note_lines_and_credited_quantity():
    doc = _read("ubl/ubl-tc434-creditnote1.xml")
    assert (doc.syntax, doc.type_code, doc.is_credit_note) == ("UBL", "381", True)
    assert doc.number == "018304 / 28865"
    (line,) = doc.lines
    assert (line.sku, line.quantity, line.unit_code, line.line_net_amount) == (
        "V55",
        Decimal("1.00"),
        "C62",
        Decimal("100.11"),
    )
    assert (line.vat_category, line.vat_rate) == ("E", Decimal("0.00"))
    assert [(c.name, c.value) for c in line.characteristics] == [
        ("2", "Contributions - précompte professionnel")
    ]
    # BT-44 is the registration name; the PartyName is the trading name
    assert (doc.buyer.name, doc.buyer.trading_name) == (
        "My Customer Company",
        "My Customer Company S.A.",
    )
    (pm,) = doc.payment_means
    assert (pm.code, pm.iban, pm.bic) == ("1", "BE91000000143476", "BPOTBEB1")
    assert doc.payment_reference == "010676609538"


def test_xrechnung_01_21a_reverse_charge_ae_zero_percent():
    doc = _read("cii/01.21a-INVOICE_uncefact.xml")
    (line,) = doc.lines
    assert (line.vat_category, line.vat_rate, line.unit_code) == ("AE", Decimal("0.00"), "HUR")
    (charge,) = doc.allowances_charges
    assert (charge.is_charge, charge.amount, charge.reason, charge.vat_category) == (
        True,
        Decimal("25.00"),
        "Lieferpauschale",
        "AE",
    )
    (sub,) = doc.tax_subtotals
    assert (sub.category, sub.rate, sub.basis, sub.amount) == (
        "AE",
        Decimal("0.00"),
        Decimal("233.00"),
        Decimal("0.00"),
    )
    assert sub.exemption_reason == "als gemeinnützig anerkannt"
    assert doc.payment_terms.due_date == dt.date(2020, 12, 27)
    assert doc.payment_terms.net_days == 30


def test_intra_community_self_billed_389_is_read_with_k_zero_percent():
    doc = _read("cii/EN16931_Innergemeinschaftliche_Lieferungen.cii.xml")
    assert doc.type_code == "389"
    assert [(line.sku, line.vat_category, line.vat_rate) for line in doc.lines] == [
        ("CO-123/V2A", "K", Decimal("0")),
        ("IM-712/A2A", "K", Decimal("0")),
    ]
    (sub,) = doc.tax_subtotals
    assert (sub.category, sub.basis, sub.amount) == ("K", Decimal("2000"), Decimal("0"))
    assert sub.exemption_reason.startswith("Mehrwertsteuerbefreiung")
    assert doc.ship_to.address.city == "Metallstadt"


@pytest.mark.parametrize(
    ("rel", "email"),
    [
        # contact e-mail wins over the electronic address
        ("cii/CII_example5.xml", "john.hansen@buyercompany.dk"),
        ("ubl/ubl-tc434-example5.xml", "john.hansen@buyercompany.dk"),
        # no contact e-mail: the electronic address of scheme EM
        ("cii/01.21a-INVOICE_uncefact.xml", "buyer@info.de"),
        ("ubl/04.01a-INVOICE_ubl.xml", "buyer@info.de"),
        # an electronic address of another scheme is not an e-mail
        ("ubl/issue116.xml", None),
        ("cii/CII_example1.xml", None),
    ],
)
def test_buyer_email_comes_from_the_contact_or_an_em_electronic_address(rel, email):
    assert _read(rel).buyer.email == email


def test_buyer_em_address_is_kept_with_its_scheme_next_to_the_contact():
    buyer = _read("cii/CII_example5.xml").buyer
    assert (buyer.electronic_address, buyer.electronic_address_scheme) == (
        "info@buyercompany.dk",
        "EM",
    )
    assert buyer.contact.email == "john.hansen@buyercompany.dk"


def test_extended_warenrechnung_gives_skonto_terms_and_the_logistics_charge():
    doc = _read("zugferd-pdf/zugferd_2p0_EXTENDED_Warenrechnung.pdf")
    terms = doc.payment_terms
    assert (terms.discount_percent, terms.discount_days) == (Decimal("2.00"), 14)
    assert "2,0% Skonto" in terms.description
    # SpecifiedLogisticsServiceCharge (EXTENDED) is a document charge; without it BT-108 and
    # BT-109 would not add up
    transport = [a for a in doc.allowances_charges if a.is_charge]
    assert [(a.amount, a.reason, a.vat_category, a.vat_rate) for a in transport] == [
        (Decimal("3.00"), "Transportkosten", "S", Decimal("19.00"))
    ]
    assert doc.totals.charge_total == Decimal("3.00")
    assert doc.despatch_advice_ref == "L87654321012345"  # the delivery note stands in


def test_foreign_currency_invoice_takes_the_tax_total_in_the_invoice_currency():
    doc = _read("zugferd-pdf/zugferd_2p0_EXTENDED_Fremdwaehrung.pdf")
    assert (doc.currency, doc.tax_currency) == ("GBP", "EUR")
    assert doc.totals.tax_total == Decimal("163.16")  # not the EUR 183.14 (BT-111)
    assert (doc.totals.prepaid, doc.totals.due_payable) == (Decimal("500"), Decimal("521.91"))
    # two payment terms: the later date is the net due date
    assert doc.payment_terms.due_date == dt.date(2018, 11, 20)


def test_direct_debit_carries_mandate_and_debited_account():
    (pm,) = _read("cii/03.01a-INVOICE_uncefact.xml").payment_means
    assert (pm.code, pm.mandate_ref, pm.iban) == (
        "59",
        "[Mandate reference identifier]",
        "DE79000000001234567890",
    )


def test_ubl_notes_lose_their_subject_code_prefix_like_cii_notes():
    ubl = _read("ubl/03.07a-INVOICE_ubl.xml")
    cii = _read("cii/01.01_comprehensive_test_uncefact.xml")
    assert ubl.notes == cii.notes == ["Invoice Note Description", "Invoice Note Description 2"]


def test_corrected_invoice_384_and_self_billed_389_are_read_not_refused():
    assert _read("cii/01.18a-INVOICE_uncefact.xml").type_code == "384"
    assert _read("zugferd-pdf/zugferd_2p0_EN16931_Rechnungskorrektur.pdf").type_code == "384"
    assert _read("ubl/01.20a-INVOICE_ubl.xml").type_code == "389"


def test_cii_and_ubl_of_the_same_kosit_case_read_the_same():
    """01.01 (CII) and 03.07a (UBL) are one test case in both syntaxes (UBL amounts x1000)."""
    cii, ubl = (
        _read("cii/01.01_comprehensive_test_uncefact.xml"),
        _read("ubl/03.07a-INVOICE_ubl.xml"),
    )
    for c, u in zip(cii.lines, ubl.lines, strict=True):
        assert (c.sku, c.buyer_item_id, c.quantity, c.unit_code, c.vat_category) == (
            u.sku,
            u.buyer_item_id,
            u.quantity,
            u.unit_code,
            u.vat_category,
        )
        assert c.line_net_amount * 1000 == u.line_net_amount
        assert c.order_line_ref == u.order_line_ref
        assert len(c.allowances_charges) == len(u.allowances_charges)
    for attr in ("number", "buyer_reference", "order_ref", "sales_order_ref", "contract_ref"):
        assert getattr(cii, attr) == getattr(ubl, attr)
    assert cii.despatch_advice_ref == ubl.despatch_advice_ref == "DAR123456789"
    assert cii.buyer.vat_id == ubl.buyer.vat_id == "DE12345ABC"
    assert cii.seller.tax_number == ubl.seller.tax_number == "123/456/789"
    assert cii.buyer.contact == ubl.buyer.contact
    assert cii.ship_to.address == ubl.ship_to.address
    assert cii.ship_to.name == ubl.ship_to.name == "[Deliver to party name]"
    assert [(p.number, p.date) for p in cii.preceding_invoices] == [
        (p.number, p.date) for p in ubl.preceding_invoices
    ]


# --------------------------------------------------------------------------------------------
# XRechnung extension: sub-lines
# --------------------------------------------------------------------------------------------
def test_ubl_sub_invoice_lines_are_a_breakdown_only_top_lines_are_read():
    doc = _read("ubl/04.01a-INVOICE_ubl.xml")
    assert [(line.line_id, line.line_net_amount) for line in doc.lines] == [
        ("1", Decimal("818.04")),
        ("2", Decimal("11718.8")),
    ]


def test_a_sub_line_breakdown_that_does_not_add_up_is_refused():
    root = etree.fromstring(_xml_of("ubl/04.01a-INVOICE_ubl.xml"))
    deepest = root.xpath(
        "//cac:SubInvoiceLine[cbc:ID='1 1 2']/cbc:LineExtensionAmount", namespaces=NS
    )
    deepest[0].text = "48.76"  # was 48.75
    err = _refusal(etree.tostring(root))
    assert err.cause == "totals_mismatch"
    assert "line 1 / sub-line 1 1" in str(err) and "335.80" in str(err)


# --------------------------------------------------------------------------------------------
# Skonto in the XRechnung text convention
# --------------------------------------------------------------------------------------------
def test_xrechnung_skonto_text_line_gives_percent_and_days_in_cii():
    root = etree.fromstring(_xml_of("cii/01.21a-INVOICE_uncefact.xml"))
    (desc,) = root.xpath("//ram:SpecifiedTradePaymentTerms/ram:Description", namespaces=NS)
    desc.text = "#SKONTO#TAGE=10#PROZENT=3.00#\n#SKONTO#TAGE=20#PROZENT=1.50#\n"
    terms = read_document(etree.tostring(root)).payment_terms
    assert (terms.discount_percent, terms.discount_days) == (Decimal("3.00"), 10)


def test_xrechnung_skonto_text_line_gives_percent_and_days_in_ubl():
    root = etree.fromstring(_xml_of("ubl/02.05a-INVOICE_ubl.xml"))
    (note,) = root.xpath("cac:PaymentTerms/cbc:Note", namespaces=NS)
    note.text = "#SKONTO#TAGE=14#PROZENT=2.25#BASISBETRAG=100.00#\n"
    terms = read_document(etree.tostring(root)).payment_terms
    assert (terms.discount_percent, terms.discount_days) == (Decimal("2.25"), 14)


def test_skonto_prose_is_not_guessed():
    assert skonto_from_text("10 Tage 3% Skonto, 30 Tage netto") is None
    assert _read("cii/01.21a-INVOICE_uncefact.xml").payment_terms.discount_percent is None


# --------------------------------------------------------------------------------------------
# Refusals
# --------------------------------------------------------------------------------------------
def test_minimum_profile_is_refused_as_no_lines():
    err = _refusal(_sample("zugferd-pdf/zugferd_2p0_MINIMUM.pdf").read_bytes(), "m.pdf")
    assert err.cause == "no_lines"


def test_zugferd_1_is_refused_as_zugferd1_even_as_bare_xml():
    err = _refusal(_xml_of("zugferd-pdf/ZUGFeRD_1p0_COMFORT_Einfach.pdf"))
    assert err.cause == "zugferd1" and "ZUGFeRD 1.0" in str(err)


def test_malformed_xml_is_refused_with_lxmls_message_and_line():
    truncated = _sample("cii/CII_example1.xml").read_bytes()[:5000]
    err = _refusal(truncated, "broken.xml")
    assert err.cause == "malformed_xml"
    assert re.search(r"line \d+", str(err)) and str(err).startswith("broken.xml: ")
    assert err.details["line"] > 1


def test_pdf_without_embedded_xml_is_refused_as_no_xml():
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=595, height=842)
    buffer = io.BytesIO()
    writer.write(buffer)
    err = _refusal(buffer.getvalue(), "plain.pdf")
    assert err.cause == "no_xml" and "plain.pdf" in str(err)


def test_truncated_pdf_is_refused_as_malformed_pdf():
    data = _sample("zugferd-pdf/invoice_EN16931.pdf").read_bytes()
    assert _refusal(data[:4000], "cut.pdf").cause == "malformed_pdf"


def test_xml_that_is_neither_cii_nor_ubl_is_refused_as_unknown_syntax():
    order = (
        b'<Order xmlns="urn:oasis:names:specification:ubl:schema:xsd:Order-2"><ID>1</ID></Order>'
    )
    err = _refusal(order)
    assert err.cause == "unknown_syntax" and "Order-2" in str(err)


def test_lines_that_do_not_add_up_are_refused_naming_the_numbers():
    root = etree.fromstring(_xml_of("cii/CII_example1.xml"))
    amount = root.xpath(
        "//ram:IncludedSupplyChainTradeLineItem[1]//ram:LineTotalAmount", namespaces=NS
    )[0]
    original = Decimal(amount.text)
    amount.text = str(original + Decimal("0.01"))
    err = _refusal(etree.tostring(root))
    assert err.cause == "totals_mismatch"
    assert "line total (BT-106)" in str(err)
    assert any("sum of the 20 line net amounts" in p for p in err.details["problems"])


def test_check_totals_names_each_broken_rule():
    doc = _read("cii/CII_example5.xml")
    assert check_totals(doc) == []
    broken = doc.model_copy(
        update={"totals": doc.totals.model_copy(update={"grand_total": Decimal("1.00")})}
    )
    problems = check_totals(broken)
    assert any("grand total (BT-112) is 1.00" in p for p in problems)
    assert any("amount due (BT-115)" in p for p in problems)


def test_missing_invoice_number_is_refused_as_missing_field():
    root = etree.fromstring(_xml_of("ubl/issue116.xml"))
    root.remove(root.find("cbc:ID", NS))
    err = _refusal(etree.tostring(root))
    assert err.cause == "missing_field" and "BT-1" in str(err)


def test_unreadable_amount_is_refused_as_invalid_value():
    root = etree.fromstring(_xml_of("cii/CII_example7.xml"))
    root.xpath("//ram:BilledQuantity", namespaces=NS)[0].text = "12,5"
    err = _refusal(etree.tostring(root))
    assert err.cause == "invalid_value" and "'12,5'" in str(err)


def test_xml_with_entity_definitions_is_refused_and_nothing_is_resolved(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("S3CR3T-TOKEN-4711")
    xml = _xml_of("cii/CII_example7.xml").decode("utf-8")
    xml = re.sub(r"^<\?xml[^>]*\?>", "", xml.lstrip())
    assert "<ram:ID>INVOICE_test_7</ram:ID>" in xml
    xml = f'<!DOCTYPE x [<!ENTITY leak SYSTEM "file://{secret}">]>' + xml.replace(
        "<ram:ID>INVOICE_test_7", "<ram:ID>&leak;INVOICE_test_7"
    )
    err = _refusal(xml.encode("utf-8"))
    assert err.cause == "malformed_xml" and "DOCTYPE" in str(err)
    assert "S3CR3T" not in str(err)


def test_pdfs_are_read_inside_an_odoo_process():
    """Odoo's import hook breaks python-stdnum (and so ``import facturx``); the reader must not
    depend on it, because the addon calls it in the Odoo server."""
    pytest.importorskip("odoo")
    code = (
        "import odoo, sys\n"
        "from bbvisma.einvoice import read_path\n"
        "print(len(read_path(sys.argv[1]).lines))\n"
    )
    pdf = _sample("zugferd-pdf/zugferd_2p0_EXTENDED_Warenrechnung.pdf")
    done = subprocess.run(
        [sys.executable, "-c", code, str(pdf)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "6"


# --------------------------------------------------------------------------------------------
# Performance
# --------------------------------------------------------------------------------------------
def test_large_kosit_file_with_base64_attachment_parses_fast():
    data = _sample("ubl/03.07a-INVOICE_ubl.xml").read_bytes()
    assert len(data) > 400_000
    read_document(data)  # warm-up (imports)
    started = time.perf_counter()
    for _ in range(5):
        read_document(data)
    assert (time.perf_counter() - started) / 5 < 0.25  # ~10 ms here; 25x headroom for slow CI
