"""Orders flow: BB outgoing receipts -> Visma.net invoices / credit notes / sales orders, against
both simulators in-process (one scenario over real loopback HTTP)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import tracemalloc
from collections import Counter
from decimal import Decimal
from unittest.mock import ANY

import pytest
from flow_fixtures import (
    ListSink,
    foreign_vat_maps,
    foreign_vat_seed,
    make_rig,
    over_loopback_http,
)

from bbvisma.buchhaltungsbutler.models import format_berlin_datetime
from bbvisma.einvoice import read_path
from bbvisma.engine import Action
from bbvisma.errors import UnsupportedDocument
from bbvisma.flows import FLOW_CLASSES
from bbvisma.flows.customers import CustomersFlow
from bbvisma.flows.defaults import default_mapping, default_value_maps
from bbvisma.flows.documents import ReceiptDocuments
from bbvisma.flows.orders import (
    CREDIT_NOTE_FIELDS,
    CREDIT_NOTE_LINE_FIELDS,
    SALES_ORDER_FIELDS,
    SALES_ORDER_LINE_FIELDS,
    OrdersFlow,
    parse_documents_since,
    preceding_invoice_number,
)
from bbvisma.hashindex import HashIndex
from bbvisma.linkstore import MemoryLinkStore
from bbvisma.reference import reference_dir
from bbvisma.simulators.buchhaltungsbutler import SEED_FILE
from bbvisma.simulators.vismanet import VismaSpec

SEED_RECEIPTS = {
    r["id_by_customer"]: r
    for r in json.loads(SEED_FILE.read_text(encoding="utf-8"))["buchhaltungsbutler"]["companies"][
        0
    ]["receipts"]
}
OUTBOUND = {k for k, r in SEED_RECEIPTS.items() if r["type"].endswith("outbound")}

#: where every outgoing seed receipt must end on a tenant that knows the samples' VAT rates
CREDIT_NOTES = {"6", "16", "25", "29", "36"}  # 381s, and the negative 384 (Rechnungskorrektur)
PARKED = {
    "12": "data:document_type:389",
    "18": "data:document_type:389",
    "33": "data:zugferd1",
    "40": "data:no_lines",  # 751, MINIMUM profile
}
#: the HUF sample rounds its VAT to whole forints (18 679.00 where Visma.net computes
#: 18 678.60): it is sent with the document's VAT amount (taxDetailLines)
HUF_RECEIPT = "14"
INVOICES = OUTBOUND - CREDIT_NOTES - set(PARKED)
INVOICE_TARGET = "customer_invoice"
ANY_TIME = ANY
#: the rig's FakeClock at its start (2025-06-02 12:00 UTC)
NOW = dt.datetime(2025, 6, 2, 12, tzinfo=dt.timezone.utc)


def flow(rig, value_maps=None, **settings) -> OrdersFlow:
    sink = settings.pop("sink", None)
    ctx = rig.context(
        mapping=default_mapping("orders"),
        value_maps=value_maps if value_maps is not None else default_value_maps(),
        settings=settings,
        sink=sink,
    )
    return OrdersFlow(ctx)


def by_key(report):
    return {r.source_key: r for r in report.results}


def only(key: str) -> dict[str, str]:
    """Settings of a date window holding just this receipt (keeps a scenario small)."""
    day = SEED_RECEIPTS[key]["date"]
    return {"date_from": day, "date_to": day}


def document_posts(rig):
    paths = ("/v2/customerinvoice", "/v2/customerCreditNote", "/v2/salesorder")
    return [e for e in rig.visma_writes() if e["method"] == "POST" and e["path"] in paths]


def source_totals(receipt_id: str) -> tuple[Decimal, Decimal]:
    """(gross, net) of the receipt's reference file, read independently of the flow."""
    doc = read_path(reference_dir() / SEED_RECEIPTS[receipt_id]["file"])
    sign = -1 if doc.totals.grand_total < 0 else 1
    return doc.totals.grand_total * sign, doc.totals.tax_basis_total * sign


@pytest.fixture
def rig():
    rig = make_rig()
    yield rig
    assert rig.contract_violations() == []


@pytest.fixture
def full_rig():
    """A tenant with the samples' foreign VAT rates and countries."""
    rig = make_rig(visma_seed=foreign_vat_seed())
    yield rig
    assert rig.contract_violations() == []


def full_flow(rig, **settings) -> OrdersFlow:
    settings.setdefault("missing_sku_policy", "create")
    return flow(rig, foreign_vat_maps(default_value_maps()), **settings)


