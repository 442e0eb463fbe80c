"""Stock flow against both simulators: quantities derived from e-invoices -> one adjustment."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from derived_fixtures import (
    add_document,
    document,
    line,
    reference,
    run_products,
    run_stock,
    value_maps,
    warm_documents,
)
from flow_fixtures import make_rig

from bbvisma.engine import Action
from bbvisma.flows.derived import StockLedger

ADJUSTMENTS = "/v1/inventoryadjustment"


def on_hand(rig, sku: str, warehouse: str = "MAIN") -> Decimal:
    rows = rig.visma.get_inventory_summary(sku, warehouse=warehouse)
    return Decimal(str(rows[0]["onHand"])) if rows else Decimal(0)


def adjustment_posts(rig):
    return [e for e in rig.visma_writes() if e["path"] == ADJUSTMENTS and e["method"] == "POST"]


def summary_reads(rig):
    return [e for e in rig.visma_requests() if e["path"].startswith("/v1/inventorysummary/")]


# --------------------------------------------------------------------------------------------
# documents: a widget bought, returned, sold and credited
# --------------------------------------------------------------------------------------------
def _template():
    return reference("einvoices/ubl/ubl-21-en16931.xml")


def _doc(number, day, lines, type_code="380"):
    return document(
        _template(),
        lines,
        number=number,
        issue_date=dt.date(2025, 5, day),
        type_code=type_code,
    )


def _line(sku, quantity, price="4.00", **kw):
    return line(_template().lines[0], sku=sku, quantity=quantity, price=price, **kw)


@pytest.fixture
def widget_rig():
    """The default seed plus: items WIDGET (vendor part number SUP-W1) and GADGET, a purchase
    of 20 (SUP-W1) + 5 (SUP-W2, mapped by value map) + 4 of an unknown supplier SKU, a
    supplier credit note of 2, a sale of 7 WIDGET and 2 GADGET, a customer credit note of 3
    WIDGET. (The seed's own SKUs are no items here: no products run.)"""
    rig = make_rig()
    warm_documents(rig)
    rig.visma.create_inventory(
        {"inventoryNumber": "WIDGET", "description": "Widget", "itemClass": "WAREN"}
    )
    rig.visma.create_inventory(
        {"inventoryNumber": "GADGET", "description": "Gadget", "itemClass": "WAREN"}
    )
    rig.visma.create_cross_reference("WIDGET", {"alternateType": "VPN", "alternateID": "SUP-W1"})
    rig.purchase_receipt = add_document(
        rig,
        _doc(
            "E-1",
            1,
            [_line("SUP-W1", "20", "3.50"), _line("SUP-W2", "5", "3.60"), _line("SUP-X", "4")],
        ),
        direction="inbound",
    )
    add_document(rig, _doc("E-2", 2, [_line("SUP-W1", "2")], "381"), direction="inbound")
    add_document(rig, _doc("A-1", 3, [_line("WIDGET", "7", "9.90"), _line("GADGET", "2")]))
    add_document(rig, _doc("G-1", 4, [_line("WIDGET", "3", "9.90")], "381"))
    rig.clear_logs()
    return rig


def widget_maps():
    return value_maps(supplier_skus={"SUP-W2": "WIDGET"})


# --------------------------------------------------------------------------------------------
def test_incoming_outgoing_and_credit_notes_add_up_per_sku(widget_rig):
    flow, result = run_stock(
        widget_rig, maps=widget_maps(), stock_mode="on_hand", opening_balances={"WIDGET": 10}
    )
    assert result.action is Action.CREATE
    position = next(p for p in result.source["positions"] if p["sku"] == "WIDGET")
    assert position == {
        "sku": "WIDGET",
        "opening": "10",
        "purchased": "25",  # 20 via the VPN cross-reference + 5 via value map supplier_skus
        "returned_to_suppliers": "2",
        "sold": "7",
        "returned_by_customers": "3",
        "derived": "29",
    }
    assert on_hand(widget_rig, "WIDGET") == Decimal(29)
    # the purchase price of the newest incoming invoice values the receipt into stock
    line = next(
        x
        for x in result.payload["adjustment"]["adjustmentLines"]
        if x["inventoryNumber"] == "WIDGET"
    )
    assert line["quantity"] == 29 and line["unitCost"] == 3.5
    # the unknown supplier SKU is reported, not guessed
    assert result.source["unresolved_supplier_skus"] == {
        "SUP-X": {"quantity": "4", "receipts": [widget_rig.purchase_receipt]}
    }
    assert "1 supplier SKU(s) match no item" in result.message and "SUP-X" in result.message


def test_one_released_adjustment_per_run_with_a_line_per_sku(widget_rig):
    _flow, result = run_stock(widget_rig, maps=widget_maps(), stock_mode="on_hand")
    [post] = adjustment_posts(widget_rig)
    assert post["status"] == 201
    [adjustment] = widget_rig.visma_sim.adjustments.values()
    assert adjustment["status"] == "Released"
    assert adjustment["externalReference"] == result.payload["adjustment"]["externalReference"]
    skus = [x["inventoryItem"]["number"] for x in adjustment["adjusmentLines"]]
    assert sorted(skus) == ["GADGET", "WIDGET"]
    assert result.message.startswith(f"adjustment {adjustment['referenceNumber']} with")


def test_second_run_makes_no_call_at_all_to_write(widget_rig):
    run_stock(widget_rig, maps=widget_maps())
    widget_rig.clear_logs()
    _flow, second = run_stock(widget_rig, maps=widget_maps())
    assert second.action is Action.SKIP
    assert widget_rig.visma_writes() == []
    assert summary_reads(widget_rig) == []  # nothing changed in BB: no quantity is read either


def test_available_minus_reserved_subtracts_sales_reservations(widget_rig):
    widget_rig.visma.create_sales_order(
        {
            "orderType": "SO",
            "customer": "10000",
            "lines": [{"operation": "Insert", "inventoryNumber": "WIDGET", "quantity": 4}],
        }
    )
    _flow, result = run_stock(
        widget_rig,
        maps=widget_maps(),
        stock_mode="available_minus_reserved",
        opening_balances={"WIDGET": 10},
    )
    assert result.source["checked"]["WIDGET"] == {
        "on_hand": "0",
        "so_booked": "4",
        "target": "25",
        "difference": "25",
    }
    assert on_hand(widget_rig, "WIDGET") == Decimal(25)


def test_on_hand_mode_ignores_reservations(widget_rig):
    widget_rig.visma.create_sales_order(
        {
            "orderType": "SO",
            "customer": "10000",
            "lines": [{"operation": "Insert", "inventoryNumber": "WIDGET", "quantity": 4}],
        }
    )
    run_stock(widget_rig, maps=widget_maps(), stock_mode="on_hand", opening_balances={"WIDGET": 10})
    assert on_hand(widget_rig, "WIDGET") == Decimal(29)


def test_unmanaged_mode_flags_items_non_stock_and_writes_no_quantity(widget_rig):
    _flow, result = run_stock(widget_rig, maps=widget_maps(), stock_mode="unmanaged")
    assert adjustment_posts(widget_rig) == []
    assert widget_rig.visma_sim.inventory["WIDGET"]["type"] == "NonStockItem"
    assert widget_rig.visma_sim.inventory["WIDGET"]["stockItem"] is False
    assert "flagged non-stock" in result.message and "WIDGET" in result.message
    widget_rig.clear_logs()
    _flow, again = run_stock(widget_rig, maps=widget_maps(), stock_mode="unmanaged")
    assert again.action is Action.SKIP and widget_rig.visma_writes() == []


def test_no_adjustment_when_visma_already_holds_the_derived_quantity():
    rig = make_rig()
    warm_documents(rig)
    rig.visma.create_inventory(
        {"inventoryNumber": "WIDGET", "description": "Widget", "itemClass": "WAREN"}
    )
    add_document(rig, _doc("A-1", 3, [_line("WIDGET", "7")]))
    # Visma.net already counts 13 (a stock take): 20 - 7 sold = 13 as well
    reference_number = rig.visma.create_inventory_adjustment(
        {
            "adjustmentLines": [
                {
                    "operation": "Insert",
                    "inventoryNumber": "WIDGET",
                    "warehouseId": "MAIN",
                    "quantity": 13,
                }
            ]
        }
    )
    rig.visma.release_inventory_adjustment(reference_number)
    # only WIDGET is an item: the seed's SKUs are not in Visma.net (no products run)
    rig.clear_logs()
    _flow, result = run_stock(rig, stock_mode="on_hand", opening_balances={"WIDGET": 20})
    assert result.action is Action.CREATE
    assert result.payload["adjustment"] is None and adjustment_posts(rig) == []
    assert result.message.startswith("Visma.net already holds the derived quantities")
    assert result.source["checked"]["WIDGET"]["difference"] == "0"


def test_only_skus_whose_derived_quantity_changed_are_read_and_adjusted(widget_rig):
    run_stock(widget_rig, maps=widget_maps(), stock_mode="on_hand")
    add_document(widget_rig, _doc("A-2", 9, [_line("WIDGET", "5")]))
    widget_rig.clear_logs()
    _flow, result = run_stock(widget_rig, maps=widget_maps(), stock_mode="on_hand")
    assert result.action is Action.UPDATE
    assert result.payload["checked_skus"] == ["WIDGET"]
    assert [e["path"] for e in summary_reads(widget_rig)] == ["/v1/inventorysummary/WIDGET"]
    [line] = result.payload["adjustment"]["adjustmentLines"]
    assert line["inventoryNumber"] == "WIDGET" and line["quantity"] == -5
    assert len(widget_rig.visma_sim.adjustments) == 2
    # the second adjustment has its own, deterministic reference (sequence 2)
    assert result.payload["adjustment"]["externalReference"].startswith("BBSTOCK-MAIN-0002-")


def test_lost_create_answer_is_found_by_external_reference_not_sent_twice(widget_rig):
    widget_rig.visma_sim.faults.add("drop_after_commit", method="POST", path=f"^{ADJUSTMENTS}$")
    _flow, result = run_stock(widget_rig, maps=widget_maps(), stock_mode="on_hand")
    assert result.action is Action.CREATE
    assert len(widget_rig.visma_sim.adjustments) == 1
    [adjustment] = widget_rig.visma_sim.adjustments.values()
    assert adjustment["status"] == "Released"
    assert "found and released" in result.message


def test_seed_run_after_products_adjusts_every_stock_item():
    rig = make_rig()
    warm_documents(rig)
    run_products(rig)
    rig.clear_logs()
    _flow, result = run_stock(rig, stock_mode="on_hand", opening_balances={"TB100A4": 100})
    # TB100A4: 100 - 20 (receipt 32) - 20 (receipt 37) = 60
    assert result.source["checked"]["TB100A4"]["target"] == "60"
    assert on_hand(rig, "TB100A4") == Decimal(60)
    # ZS997: sold 100, corrected invoice -5 takes 5 back
    assert on_hand(rig, "ZS997") == Decimal(-95)
    # services are no stock items; SKUs the products flow parked are not in Visma.net
    assert "1" in result.source["non_stock_items"] and "KR3M" in result.source["not_in_visma"]
    # API calls for the record: one summary read per stock item, list, create, release
    methods = [(e["method"], e["path"].split("/")[2]) for e in result.exchanges]
    assert methods.count(("GET", "inventorysummary")) == len(result.payload["checked_skus"])
    assert methods[-3:] == [
        ("GET", "inventoryadjustment"),
        ("POST", "inventoryadjustment"),
        ("POST", "inventoryadjustment"),
    ]


def test_ledger_reverses_credit_notes_and_signs_of_corrections():
    ledger = StockLedger(opening={"A": Decimal(1)})
    ledger.add_outgoing("1", _doc("X", 1, [_line("A", "4")]))
    ledger.add_outgoing("2", _doc("Y", 2, [_line("A", "-1")], "384"))  # a correction takes 1 back
    ledger.add_outgoing("3", _doc("Z", 3, [_line("A", "2")], "381"))
    assert ledger.positions["A"].derived == Decimal(1 - 4 + 1 + 2)
