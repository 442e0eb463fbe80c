"""ReceiptDocuments: receipts page by page, each e-invoice file fetched once per change."""

from __future__ import annotations

from decimal import Decimal

import pytest
from flow_fixtures import make_rig

from bbvisma.einvoice import read_path
from bbvisma.errors import UnsupportedDocument
from bbvisma.flows.documents import ReceiptDocuments, receipt_fingerprint
from bbvisma.reference import reference_dir


@pytest.fixture
def rig():
    return make_rig()


def _outbound(docs):
    return {r.id_by_customer: r for r in docs.iter_receipts(direction="outbound", since=None)}


def test_outbound_receipts_are_listed_without_inbound_ones(rig):
    docs = ReceiptDocuments(rig.context())
    receipts = _outbound(docs)
    assert receipts and all(r.is_outbound for r in receipts.values())
    inbound = list(docs.iter_receipts(direction="inbound", since=None))
    assert inbound and not any(r.is_outbound for r in inbound)
    assert docs.fetches == 0  # listing never downloads a file


def test_types_filter_keeps_only_the_named_receipt_types(rig):
    docs = ReceiptDocuments(rig.context())
    credits = list(docs.iter_receipts(direction="outbound", since=None, types={"credit outbound"}))
    assert credits and {r.type for r in credits} == {"credit outbound"}


def test_document_is_the_parsed_einvoice_of_the_receipt(rig):
    docs = ReceiptDocuments(rig.context())
    receipt = _outbound(docs)["8"]  # CII_example2.xml, NOK
    document = docs.document(receipt)
    expected = read_path(reference_dir() / "einvoices/cii/CII_example2.xml")
    assert document == expected
    assert document.totals.grand_total == Decimal("1801.78")
    assert docs.detail(receipt).currency == "NOK"
    assert docs.fetches == 1  # detail and document came from the same single read


def test_plain_pdf_receipt_has_no_document(rig):
    docs = ReceiptDocuments(rig.context())
    receipt = _outbound(docs)["41"]  # e_invoice_type 0, no file
    assert docs.document(receipt) is None
    assert docs.has_einvoice(receipt) is False
    assert docs.detail(receipt).vat == Decimal("19.00")


def test_refused_file_raises_its_cause_again_from_the_cache(rig):
    ctx = rig.context()
    docs = ReceiptDocuments(ctx)
    receipt = _outbound(docs)["33"]  # ZUGFeRD 1.0
    with pytest.raises(UnsupportedDocument) as first:
        docs.document(receipt)
    assert first.value.cause == "zugferd1"
    again = ReceiptDocuments(ctx)
    with pytest.raises(UnsupportedDocument) as second:
        again.document(receipt)
    assert second.value.cause == "zugferd1" and second.value.message == first.value.message
    assert docs.fetches == 1 and again.fetches == 0


def test_two_readers_sharing_the_cache_fetch_each_file_once(rig):
    first = ReceiptDocuments(rig.context())
    second = ReceiptDocuments(rig.context())  # another flow, same integration cache
    receipts = _outbound(first)
    for receipt in receipts.values():
        try:
            first.document(receipt)
            second.document(receipt)
        except UnsupportedDocument:
            pass
    assert first.fetches == len(receipts)
    assert second.fetches == 0
    gets = [e for e in rig.bb_sim.requests.entries if e["path"].startswith("/api/v1/receipts/get/")]
    assert len(gets) == len(receipts)


def test_changed_receipt_row_is_fetched_again_and_unchanged_is_not(rig):
    docs = ReceiptDocuments(rig.context())
    receipts = _outbound(docs)
    docs.document(receipts["8"])
    docs.document(receipts["9"])
    rig.bb_sim.modify_receipt(rig.api_key, 8, payment_date="2013-07-19")
    fresh = _outbound(docs)
    assert receipt_fingerprint(fresh["8"]) != receipt_fingerprint(receipts["8"])
    assert receipt_fingerprint(fresh["9"]) == receipt_fingerprint(receipts["9"])
    docs.document(fresh["8"])
    docs.document(fresh["9"])
    assert docs.fetches == 3


def test_since_reads_only_receipts_changed_after_it(rig):
    docs = ReceiptDocuments(rig.context())
    rig.clock.advance(60)
    rig.bb_sim.modify_receipt(rig.api_key, 9, amount="4675.00")
    since = "2025-05-03 10:15:00"  # after every seed stamp, before the change (clock is later)
    changed = list(docs.iter_receipts(direction="outbound", since=since))
    assert [r.id_by_customer for r in changed] == ["9"]