# -- every reference e-invoice goes to the right place ------------------------------------------
def test_every_reference_einvoice_goes_to_the_right_place_with_totals_to_the_cent(full_rig):
    report = full_flow(full_rig).run()
    results = by_key(report)
    assert set(results) == OUTBOUND  # inbound receipts are not read
    sim = full_rig.visma_sim
    for key in sorted(INVOICES, key=int):
        result = results[key]
        assert result.action is Action.CREATE, (key, result.message)
        invoice = sim.invoices[result.target_key]
        assert invoice["externalReference"] == f"BB-{key}"
        if SEED_RECEIPTS[key].get("file"):
            gross, net = source_totals(key)
            assert Decimal(str(invoice["amount"])) == gross, key
            assert Decimal(str(invoice["detailTotal"])) == net, key
        assert Decimal(str(invoice["amount"])) == abs(Decimal(SEED_RECEIPTS[key]["amount"]))
    for key in sorted(CREDIT_NOTES, key=int):
        result = results[key]
        assert result.action is Action.CREATE, (key, result.message)
        note = sim.credit_notes[result.target_key]
        gross, net = source_totals(key)
        assert (Decimal(str(note["amount"])), Decimal(str(note["detailTotal"]))) == (gross, net)
    for key, cause in PARKED.items():
        assert results[key].action is Action.PARK and results[key].cause_key == cause, key
    assert results["12"].message.startswith("receipt 12 (47110818): a self-billed invoice")
    assert len(sim.invoices) == len(INVOICES) and len(sim.credit_notes) == len(CREDIT_NOTES)


def test_document_vat_rounded_otherwise_than_visma_is_sent_as_tax_detail_lines(full_rig):
    report = full_flow(full_rig).run()
    results = by_key(report)
    huf = results[HUF_RECEIPT]
    assert huf.action is Action.CREATE, huf.message
    assert huf.payload["taxDetailLines"] == [
        {"taxId": "VAT27", "taxableAmount": 69180.0, "vatAmount": 18679.0}
    ]
    invoice = full_rig.visma_sim.invoices[huf.target_key]
    assert invoice["vatTotal"] == 18679.0
    assert Decimal(str(invoice["amount"])) == source_totals(HUF_RECEIPT)[0]
    # every other document's VAT is Visma.net's own: nothing else carries tax details
    sent = [r for r in report.results if r.payload and r.source_key != HUF_RECEIPT]
    assert sent and not any(
        "taxDetailLines" in r.payload or "taxDetails" in r.payload for r in sent
    )


def test_corrected_invoice_with_negative_total_becomes_a_credit_note_naming_the_original(
    full_rig,
):
    result = by_key(full_flow(full_rig, **only("36")).run())["36"]
    note = full_rig.visma_sim.credit_notes[result.target_key]
    assert note["note"] == "Bezug: Rechnung R87654321012345"  # found in the file's notes
    assert [line["quantity"] for line in note["lines"][:2]] == [5.0, 2.0]
    assert result.source["document_kind"] == "corrected_invoice"


def test_preceding_invoice_comes_from_bt25_or_from_a_note():
    folder = reference_dir() / "einvoices"
    assert preceding_invoice_number(read_path(folder / "cii/01.18a-INVOICE_uncefact.xml")) == (
        "PRG1502168"
    )
    note_only = read_path(folder / "zugferd-pdf/zugferd_2p0_EN16931_Rechnungskorrektur.pdf")
    assert not note_only.preceding_invoices
    assert preceding_invoice_number(note_only) == "R87654321012345"


def test_corrected_invoice_policy_park_parks_corrections(rig):
    results = by_key(flow(rig, corrected_invoice_policy="park").run())
    assert results["3"].cause_key == results["36"].cause_key == "data:document_type:384"


def test_document_level_allowances_and_charges_become_lines_that_add_up(rig):
    result = by_key(flow(rig, missing_sku_policy="create", **only("39")).run())["39"]
    invoice = rig.visma_sim.invoices[result.target_key]
    items = [line["inventoryNumber"] for line in invoice["invoiceLines"]]
    assert items[-5:] == ["RABATT", "RABATT", "RABATT", "RABATT", "FRACHT"]
    assert invoice["amount"] == 518.99 and invoice["detailTotal"] == 448.99


def test_lines_without_sku_go_to_the_fallback_item_with_their_description(rig):
    result = by_key(flow(rig, **only("31")).run())["31"]  # Mustang sample: no seller ids
    lines = rig.visma_sim.invoices[result.target_key]["invoiceLines"]
    assert {line["inventoryNumber"] for line in lines} == {"SERVICE"}
    doc = read_path(reference_dir() / SEED_RECEIPTS["31"]["file"])
    assert [line["description"] for line in lines] == [line.name for line in doc.lines]


# -- idempotency, crashes, lost answers ---------------------------------------------------------
def test_second_run_makes_zero_write_calls_with_or_without_watermark(full_rig):
    first = full_flow(full_rig).run()
    assert first.watermark == format_berlin_datetime(first.started)
    full_rig.clear_logs()
    again = full_flow(full_rig).run(since=first.watermark)
    assert again.items == 0 and full_rig.visma_requests() == []
    full_rig.clear_logs()
    everything = full_flow(full_rig).run(since=None)
    assert everything.counts["skip"] == len(INVOICES) + len(CREDIT_NOTES)
    assert full_rig.visma_writes() == []
    assert full_rig.visma_requests() == []  # links and cached documents: not even a read


