"""Shipments flow against both simulators: receipts sent as sales orders -> confirmed shipments."""

from __future__ import annotations

import pytest
from derived_fixtures import (
    add_document,
    reference,
    results_by_key,
    run_products,
    value_maps,
    warm_documents,
)
from flow_fixtures import make_rig

from bbvisma.engine import Action
from bbvisma.flows.defaults import default_mapping
from bbvisma.flows.orders import OrdersFlow
from bbvisma.flows.shipments import ShipmentsFlow

SETTINGS = {"default_carrier": "DHL", "package_box_id": "KARTON"}


def run_orders(rig):
    flow = OrdersFlow(
        rig.context(
            mapping=default_mapping("orders"),
            value_maps=value_maps(),
            settings={"order_target": "sales_order"},
        )
    )
    return flow.run()


def run_shipments(rig, **settings):
    flow = ShipmentsFlow(
        rig.context(
            mapping=default_mapping("shipments"),
            value_maps=value_maps(),
            settings={**SETTINGS, **settings},
        )
    )
    return flow.run()


@pytest.fixture
def ordered_rig():
    """Products synced and every outgoing invoice sent as a sales order (type SO)."""
    rig = make_rig()
    warm_documents(rig)
    run_products(rig)
    run_orders(rig)
    rig.clear_logs()
    return rig


def order_of(rig, receipt_id: str) -> dict:
    number = rig.links.get("order", receipt_id).target_key
    return rig.visma_sim.orders[("SO", number)]


def shipment_of(rig, receipt_id: str) -> dict:
    return rig.visma_sim.shipments[rig.links.get("shipment", receipt_id).target_key]


def lines(shipment: dict) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in shipment["shipmentDetailLines"]:
        out[line["inventoryNumber"]] = out.get(line["inventoryNumber"], 0) + line["shippedQty"]
    return out


# --------------------------------------------------------------------------------------------
def test_full_run_ships_and_confirms_the_sales_orders_of_product_invoices(ordered_rig):
    report = run_shipments(ordered_rig)
    results = results_by_key(report)
    # receipt 39: delivery 2018-08-05, despatch advice L87654321012345
    assert results["39"].action is Action.CREATE
    shipment = shipment_of(ordered_rig, "39")
    assert shipment["status"] == "Confirmed"
    assert shipment["shipVia"]["id"] == "DHL"  # no carrier named: the default carrier
    assert shipment["shipmentDate"].startswith("2018-08-05")
    assert [p["trackingNumber"] for p in shipment["shipmentPackageLines"]] == ["L87654321012345"]
    assert lines(shipment)["GZ250"] == 60 and lines(shipment)["ZS997"] == 100
    assert order_of(ordered_rig, "39")["status"] == "Completed"
    # invoices with services only have nothing physical to ship: a skip that says so
    assert results["3"].action is Action.SKIP
    assert "no product lines" in results["3"].message
    # receipts sent as invoices or credit notes are no shipments at all
    assert "6" not in results and "16" not in results
    # API calls of a shipped record: read order, create, read shipment (+ETag), update, confirm
    calls = [(e["method"], e["path"]) for e in results["37"].exchanges]
    number = results["37"].target_key
    order = ordered_rig.links.get("order", "37").target_key
    assert calls[:3] == [
        ("GET", f"/v1/salesorder/SO/{order}"),
        ("POST", f"/v1/salesorder/{order}/action/createShipment"),
        ("GET", f"/v1/shipment/{number}"),
    ]
    assert calls[-2:] == [
        ("PUT", f"/v1/shipment/{number}"),
        ("POST", f"/v1/shipment/{number}/action/confirmShipment"),
    ]


def test_second_run_makes_no_write_call(ordered_rig):
    first = run_shipments(ordered_rig)
    assert first.counts["create"] >= 5
    ordered_rig.clear_logs()
    second = run_shipments(ordered_rig)
    assert second.counts["create"] == second.counts["update"] == 0
    assert ordered_rig.visma_writes() == []


def test_partial_delivery_ships_only_what_the_invoice_covers(ordered_rig):
    order = order_of(ordered_rig, "37")  # invoice 37: 20 TB100A4, 50 ARNR2
    tb = next(x for x in order["lines"] if x["inventory"]["number"] == "TB100A4")
    tb["quantity"] = tb["openQty"] = 30.0  # the order asks for 30, the invoice delivers 20
    report = run_shipments(ordered_rig)
    assert results_by_key(report)["37"].action is Action.CREATE
    assert lines(shipment_of(ordered_rig, "37"))["TB100A4"] == 20
    tb = next(
        x for x in order_of(ordered_rig, "37")["lines"] if x["inventory"]["number"] == "TB100A4"
    )
    assert tb["openQty"] == 10  # the rest stays open on the order (back order)
    assert order_of(ordered_rig, "37")["status"] == "BackOrder"


