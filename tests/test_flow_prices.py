"""Prices flow against both simulators: base prices written, class prices' gap reported."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from decimal import Decimal

import pytest
from derived_fixtures import (
    add_document,
    document,
    file_fetches,
    line,
    reference,
    results_by_key,
    run_products,
    run_stock,
    value_maps,
    warm_documents,
)
from flow_fixtures import make_rig

from bbvisma.engine import Action, SourceItem
from bbvisma.errors import DataError, NotFound
from bbvisma.flows.defaults import default_mapping
from bbvisma.flows.derived import PriceBook
from bbvisma.flows.orders import OrdersFlow
from bbvisma.flows.prices import GAP_MESSAGE, PriceRecord, PricesFlow


def run_orders(rig, **settings):
    flow = OrdersFlow(
        rig.context(mapping=default_mapping("orders"), value_maps=value_maps(), settings=settings)
    )
    return flow.run()


def prices_flow(rig) -> PricesFlow:
    return PricesFlow(rig.context(mapping=default_mapping("prices"), value_maps=value_maps()))


@pytest.fixture
def sold_rig():
    """Products and orders synced; customer 10020 (Kunden AG Mitte, receipts 30/32/37) moved to
    the price class HAENDLER, every other customer of the orders is in STANDARD."""
    rig = make_rig()
    warm_documents(rig)
    run_products(rig)
    run_orders(rig)
    rig.visma.update_customer("10020", {"priceClassId": "HAENDLER"})
    rig.clear_logs()
    return rig


def test_class_prices_are_reported_as_a_gap_never_pretended(sold_rig):
    report = prices_flow(sold_rig).run()
    results = results_by_key(report)
    haendler = results["TB100A4@HAENDLER"]
    assert haendler.action is Action.SKIP
    assert haendler.message.startswith(
        "Visma.net's API offers no endpoint to write a sales price for price class HAENDLER; "
        "base price written instead"
    )
    assert "paid 9.9 EUR on invoice 471102 of 2018-03-05 (receipt 37)" in haendler.message
    standard = results["ZS997@STANDARD"]
    assert standard.message.startswith(GAP_MESSAGE.format(price_class="STANDARD"))
    # every class record is a skip with the gap message: none claims a write
    class_results = [r for k, r in results.items() if "@" in k]
    assert class_results and all(r.action is Action.SKIP for r in class_results)
    # nothing was written: the base prices equal what the products flow sent, and no
    # discount or sales price endpoint was touched
    assert sold_rig.visma_writes() == []


def test_second_run_makes_no_write_call_and_reports_each_gap_once(sold_rig):
    prices_flow(sold_rig).run()
    sold_rig.clear_logs()
    report = prices_flow(sold_rig).run()
    assert sold_rig.visma_writes() == []
    result = results_by_key(report)["TB100A4@HAENDLER"]
    assert result.action is Action.SKIP
    assert result.message == "price class HAENDLER: reported before, unchanged"


def test_base_price_is_written_when_visma_differs(sold_rig):
    sold_rig.visma_sim.inventory["TB100A4"]["defaultPrice"] = 1.0
    report = prices_flow(sold_rig).run()
    result = results_by_key(report)["TB100A4"]
    assert result.action is Action.CREATE
    assert result.message == "base price 9.9 EUR written (was 1)"
    assert sold_rig.visma_sim.inventory["TB100A4"]["defaultPrice"] == pytest.approx(9.9)
    puts = [e for e in sold_rig.visma_writes() if e["method"] == "PUT"]
    assert [e["path"] for e in puts] == ["/v1/inventory/TB100A4"]
    # API calls for the record: the write only (items, customers and price list are read
    # once per run, outside the records)
    assert [(e["method"], e["path"]) for e in result.exchanges] == [
        ("PUT", "/v1/inventory/TB100A4")
    ]


def test_base_price_equal_to_visma_is_a_skip_without_call(sold_rig):
    report = prices_flow(sold_rig).run()
    result = results_by_key(report)["TB100A4"]
    assert (
        result.action is Action.SKIP and result.message == "base price 9.9 EUR already in Visma.net"
    )
    assert result.exchanges == []


def test_missing_product_parks_before_anything_else(sold_rig):
    report = prices_flow(sold_rig).run()
    results = results_by_key(report)
    # KR3M was parked by the products flow (unit MTK unmapped): no item, no price
    assert results["KR3M"].action is Action.PARK
    assert results["KR3M"].cause_key == "data:missing_item:KR3M"
    assert "run the products flow first" in results["KR3M"].message


def test_check_order_is_product_then_price_class(sold_rig):
    flow = prices_flow(sold_rig)
    product = flow.record("TB100A4").product
    unknown_class = PriceRecord("TB100A4", "VIP", product, flow.record("TB100A4@HAENDLER").point)
    with pytest.raises(DataError) as caught:
        flow.build(SourceItem(unknown_class.key, None, unknown_class), None)
    assert caught.value.cause_key == "data:unknown_price_class:VIP"
    missing = PriceRecord("NOPE", "VIP", product.model_copy(update={"sku": "NOPE"}))
    with pytest.raises(DataError) as caught:
        flow.build(SourceItem(missing.key, None, missing), None)
    assert caught.value.cause_key == "data:missing_item:NOPE"  # the product is checked first


def test_a_record_fetched_by_its_key_is_the_record_the_run_reads(sold_rig):
    """Records are built on demand (never kept); a replay fetches one by its key, base
    (``SKU``) or class (``SKU@class``), and must get the same record the run read."""
    flow = prices_flow(sold_rig)
    records = list(flow.records())
    assert {r.price_class for r in records} >= {None, "HAENDLER", "STANDARD"}
    for record in records:
        assert flow.fetch_item(record.key).data == record
    with pytest.raises(NotFound):
        flow.fetch_item("TB100A4@VIP")


def test_class_price_equal_to_visma_price_list_is_a_quiet_skip(sold_rig):
    sold_rig.visma_sim.sales_prices.append(
        {
            "recordId": 2,
            "priceType": "CustomerPriceClass",
            "priceCode": "HAENDLER",
            "inventoryId": "TB100A4",
            "uoM": "STK",
            "price": 9.9,
            "currency": "EUR",
            "effectiveDate": "2025-01-01T00:00:00",
            "lastModifiedDateTime": "2025-01-01T00:00:00",
        }
    )
    report = prices_flow(sold_rig).run()
    result = results_by_key(report)["TB100A4@HAENDLER"]
    assert result.action is Action.SKIP
    assert result.message == "price class HAENDLER paid 9.9 EUR, as Visma.net's price list says"


def test_newest_invoice_of_a_class_wins():
    ubl = reference("einvoices/ubl/ubl-21-en16931.xml")
    template = ubl.lines[0]
    book = PriceBook()
    for receipt, day, price, cls in (("1", 1, "10", "A"), ("2", 3, "8", "A"), ("3", 2, "9", "A")):
        doc = document(
            ubl,
            [line(template, sku="X", price=price)],
            number=receipt,
            issue_date=dt.date(2025, 5, day),
        )
        book.add(receipt, doc, cls)
    credit = document(
        ubl,
        [line(template, sku="X", price="1")],
        number="4",
        issue_date=dt.date(2025, 6, 1),
        type_code="381",
    )
    book.add("4", credit, "A")  # a credit note is no price paid
    assert book.by_class[("X", "A")].price == Decimal("8")


def test_products_stock_prices_after_orders_fetch_each_receipt_file_at_most_once():
    rig = make_rig()
    run_orders(rig)
    run_products(rig)
    run_stock(rig)
    prices_flow(rig).run()
    fetched = Counter(file_fetches(rig))
    assert fetched and max(fetched.values()) == 1
    # orders read every outgoing file; stock added only the incoming receipts
    outgoing = {r.id_by_customer for r in rig.bb.iter_receipts(list_direction="outbound")}
    incoming = {r.id_by_customer for r in rig.bb.iter_receipts(list_direction="inbound")}
    assert set(fetched) == outgoing | incoming


def test_a_receipt_changed_in_bb_is_fetched_again_once():
    rig = make_rig()
    run_products(rig)
    rig.bb_sim.modify_receipt(rig.api_key, 37, payment_date="2018-04-01")
    prices_flow(rig).run()
    run_stock(rig)
    fetched = Counter(file_fetches(rig))
    assert fetched["37"] == 2 and fetched["32"] == 1


def test_receipts_not_sent_by_the_orders_flow_only_count_for_base_prices():
    rig = make_rig()
    warm_documents(rig)
    run_products(rig)
    add_document(
        rig,
        document(
            reference("einvoices/zugferd-pdf/zugferd_2p0_EN16931_SEPA_Prenotification.pdf"),
            [
                line(
                    reference("einvoices/zugferd-pdf/XRECHNUNG_Einfach.pdf").lines[0],
                    sku="TB100A4",
                    price="5",
                )
            ],
            number="X-1",
            issue_date=dt.date(2025, 1, 1),
        ),
    )
    flow = prices_flow(rig)
    report = flow.run()
    assert not [k for k in results_by_key(report) if "@" in k]  # no order links: no classes
    assert flow.unclassified["not_sent_by_orders_flow"] > 0
    assert results_by_key(report)["TB100A4"].message == "base price 5 EUR written (was 9.9)"