def test_run_killed_mid_batch_then_rerun_creates_no_duplicate(full_rig):
    # the orders flow records a batch's results once the batch's totals are checked: the
    # worker dies while recording them, after every document of the batch was created
    with pytest.raises(KeyboardInterrupt):
        full_flow(full_rig, sink=ListSink(fail_after=9)).run()
    made = len(full_rig.visma_sim.invoices) + len(full_rig.visma_sim.credit_notes)
    assert made > 9
    report = full_flow(full_rig).run()  # no watermark was stored: reads everything again
    assert report.counts["skip"] == made
    refs = [d["externalReference"] for d in full_rig.visma_sim.invoices.values()]
    refs += [d["externalReference"] for d in full_rig.visma_sim.credit_notes.values()]
    assert len(refs) == len(set(refs)) == len(INVOICES) + len(CREDIT_NOTES)


def test_lost_create_answer_is_found_by_external_reference(rig):
    rig.visma_sim.faults.add("drop_after_commit", method="POST", path="^/v2/customerinvoice$")
    result = by_key(flow(rig, **only("41")).run())["41"]
    assert result.action is Action.CREATE and result.response["recovered"] is True
    assert [d["externalReference"] for d in rig.visma_sim.invoices.values()] == ["BB-41"]


def test_lost_links_never_lead_to_a_duplicate(rig):
    window = {"date_from": "2020-01-01", "date_to": "2020-12-31", "missing_sku_policy": "create"}
    flow(rig, **window).run()
    before = (len(rig.visma_sim.invoices), len(rig.visma_sim.credit_notes))
    assert before == (3, 1)  # receipts 4, 15, 31 and credit note 16
    rig.links = MemoryLinkStore()
    rig.clear_logs()
    report = flow(rig, **window).run()
    assert document_posts(rig) == []
    assert (len(rig.visma_sim.invoices), len(rig.visma_sim.credit_notes)) == before
    adopted = [r for r in report.results if (r.response or {}).get("adopted")]
    assert len(adopted) == report.counts["create"] > 0


def test_receipt_changed_after_it_was_sent_parks_instead_of_changing_the_invoice(rig):
    first = flow(rig, **only("41")).run()
    rig.clock.advance(3600)
    rig.bb_sim.modify_receipt(rig.api_key, 41, amount="297.50")
    rig.clear_logs()
    report = flow(rig).run(since=first.watermark)
    assert [r.source_key for r in report.results] == ["41"]  # only the changed receipt
    assert report.results[0].cause_key == "data:changed_after_sync"
    assert rig.visma_writes() == []


def test_paid_receipt_is_read_again_but_costs_no_write(rig):
    first = flow(rig, **only("41")).run()
    rig.clock.advance(3600)
    rig.bb_sim.modify_receipt(rig.api_key, 41, payment_date="2025-05-10")
    rig.clear_logs()
    report = flow(rig).run(since=first.watermark)
    assert report.counts == {**report.counts, "skip": 1} and report.items == 1
    assert rig.visma_writes() == []


# -- products ---------------------------------------------------------------------------------
def test_missing_sku_parks_naming_it_and_replay_after_the_sku_exists_succeeds(rig):
    orders = flow(rig, **only("39"))
    parked = by_key(orders.run())["39"]
    assert parked.action is Action.PARK and parked.cause_key == "data:missing_sku:ZS997"
    assert "ZS997" in parked.message and "GZ250" in parked.message
    for sku in ("ZS997", "GZ250", "2031", "1805", "MP107"):
        rig.visma.create_inventory({"inventoryNumber": sku, "description": sku})
    replay = orders.replay(["39"])
    assert replay.counts["create"] == 1
    assert rig.visma_sim.invoices[replay.results[0].target_key]["amount"] == 518.99


def test_create_sku_policy_creates_the_item_from_the_line(rig):
    result = by_key(flow(rig, missing_sku_policy="create", **only("39")).run())["39"]
    assert result.action is Action.CREATE
    item = rig.visma_sim.inventory["ZS997"]
    assert item["description"] == "Zitronensäure 100ml"
    assert item["salesUnit"] == "STK" and item["vatCode"]["id"] == "01"


def test_skus_are_checked_with_one_inventory_read_per_run(rig):
    report = flow(
        rig, missing_sku_policy="create", date_from="2018-01-01", date_to="2018-12-31"
    ).run()
    assert report.counts["create"] >= 5
    reads = [
        e for e in rig.visma_requests() if e["method"] == "GET" and e["path"] == "/v1/inventory"
    ]
    assert len(reads) == 1


def test_missing_fallback_item_parks_naming_the_setting(rig):
    result = by_key(flow(rig, fallback_item="NOPE", **only("41")).run())["41"]
    assert result.cause_key == "data:missing_item:NOPE" and "fallback_item" in result.message


# -- targets ----------------------------------------------------------------------------------
def test_sales_order_mode_creates_orders_and_credit_notes_stay_credit_notes(rig):
    settings = {"order_target": "sales_order", "missing_sku_policy": "create"}
    results = by_key(flow(rig, **settings, **only("39")).run())
    results.update(by_key(flow(rig, **settings, **only("6")).run()))
    order = rig.visma_sim.orders[("SO", results["39"].target_key)]
    assert order["customerRefNo"] == "BB-39" and order["orderTotal"] == 518.99
    assert results["39"].payload["orderType"] == "SO"
    assert rig.links.get("order", "39").meta["target"] == "sales_order"
    assert results["6"].target_key in rig.visma_sim.credit_notes
    assert rig.visma_sim.invoices == {}
    rig.clear_logs()
    again = flow(rig, order_target="sales_order", **only("39")).run(since=None)
    assert again.counts["skip"] == 1 and rig.visma_writes() == []