def test_stock_items_on_the_order_but_not_on_the_invoice_are_not_shipped(ordered_rig):
    order = order_of(ordered_rig, "37")
    extra = dict(order["lines"][0])
    extra.update(
        lineNbr=99,
        inventory={"number": "GZ250", "description": "Gelierzucker"},
        quantity=3.0,
        openQty=3.0,
        qtyOnShipments=0.0,
    )
    order["lines"].append(extra)
    report = run_shipments(ordered_rig)
    result = results_by_key(report)["37"]
    assert lines(shipment_of(ordered_rig, "37"))["GZ250"] == 0
    assert "GZ250: on the order but not on the invoice, not shipped" in result.message


def test_a_split_the_order_cannot_take_is_logged_clearly(ordered_rig):
    order = order_of(ordered_rig, "37")
    tb = next(x for x in order["lines"] if x["inventory"]["number"] == "TB100A4")
    tb["quantity"] = tb["openQty"] = 15.0  # the invoice delivers 20, only 15 are open
    report = run_shipments(ordered_rig)
    result = results_by_key(report)["37"]
    assert result.action is Action.CREATE
    assert lines(shipment_of(ordered_rig, "37"))["TB100A4"] == 15
    assert (
        "TB100A4: the invoice delivers 5 more than order "
        f"{order['orderNo']} has open -- this split cannot be represented" in result.message
    )


def test_nothing_open_on_the_order_parks_before_creating_a_shipment(ordered_rig):
    for line in order_of(ordered_rig, "37")["lines"]:
        line["openQty"] = 0.0
    report = run_shipments(ordered_rig)
    result = results_by_key(report)["37"]
    assert result.action is Action.PARK and result.cause_key == "data:nothing_to_ship"
    assert not [e for e in result.exchanges if e["method"] == "POST"]


def test_carrier_named_in_the_document_is_mapped_through_the_value_map():
    rig = make_rig()
    warm_documents(rig)
    run_products(rig)
    doc = reference("einvoices/zugferd-pdf/zugferd_2p0_EXTENDED_Warenrechnung.pdf")
    doc = doc.model_copy(
        update={"number": "R-UPS-1", "notes": [*doc.notes, "Versand mit UPS Standard"]}
    )
    receipt = add_document(rig, doc, counterparty="MUSTER-KUNDE GMBH")
    run_orders(rig)
    report = run_shipments(rig)
    assert results_by_key(report)[receipt].action is Action.CREATE
    assert shipment_of(rig, receipt)["shipVia"]["id"] == "UPS"
    assert shipment_of(rig, "39")["shipVia"]["id"] == "DHL"


def test_tracking_without_a_box_is_reported_not_dropped_silently(ordered_rig):
    report = run_shipments(ordered_rig, package_box_id=None)
    result = results_by_key(report)["39"]
    assert result.action is Action.CREATE
    assert "tracking value L87654321012345 not stored" in result.message
    assert shipment_of(ordered_rig, "39")["shipmentPackageLines"] == []


def test_stale_etag_is_reread_and_the_update_retried_once(ordered_rig):
    ordered_rig.visma_sim.faults.add("status", method="PUT", path=r"^/v1/shipment/", status=412)
    report = run_shipments(ordered_rig)
    result = results_by_key(report)["1"]
    assert result.action is Action.CREATE
    puts = [e for e in result.exchanges if e["method"] == "PUT"]
    assert [e["status"] for e in puts] == [412, 204]
    assert shipment_of(ordered_rig, "1")["status"] == "Confirmed"


def test_lost_create_shipment_answer_adopts_the_shipment_instead_of_a_second(ordered_rig):
    ordered_rig.visma_sim.faults.add(
        "drop_after_commit", method="POST", path=r"/action/createShipment$"
    )
    report = run_shipments(ordered_rig)
    result = results_by_key(report)["1"]
    assert result.action is Action.CREATE
    order = order_of(ordered_rig, "1")
    assert len(order["shipments"]) == 1
    assert shipment_of(ordered_rig, "1")["status"] == "Confirmed"


def test_lost_confirm_is_finished_by_the_next_run(ordered_rig):
    ordered_rig.visma_sim.faults.add(
        "drop_after_commit", method="POST", path=r"/action/confirmShipment$"
    )
    first = results_by_key(run_shipments(ordered_rig))["1"]
    assert first.action is Action.ERROR  # answer lost: nothing is claimed
    second = results_by_key(run_shipments(ordered_rig))["1"]
    assert second.action is Action.CREATE
    assert "found confirmed" in second.message
    assert len(order_of(ordered_rig, "1")["shipments"]) == 1