def test_payload_shapes_use_only_fields_of_the_visma_spec():
    spec = VismaSpec.shared()

    def fields(schema_name):
        return set(spec._root["components"]["schemas"][schema_name]["properties"])

    assert fields("CustomerCreditNoteUpdateDto") >= CREDIT_NOTE_FIELDS
    assert fields("CustomerCreditNoteLineUpdateDto") >= CREDIT_NOTE_LINE_FIELDS
    assert set(SALES_ORDER_FIELDS.values()) <= fields("SalesOrderUpdateDto")
    assert set(SALES_ORDER_LINE_FIELDS.values()) <= fields("SalesOrderLineUpdateDto")
    mapping = default_mapping("orders")
    invoice_fields = fields("CustomerInvoiceUpdateDto")
    assert {r["target"] for r in mapping.to_rows()} <= invoice_fields
    line_fields = fields("CustomerInvoiceLinesUpdateDto")
    assert {r["target"] for r in mapping.children["lines"].to_rows()} <= line_fields
    customer_fields = fields("CustomerUpdateDto")
    assert {r["target"].split(".")[0] for r in default_mapping("customers").to_rows()} <= (
        customer_fields
    )


def test_skonto_text_and_payment_means_map_to_credit_terms_and_payment_method(rig):
    results = by_key(flow(rig, missing_sku_policy="create", **only("37")).run())
    results.update(by_key(flow(rig, missing_sku_policy="create", **only("30")).run()))
    skonto = results["30"]  # "... 3% Skonto innerhalb 10 Tagen ..." in the terms text
    assert skonto.source["payment_terms_key"] == "10S3"
    assert rig.visma_sim.invoices[skonto.target_key]["creditTerms"]["id"] == "10S3"
    debit = results["37"]  # payment means 59: SEPA direct debit
    assert rig.visma_sim.invoices[debit.target_key]["paymentMethod"]["id"] == "LS"


# -- receipts without e-invoice, VAT, customers, filters ----------------------------------------
def test_receipt_without_einvoice_becomes_one_fallback_line_per_vat_rate(rig):
    result = by_key(flow(rig, **only("41")).run())["41"]  # plain PDF, 238.00 incl. 19 %
    invoice = rig.visma_sim.invoices[result.target_key]
    assert [(line["inventoryNumber"], line["amount"]) for line in invoice["invoiceLines"]] == [
        ("SERVICE", 200.0)
    ]
    assert invoice["invoiceLines"][0]["vatCode"]["id"] == "01"
    assert (invoice["amount"], invoice["vatTotal"]) == (238.0, 38.0)


def test_receipt_without_einvoice_parks_under_the_park_policy(rig):
    result = by_key(flow(rig, no_einvoice_policy="park", **only("41")).run())["41"]
    assert result.action is Action.PARK and result.cause_key == "data:no_einvoice"


def test_unmapped_vat_combination_parks_naming_it_before_any_write(rig):
    results = by_key(flow(rig, **only("14")).run())
    parked = results["14"]  # HUF sample, 27 %
    assert parked.cause_key == "data:unmapped:vat_codes:S:27"
    assert "S:27" in parked.message and "DIZEL" in parked.message
    assert parked.exchanges == [] or all(e.get("system") == "bb" for e in parked.exchanges)


def test_totals_mismatch_is_an_error_on_the_record_never_a_silent_difference(rig):
    wrong = default_value_maps()
    wrong["vat_codes"]["S:7"] = "01"  # books 7 % lines at 19 %
    result = by_key(flow(rig, wrong, **only("35")).run())["35"]  # taxi ride, 7 %
    assert result.action is Action.PARK and result.cause_key == "data:totals_mismatch"
    assert result.target_key in rig.visma_sim.invoices
    assert "18.08 in the source" in result.message
    assert rig.links.get("order", "35").content_hash is None  # flagged for a human


def test_customer_of_an_order_is_created_with_the_customers_flow_rules(rig):
    result = by_key(flow(rig, **only("41")).run())["41"]  # debtor 10024, not in Visma.net yet
    customer = rig.visma_sim.customers[result.source["customer_number"]]
    assert customer["name"] == "Anna Schmidt" and customer["mainContact"]["name"] == "Anna Schmidt"
    assert rig.links.get("customer", "10024").target_key == "10024"
    rig.clear_logs()
    customers = CustomersFlow(
        rig.context(mapping=default_mapping("customers"), value_maps=default_value_maps())
    ).run()
    assert by_key(customers)["10024"].action is Action.SKIP
    names = [c["name"] for c in rig.visma_sim.customers.values()]
    assert names.count("Anna Schmidt") == 1


def test_customer_found_in_visma_by_email_is_used_without_create():
    seed = foreign_vat_seed()
    seed.get("vismanet", seed)["customers"].append(
        {"number": "K77", "name": "A. Schmidt", "mainContact": {"email": "anna.schmidt@example.de"}}
    )
    rig = make_rig(visma_seed=seed)
    result = by_key(flow(rig, **only("41")).run())["41"]
    assert result.payload["customerNumber"] == "K77"
    assert "10024" not in rig.visma_sim.customers


def test_customer_email_is_the_debtors_first_then_the_documents(rig):
    result = by_key(flow(rig, **only("5")).run())["5"]  # document says buyer@info.de
    customer = rig.visma_sim.customers[result.source["customer_number"]]
    assert customer["mainContact"]["email"] == "rechnungseingang@test.de"  # the debtor's
    other = make_rig()
    other.bb_sim.modify_debtor(other.api_key, "10001", email=None)
    result = by_key(flow(other, **only("5")).run())["5"]
    customer = other.visma_sim.customers[result.source["customer_number"]]
    assert customer["mainContact"]["email"] == "buyer@info.de"  # the document buyer's


def test_debtors_sharing_a_name_are_told_apart_by_the_buyers_email_or_park_naming_them(rig):
    # receipt 5: counterparty "[Buyer name]" (debtor 10001), its document's buyer buyer@info.de
    rig.bb_sim.modify_debtor(rig.api_key, "10002", name=" [buyer  NAME] ")  # buyer@info.de
    result = by_key(flow(rig, **only("5")).run())["5"]
    assert result.action is Action.CREATE
    assert result.source["customer_number"] == rig.links.get("customer", "10002").target_key
    assert rig.links.get("customer", "10001") is None
    other = make_rig()
    other.bb_sim.modify_debtor(other.api_key, "10002", name="[Buyer name]", email="x@info.de")
    parked = by_key(flow(other, **only("5")).run())["5"]
    assert parked.action is Action.PARK
    assert parked.cause_key == "data:ambiguous_debtor:[Buyer name]"
    assert "2 debtors are named '[Buyer name]' (10001, 10002)" in parked.message


def test_a_synced_debtor_is_not_kept_by_the_run_and_read_again_if_its_link_is_gone(rig):
    CustomersFlow(
        rig.context(mapping=default_mapping("customers"), value_maps=default_value_maps())
    ).run()
    orders = flow(rig)
    index = orders._debtor_index()
    assert index.record("10024") is None  # linked: the customer number comes from the link
    assert [c.number for c in index.named("anna schmidt")] == ["10024"]
    assert orders._debtor("10024").email == "anna.schmidt@example.de"  # read from the list
    unsynced = flow(make_rig())._debtor_index()
    assert unsynced.record("10024").email == "anna.schmidt@example.de"


def test_default_debtor_mode_books_everything_on_one_customer_without_creating_any(rig):
    report = flow(
        rig, use_default_debtor=True, default_customer_number="10000", date_from="2018-01-01"
    ).run()
    created = [r for r in report.results if r.action is Action.CREATE]
    assert created and {r.payload["customerNumber"] for r in created} == {"10000"}
    assert not [e for e in rig.visma_writes() if e["path"] == "/v1/customer"]


def test_receipt_without_any_customer_data_falls_back_to_the_default_debtor(rig):
    rig.bb_sim.modify_receipt(rig.api_key, 41, counterparty="Laufkunde ohne Konto")
    result = by_key(flow(rig, default_customer_number="10000", **only("41")).run())["41"]
    assert result.action is Action.CREATE and result.payload["customerNumber"] == "10000"
    without = by_key(flow(make_rig(), **only("41")).run(since=None))["41"]
    assert without.cause_key is None and without.payload["customerNumber"] == "10024"
    nobody = make_rig()
    nobody.bb_sim.modify_receipt(nobody.api_key, 41, counterparty="Laufkunde ohne Konto")
    parked = by_key(flow(nobody, **only("41")).run())["41"]
    assert parked.action is Action.PARK and parked.cause_key == "data:no_customer"


@pytest.mark.parametrize(
    ("status", "paid"), [("paid", True), ("unpaid", False)], ids=["paid", "unpaid"]
)
def test_status_filter_reads_only_paid_or_unpaid_receipts(rig, status, paid):
    report = flow(rig, status_filter=status, no_einvoice_policy="park").run()
    expected = {k for k in OUTBOUND if bool(SEED_RECEIPTS[k].get("payment_date")) is paid}
    assert {r.source_key for r in report.results} == expected and expected


def test_date_window_limits_the_receipts(rig):
    report = flow(rig, date_from="2020-01-01", date_to="2020-12-31").run()
    expected = {k for k in OUTBOUND if "2020-01-01" <= SEED_RECEIPTS[k]["date"] <= "2020-12-31"}
    assert {r.source_key for r in report.results} == expected == {"4", "15", "16", "31"}


# -- documents are shared ---------------------------------------------------------------------
def test_document_fetched_once_even_if_two_flows_read_it(rig):
    orders = flow(rig)
    orders.run()
    assert orders.documents.fetches == len(OUTBOUND)
    other = ReceiptDocuments(rig.context())  # e.g. the products flow of the same integration
    for receipt in other.iter_receipts(direction="outbound", since=None):
        with contextlib.suppress(UnsupportedDocument):
            other.document(receipt)
    assert other.fetches == 0
    again = flow(rig)
    again.run(since=None)
    assert again.documents.fetches == 0


def test_dry_run_writes_nothing_and_moves_no_watermark(rig):
    ctx = rig.context(
        mapping=default_mapping("orders"), value_maps=default_value_maps(), dry_run=True
    )
    report = OrdersFlow(ctx).run()
    assert report.counts["create"] > 0 and report.watermark is None
    assert rig.visma_writes() == [] and len(rig.links) == 0


def test_flow_is_registered_and_settings_are_checked(rig):
    assert FLOW_CLASSES["orders"] is OrdersFlow
    from bbvisma.errors import ConfigError

    with pytest.raises(ConfigError, match="missing_sku_policy"):
        flow(rig, missing_sku_policy="ignore")
    with pytest.raises(ConfigError, match="default_customer_number"):
        flow(rig, use_default_debtor=True)


# -- calls: the lookup index, the batch read-back ------------------------------------------------
#: before the rig's first write (the FakeClock starts at 2025-06-02 12:00 UTC)
SINCE = "2025-06-02T11:00:00Z"
DOCUMENT_LISTS = ("/v1/customerinvoice", "/v1/customerCreditNote", "/v1/salesorder")


def spy_reads(rig, monkeypatch) -> list[tuple[str, dict]]:
    """Every GET the Visma.net client sends, with its query (the request log has no query)."""
    reads: list[tuple[str, dict]] = []
    original = rig.visma.get_json

    def spy(path, params=None):
        reads.append((path, dict(params or {})))
        return original(path, params)

    monkeypatch.setattr(rig.visma, "get_json", spy)
    return reads


def document_reads(reads) -> Counter:
    """Reads of documents by kind: ``index`` (list since documents_since), ``lookup`` (by
    reference, per record), ``read_back`` (list since a batch began), ``get`` (one by number)."""
    kinds: Counter = Counter()
    for path, params in reads:
        if path.startswith("/v1/customer/") and path.endswith("/salesorder"):
            kinds["lookup"] += 1
        elif path in DOCUMENT_LISTS:
            since = params.get("createdDateTime") or params.get("lastModifiedDateTime")
            if "externalReference" in params:
                kinds["lookup"] += 1
            else:
                kinds["index" if since and since < "2025-06-02" else "read_back"] += 1
        elif path.startswith(DOCUMENT_LISTS):
            kinds["get"] += 1
    return kinds


def test_with_documents_since_new_receipts_cost_their_creates_and_a_few_pages(
    full_rig, monkeypatch
):
    reads = spy_reads(full_rig, monkeypatch)
    report = full_flow(full_rig, documents_since=SINCE).run()
    created = report.counts["create"]
    assert created == len(INVOICES) + len(CREDIT_NOTES) > OrdersFlow.INDEX_THRESHOLD
    assert len(document_posts(full_rig)) == created
    # per kind (invoices, credit notes): one index read, one read-back of the batch
    assert document_reads(reads) == {"index": 2, "read_back": 2}
    index = [p for path, p in reads if path == "/v1/customerinvoice"][0]
    assert index["createdDateTime"] == "2025-06-01 11:00:00"  # a day before the setting
    assert index["createdDateTimeCondition"] == ">="
    assert all(r.response.get("created") for r in report.results if r.action is Action.CREATE)


def test_without_documents_since_each_receipt_is_looked_up_before_its_create(full_rig, monkeypatch):
    reads = spy_reads(full_rig, monkeypatch)
    report = full_flow(full_rig).run()
    created = report.counts["create"]
    assert document_reads(reads) == {"lookup": created, "read_back": 2}
    looked_up = {p["externalReference"] for path, p in reads if "externalReference" in p}
    assert looked_up == {f"BB-{r.source_key}" for r in report.results if r.target_key}


def test_document_created_by_someone_else_is_a_hit_of_the_index_confirmed_and_adopted(
    full_rig, monkeypatch
):
    made = by_key(full_flow(full_rig, **only("41")).run())["41"].target_key
    full_rig.links = MemoryLinkStore()  # the invoice exists in Visma.net, we know nothing of it
    full_rig.clear_logs()
    reads = spy_reads(full_rig, monkeypatch)
    report = full_flow(full_rig, documents_since=SINCE).run()
    adopted = by_key(report)["41"]
    assert adopted.action is Action.CREATE and adopted.target_key == made
    assert adopted.response == {"target": INVOICE_TARGET, "number": made, "adopted": True}
    refs = [d["externalReference"] for d in full_rig.visma_sim.invoices.values()]
    assert refs.count("BB-41") == 1 and len(refs) == len(set(refs))
    assert len(document_posts(full_rig)) == report.counts["create"] - 1
    # the index holds hashes: its hit is looked up (which gives the number), its misses not
    lookups = [p["externalReference"] for path, p in reads if "externalReference" in p]
    assert lookups == ["BB-41"]


def test_an_index_longer_in_pages_than_the_receipts_to_create_is_not_read(full_rig, monkeypatch):
    """Years of documents since documents_since: reading them would cost more calls than the
    lookups they save; the first page's metadata says so, and the receipts are looked up."""
    full_flow(full_rig, documents_since=SINCE).run()
    full_rig.links = MemoryLinkStore()  # every receipt is to create again
    full_rig.clear_logs()
    full_rig.visma_sim.max_page_size = 1  # 37 documents: 37 pages
    window = {"date_from": "2018-01-01", "date_to": "2020-12-31"}  # 23 receipts
    reads = spy_reads(full_rig, monkeypatch)
    report = full_flow(full_rig, documents_since=SINCE, **window).run()
    index = Counter(path for path, p in reads if p.get("createdDateTime", "Z") < "2025-06-02")
    # 32 invoices: the first page, then no more; 5 credit notes: read (5 pages, 5 lookups saved)
    assert index == {"/v1/customerinvoice": 1, "/v1/customerCreditNote": 5}
    looked_up = [p["externalReference"] for path, p in reads if "externalReference" in p]
    invoices = [r for r in report.results if r.target_key and r.source["target"] == INVOICE_TARGET]
    assert len(invoices) == report.counts["create"] - 3 >= 18
    # invoices: looked up (no index); the 3 credit notes: hits of their index, confirmed
    assert len(looked_up) == report.counts["create"]
    assert document_posts(full_rig) == []  # every one found and adopted


def test_lost_create_answer_is_resolved_by_a_real_lookup_not_by_the_index(full_rig, monkeypatch):
    full_rig.visma_sim.faults.add(
        "drop_after_commit", method="POST", path="^/v2/customerinvoice$", after=5, times=1
    )
    reads = spy_reads(full_rig, monkeypatch)
    report = full_flow(full_rig, documents_since=SINCE).run()
    recovered = [r for r in report.results if (r.response or {}).get("recovered")]
    assert len(recovered) == 1 and report.counts["error"] == 0
    lookups = [p["externalReference"] for path, p in reads if "externalReference" in p]
    assert lookups == [f"BB-{recovered[0].source_key}"]  # the index was read before the POST
    refs = [d["externalReference"] for d in full_rig.visma_sim.invoices.values()]
    assert len(refs) == len(set(refs)) == len(INVOICES)


def test_totals_mismatch_found_by_the_batch_read_back_parks_and_clears_the_hash(
    full_rig, monkeypatch
):
    maps = foreign_vat_maps(default_value_maps())
    maps["vat_codes"]["S:7"] = "01"  # books 7 % lines at 19 %
    reads = spy_reads(full_rig, monkeypatch)
    report = flow(full_rig, maps, missing_sku_policy="create", documents_since=SINCE).run()
    result = by_key(report)["35"]  # taxi ride, 7 %
    assert result.action is Action.PARK and result.cause_key == "data:totals_mismatch"
    assert "18.08 in the source" in result.message
    assert result.target_key in full_rig.visma_sim.invoices
    assert full_rig.links.get("order", "35").content_hash is None  # flagged for a human
    assert full_rig.links.get("order", "41").content_hash is not None
    assert document_reads(reads)["get"] == 0  # checked from the batch's list read
    rerun = flow(full_rig, maps, missing_sku_policy="create").run(since=None)
    assert by_key(rerun)["35"].cause_key == "data:changed_after_sync"  # never passes silently


def test_documents_the_read_back_list_misses_are_read_one_by_one(full_rig, monkeypatch):
    """Our clock an hour ahead of Visma.net's: the first batch's list (since its start by our
    clock) shows none of its documents, which are then read by number; later batches count
    from the creation times Visma.net reported and find theirs in the list."""
    year = {"date_from": "2018-01-01", "date_to": "2018-12-31"}  # invoices only, 3 batches
    ctx = full_rig.context(
        mapping=default_mapping("orders"),
        value_maps=foreign_vat_maps(default_value_maps()),
        settings={"missing_sku_policy": "create", **year},
        batch_size=5,
    )
    ctx.now = lambda: dt.datetime.fromtimestamp(full_rig.clock.now() + 3600, dt.timezone.utc)
    reads = spy_reads(full_rig, monkeypatch)
    report = OrdersFlow(ctx).run()
    assert report.batches == 3 and report.counts == {**report.counts, "create": 13, "park": 2}
    first_batch = {r.target_key for r in report.results[:5] if r.action is Action.CREATE}
    got = {path.rsplit("/", 1)[1] for path, _p in reads if path.startswith(DOCUMENT_LISTS[0] + "/")}
    assert got == first_batch and len(got) == 4
    assert document_reads(reads)["read_back"] == 3


def test_the_lookup_index_of_10_000_documents_keeps_16_bytes_a_document(rig, monkeypatch):
    """Years of documents since documents_since: a dict of reference -> number held about
    150 bytes a document; the index keeps each reference's 64-bit hash."""
    count = 10_000
    orders = flow(rig, documents_since=SINCE)
    orders._indexing, orders._to_create = True, count  # a batch with that much to create

    def documents(target, since, page_size=500):
        for n in range(count):
            meta = {"metadata": {"totalCount": count, "maxPageSize": 500}} if n == 0 else {}
            yield {"externalReference": f"BB-{n}", "referenceNumber": f"{n:06d}", **meta}

    monkeypatch.setattr(orders, "_documents", documents)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        index = orders._lookup_index(INVOICE_TARGET)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert isinstance(index, HashIndex) and len(index) == count
    assert held < 24 * count, f"{held / count:.0f} bytes a document"
    assert "BB-9999" in index and "BB-10000" not in index


def test_a_hit_visma_net_does_not_confirm_is_created_once(full_rig, monkeypatch):
    """The index keeps hashes: a receipt's reference may share one with another document.
    Here every reference does (the index claims them all): each receipt is looked up in
    Visma.net, not found there, and created -- once, never adopted from the index."""
    real = OrdersFlow._lookup_index

    class EveryKeyShared:
        def __init__(self, index):
            self.index = index

        def __contains__(self, key):
            return True

        def add(self, key):
            self.index.add(key)

    def colliding(self, target):
        index = real(self, target)
        return EveryKeyShared(index) if index is not None else None

    monkeypatch.setattr(OrdersFlow, "_lookup_index", colliding)
    reads = spy_reads(full_rig, monkeypatch)
    report = full_flow(full_rig, documents_since=SINCE).run()
    created = [r for r in report.results if r.action is Action.CREATE]
    assert len(created) == len(INVOICES) + len(CREDIT_NOTES)
    assert all(r.response.get("created") for r in created)
    lookups = [p["externalReference"] for path, p in reads if "externalReference" in p]
    assert sorted(lookups) == sorted(f"BB-{r.source_key}" for r in created)
    assert len(document_posts(full_rig)) == len(created)
    sim = full_rig.visma_sim
    refs = [d["externalReference"] for d in [*sim.invoices.values(), *sim.credit_notes.values()]]
    assert len(refs) == len(set(refs)) == len(created)


def test_the_lookup_key_of_a_sales_order_reads_as_no_other_customer_and_reference():
    key = OrdersFlow._lookup_key
    assert key("sales_order", "BB-7", "10001") == "5:10001|BB-7"
    assert key("sales_order", "2|x", "1") != key("sales_order", "x", "1|2")
    assert key(INVOICE_TARGET, "BB-7", "10001") == "BB-7"
    assert key("sales_order", None, "10001") is None


def test_sales_orders_are_indexed_from_the_order_list_of_their_type(full_rig, monkeypatch):
    reads = spy_reads(full_rig, monkeypatch)
    report = full_flow(full_rig, order_target="sales_order", documents_since=SINCE).run()
    assert report.counts["create"] == len(INVOICES) + len(CREDIT_NOTES) - 1
    # orders carry no tax details: the HUF sample's whole-forint VAT differs, and says so
    assert by_key(report)[HUF_RECEIPT].cause_key == "data:totals_mismatch"
    assert len(full_rig.visma_sim.orders) == len(INVOICES)
    orders = [p for path, p in reads if path == "/v1/salesorder"]
    assert [p["lastModifiedDateTime"] for p in orders] == ["2025-06-01 11:00:00", ANY_TIME]
    assert all(p["orderType"] == "SO" for p in orders)
    assert document_reads(reads) == {"index": 2, "read_back": 2}  # orders and credit notes


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2025-06-02T11:00:00Z", dt.datetime(2025, 6, 2, 11, tzinfo=dt.timezone.utc)),
        ("2025-06-02 13:00:00+02:00", dt.datetime(2025, 6, 2, 11, tzinfo=dt.timezone.utc)),
        ("2025-06-02T11:00:00", dt.datetime(2025, 6, 2, 11, tzinfo=dt.timezone.utc)),
        (dt.datetime(2025, 6, 2, 11), dt.datetime(2025, 6, 2, 11, tzinfo=dt.timezone.utc)),
        ("2025-06-02", dt.datetime(2025, 6, 2, tzinfo=dt.timezone.utc)),
        (None, None),
        ("", None),
    ],
)
def test_documents_since_is_read_as_utc_unless_it_says_otherwise(value, expected):
    assert parse_documents_since(value, NOW) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [("30.11.2026", "ISO 8601"), ("yesterday", "ISO 8601"), ("2025-06-03T00:00:00Z", "future")],
)
def test_documents_since_that_is_no_date_or_in_the_future_is_refused(rig, value, message):
    from bbvisma.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        flow(rig, documents_since=value)


# -- end to end over real loopback HTTP ---------------------------------------------------------
def test_orders_end_to_end_over_loopback_http():
    rig = make_rig(visma_seed=foreign_vat_seed())
    window = {"date_from": "2020-01-01", "date_to": "2020-12-31"}  # 3 invoices, 1 credit note
    with over_loopback_http(rig, visma_seed=foreign_vat_seed()):
        first = full_flow(rig, **window).run()
        rig.clear_logs()
        second = full_flow(rig, **window).run(since=None)
    assert first.counts["create"] == 4 and len(rig.visma_sim.customers) == 1 + 3
    assert second.counts["skip"] == 4 and rig.visma_writes() == []
    credit = by_key(first)["16"]
    assert rig.visma_sim.credit_notes[credit.target_key]["amount"] == 3.57
    assert rig.contract_violations() == []
