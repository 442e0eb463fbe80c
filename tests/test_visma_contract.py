"""The Visma.net simulator and client held to the published OpenAPI document.

* every route the simulator serves is an operation of the spec;
* a scenario that calls every client method and every simulated route is recorded by a
  fixture; each answer is validated against the spec's response schema for its operation and
  status, each query parameter against the operation's parameters (:class:`ContractGuard`);
* the write bodies :func:`wrap_values` builds validate against the spec's request schemas;
* a deliberately wrong request is rejected with the real error shape, naming the field;
* the guard itself is shown to catch a broken answer (it is not a test that cannot fail).
"""

from __future__ import annotations

import datetime as dt

import pytest

from bbvisma.simulators.common import FakeClock, sim_http_client
from bbvisma.simulators.vismanet import (
    ERROR_KEYS,
    ROUTES,
    ContractGuard,
    VismaSimulator,
    VismaSpec,
)
from bbvisma.vismanet import VismaClient, wrap_values

BASE = "http://127.0.0.1:8072"


@pytest.fixture(scope="module")
def spec() -> VismaSpec:
    return VismaSpec.shared()


def make_client(app, clock: FakeClock) -> VismaClient:
    return VismaClient(
        base_url=BASE,
        token_url=BASE + "/connect/token",
        client_id="bbvisma-demo",
        client_secret="demo-secret-not-for-production",
        tenant_id="6c4a3f0e-demo-tenant",
        company_id="DEMO1",
        http_client=sim_http_client(app, BASE),
        clock=clock.now,
        sleep=clock.sleep,
    )


CUSTOMER = {
    "name": "Nordwind Bürobedarf GmbH",
    "status": "Active",
    "customerClassId": "INLAND",
    "creditTermsId": "14S2",
    "priceClassId": "HAENDLER",
    "currencyId": "EUR",
    "corporateId": "HRB 4711",
    "vatRegistrationId": "DE987654321",
    "mainAddress": {
        "addressLine1": "Hafenstraße 5",
        "postalCode": "20457",
        "city": "Hamburg",
        "countryId": "DE",
    },
    "mainContact": {
        "name": "Erika Muster",
        "email": "einkauf@nordwind.example",
        "phone1": "+49 40 123",
    },
    "invoiceAddress": {
        "addressLine1": "Postfach 12",
        "postalCode": "20001",
        "city": "Hamburg",
        "countryId": "DE",
    },
    "defaultPaymentMethod": {"paymentMethodId": "LS", "isDefault": True},
    "attributeLines": [],
    "overrideWithClassValues": False,
}
ITEM = {
    "inventoryNumber": "PAP-A4-500",
    "description": "Kopierpapier A4, 500 Blatt",
    "body": "80 g/m², hochweiß",
    "itemClass": "WAREN",
    "type": "FinishedGoodItem",
    "status": "Active",
    "vatCode": "01",
    "defaultPrice": 4.99,
    "baseUnit": "STK",
    "salesUnit": "STK",
    "defaultWarehouse": "MAIN",
    "packaging": {"baseItemWeight": 2.5, "weightUOM": "KG"},
    "attributeLines": [
        {"attributeId": "FARBE", "attributeValue": "WEISS"},
        {"attributeId": "MATERIAL", "attributeValue": "Recyclingpapier"},
    ],
}
ORDER_LINES = [
    {
        "operation": "Insert",
        "inventoryNumber": "PAP-A4-500",
        "quantity": 10,
        "unitPrice": 4.5,
        "discountPercent": 5,
        "warehouse": "MAIN",
        "lineDescription": "Kopierpapier",
    },
]


def scenario(client: VismaClient, guard: ContractGuard) -> None:
    """Call every client method and every route the simulator serves."""
    raw = sim_http_client(guard, BASE)
    token = client._access_token()  # the scenario's raw calls reuse the client's token
    headers = {"Authorization": f"Bearer {token}", "ipp-company-id": "DEMO1"}

    def get(path, **params):
        response = raw.get(path, headers=headers, params=params)
        assert response.status_code == 200, (path, response.text)
        return response.json()

    client.check_connection()
    number = client.create_customer(CUSTOMER)
    client.update_customer(number, {"mainContact": {"phone2": "+49 40 456"}})
    client.get_customer(number)
    list(client.list_customers(email="einkauf@nordwind.example"))
    list(
        client.list_customers(
            name="Nordwind Bürobedarf GmbH",
            status="Active",
            vat_registration_id="DE987654321",
            modified_since=dt.date(2025, 1, 1),
        )
    )
    client.find_customer_by_corporate_id("HRB 4711")
    client.create_attribute(
        {
            "attributeID": "GROESSE",
            "description": "Größe",
            "controlType": "Combo",
            "details": [{"operation": "Insert", "valueId": "A4", "description": "DIN A4"}],
        }
    )
    client.get_attribute("GROESSE")
    list(client.list_attributes())
    client.ensure_inventory(ITEM)
    client.update_inventory("PAP-A4-500", {"defaultPrice": 5.49})
    client.get_inventory("PAP-A4-500")
    list(
        client.list_inventory(
            status="Active",
            inventory_types=["FinishedGoodItem"],
            expand=["CrossReference", "Attribute"],
            modified_since="2025-01-01 00:00:00",
            condition=">",
        )
    )
    client.create_cross_reference(
        "PAP-A4-500",
        {"alternateType": "Barcode", "alternateID": "4012345678901", "description": "EAN"},
    )
    client.list_cross_references("PAP-A4-500")
    client.upload_inventory_attachment("PAP-A4-500", "pap.jpg", b"\xff\xd8jpeg", "image/jpeg")
    client.list_item_classes()
    client.get_item_class("WAREN")
    client.list_sales_categories()
    client.list_customer_classes()
    get("/v1/customer/customerClass/EU")
    adjustment = client.create_inventory_adjustment(
        {
            "date": "2025-06-02",
            "description": "Inventur",
            "externalReference": "INV-1",
            "adjustmentLines": [
                {
                    "operation": "Insert",
                    "inventoryNumber": "PAP-A4-500",
                    "warehouseId": "MAIN",
                    "quantity": 100,
                    "unitCost": 2.1,
                    "reasonCode": "INVENTUR",
                }
            ],
        }
    )
    client.release_inventory_adjustment(adjustment)
    client.get_inventory_adjustment(adjustment)
    list(client.list_inventory_adjustments(status="Released"))
    order = client.create_sales_order(
        {
            "orderType": "SO",
            "customer": number,
            "customerRefNo": "BB-1001",
            "customerOrder": "PO-77",
            "date": "2025-06-02",
            "shipVia": "DHL",
            "paymentMethod": "LS",
            "terms": "14S2",
            "currency": "EUR",
            "soShippingAddress": {
                "overrideAddress": True,
                "addressLine1": "Lager 3",
                "postalCode": "20457",
                "city": "Hamburg",
                "countryId": "DE",
            },
            "soShippingContact": {"overrideContact": True, "name": "Warenannahme"},
            "lines": ORDER_LINES,
        }
    )
    client.get_sales_order(order)
    client.get_sales_order(order, order_type="SO")
    list(client.list_sales_orders(order_type="SO", status="Open"))
    client.find_sales_order_by_customer_ref(number, "BB-1001")
    get(f"/v2/salesorder/{order}")
    get("/v2/salesorder", pageNumber=1, pageSize=10)
    client.get_inventory_summary("PAP-A4-500")
    shipment = client.create_shipment(
        order, order_type="SO", shipment_date=dt.date(2025, 6, 3), warehouse="MAIN"
    )
    _, etag = client.get_shipment_with_etag(shipment)
    client.update_shipment(
        shipment,
        {
            "shipVia": "UPS",
            "shipmentDetailLines": [{"operation": "Update", "lineNumber": 1, "shippedQty": 8}],
            "shipmentPackageLines": [
                {
                    "operation": "Insert",
                    "boxId": "KARTON",
                    "weight": 20.0,
                    "trackingNumber": "1Z12345E0205271688",
                }
            ],
        },
        etag=etag,
    )
    client.update_shipment(shipment, {"note": "stale etag"}, etag=etag)  # 412, re-read, retry
    client.confirm_shipment(shipment)
    client.get_inventory_summary("PAP-A4-500", warehouse="MAIN")
    invoice, _ = client.ensure_customer_invoice(
        {
            "customerNumber": number,
            "externalReference": "RE-1001",
            "customerRefNumber": "BB-1001",
            "documentDate": "2025-06-03",
            "currencyId": "EUR",
            "creditTermsId": "14S2",
            "paymentMethodId": "LS",
            "branchNumber": "1",
            "invoiceText": "Rechnung RE-1001",
            "billingAddress": {
                "overrideAddress": True,
                "addressLine1": "Postfach 12",
                "postalCode": "20001",
                "city": "Hamburg",
                "countryId": "DE",
            },
            "invoiceContact": {
                "overrideContact": True,
                "name": "Buchhaltung",
                "email": "rechnung@nordwind.example",
            },
            "invoiceLines": [
                {
                    "operation": "Insert",
                    "inventoryNumber": "PAP-A4-500",
                    "quantity": 8,
                    "unitPriceInCurrency": 4.5,
                    "discountPercent": 5,
                    "vatCodeId": "01",
                    "uom": "STK",
                },
                {
                    "operation": "Insert",
                    "inventoryNumber": "FRACHT",
                    "description": "Versand",
                    "quantity": 1,
                    "unitPriceInCurrency": 4.9,
                    "vatCodeId": "01",
                },
            ],
        },
        external_ref="RE-1001",
    )
    client.get_customer_invoice(invoice)
    client.find_customer_invoice_by_external_ref("BB-1001", field="customerRefNumber")
    list(client.list_customer_invoices(customer=number, status="Balanced"))
    client.release_customer_invoice(invoice)
    note, _ = client.ensure_customer_credit_note(
        {
            "customerNumber": number,
            "externalReference": "GS-1001",
            "documentDate": "2025-06-04",
            "lines": [
                {
                    "operation": "Insert",
                    "inventoryNumber": "PAP-A4-500",
                    "quantity": 1,
                    "unitPriceInCurrency": 4.5,
                    "vatCodeId": "01",
                }
            ],
        },
        external_ref="GS-1001",
    )
    client.get_customer_credit_note(note)
    list(client.list_customer_credit_notes(external_reference="GS-1001"))
    client.release_customer_credit_note(note)
    client.list_payment_methods()
    get("/v1/paymentmethod/UEB")
    client.list_credit_terms()
    client.list_carriers()
    client.list_sales_order_types()
    get("/v1/carrier/DHL")
    client.list_branches()
    get("/v1/branch/1")
    client.list_warehouses()
    get("/v1/warehouse/MAIN")
    client.list_vats()
    client.list_vat_categories()
    list(client.list_customer_sales_prices(price_type="CustomerPriceClass", price_code="HAENDLER"))
    get(f"/v1/customer/{number}/salesorder")
    # the background API: a read run in the background, its state and its content
    accepted = raw.get(
        f"/v1/customer/{number}", headers={**headers, "erp-api-background": "none"}
    ).json()
    get(f"/v1/background/{accepted['id']}")  # Started
    guard.sim.clock.advance(5)
    assert get(f"/v1/background/{accepted['id']}")["status"] == "Finished"
    assert get(f"/v1/background/{accepted['id']}/content")["number"] == number
    background = make_client(guard, guard.sim.clock)
    background.background_creates = True
    background.create_customer({"name": "Hintergrund KG"})
    # error answers of every kind, for the shape check
    raw.get("/v1/customer/NOPE", headers=headers)
    raw.post("/v2/customerinvoice", headers=headers, json={"customerNumber": "x"})
    raw.get("/v1/branch", headers={"Authorization": "Bearer expired"})


@pytest.fixture(scope="module")
def recorded():
    """Runs :func:`scenario` once through a :class:`ContractGuard`; yields the guard."""
    clock = FakeClock()
    sim = VismaSimulator.demo(clock=clock)
    guard = ContractGuard(sim)
    client = make_client(guard, clock)
    scenario(client, guard)
    client.close()
    return guard


# --------------------------------------------------------------------------------------------
def test_every_simulated_route_is_an_operation_of_the_spec(spec):
    for route in ROUTES:
        operation = spec.operation(route.method, route.template)
        assert not operation.get("deprecated"), f"{route.method} {route.template} is deprecated"
        if route.method in ("POST", "PUT") and route.validate:
            body = operation.get("requestBody")
            assert body is None or "application/json" in body["content"]


def test_every_answer_of_the_scenario_validates_against_the_spec(recorded):
    assert recorded.checked == len(recorded.sim.requests) > 60  # every answer was checked
    assert recorded.violations == []


def test_the_scenario_covers_every_simulated_route(recorded):
    covered = {(method, template) for method, template, _ in recorded.statuses}
    missing = [f"{r.method} {r.template}" for r in ROUTES if (r.method, r.template) not in covered]
    assert missing == []


def test_the_scenario_uses_the_v2_invoice_create_not_the_deprecated_v1(recorded):
    posts = [e["path"] for e in recorded.sim.requests.entries if e["method"] == "POST"]
    assert "/v2/customerinvoice" in posts and "/v1/customerinvoice" not in posts


def test_the_guard_catches_an_answer_that_breaks_the_spec(fake_clock):
    sim = VismaSimulator.demo(clock=fake_clock)
    sim.customers["10000"]["creditLimit"] = "a lot"  # the spec says number
    sim.customers["10000"]["mainContact"] = ["not", "an", "object"]
    guard = ContractGuard(sim)
    client = make_client(guard, fake_clock)
    client.get_customer("10000")
    assert any("creditLimit" in v and "'number'" in v for v in guard.violations)
    assert any("mainContact" in v for v in guard.violations)


def test_the_guard_catches_a_query_parameter_the_spec_does_not_have(fake_clock):
    sim = VismaSimulator.demo(clock=fake_clock)
    guard = ContractGuard(sim)
    client = make_client(guard, fake_clock)
    client.get_json("/v1/customer", {"customerEmail": "x@example.com"})
    assert guard.violations == [
        "GET /v1/customer -> 200: query parameter 'customerEmail' is not in the spec"
    ]


def test_a_deliberately_wrong_request_is_rejected_with_the_real_error_shape(fake_clock):
    sim = VismaSimulator.demo(clock=fake_clock)
    guard = ContractGuard(sim)
    http = sim_http_client(guard, BASE)
    token = http.post(
        "/connect/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "bbvisma-demo",
            "client_secret": "demo-secret-not-for-production",
            "tenant_id": "6c4a3f0e-demo-tenant",
        },
    ).json()["access_token"]
    response = http.post(
        "/v2/customerinvoice",
        headers={"Authorization": f"Bearer {token}"},
        json={"customerNumber": "10000", "invoiceLines": {"operation": "Insert"}},
    )
    assert response.status_code == 400
    body = response.json()
    assert list(body) == list(ERROR_KEYS)
    assert body["ExceptionType"] == "IPPException"
    assert "customerNumber: '10000' is not of type 'object'" in body["ExceptionMessage"]
    assert (
        "invoiceLines: {'operation': 'Insert'} is not of type 'array'" in body["ExceptionMessage"]
    )
    assert sim.invoices == {}
    assert guard.violations == []


@pytest.mark.parametrize(
    ("method", "template", "payload"),
    [
        ("POST", "/v1/customer", CUSTOMER),
        (
            "PUT",
            "/v1/customer/{customerCd}",
            {"name": "Neu GmbH", "mainContact": {"email": "neu@example.com"}},
        ),
        ("POST", "/v1/inventory", ITEM),
        (
            "POST",
            "/v1/inventory/{inventoryNumber}/crossReferences",
            {"alternateType": "Barcode", "alternateID": "4012345678901", "uom": "STK"},
        ),
        (
            "POST",
            "/v1/attribute",
            {
                "attributeID": "X",
                "controlType": "Combo",
                "internal": False,
                "details": [{"operation": "Insert", "valueId": "A", "sortOrder": 1}],
            },
        ),
        (
            "POST",
            "/v1/inventoryadjustment",
            {
                "hold": False,
                "date": "2025-06-02",
                "controlQuantity": 1,
                "adjustmentLines": [
                    {
                        "operation": "Insert",
                        "inventoryNumber": "X",
                        "quantity": 1,
                        "warehouseId": "MAIN",
                        "unitCost": 1.5,
                    }
                ],
            },
        ),
        (
            "POST",
            "/v2/salesorder",
            {
                "orderType": "SO",
                "customer": "10000",
                "hold": False,
                "shipVia": "DHL",
                "soShippingAddress": {"overrideAddress": True, "countryId": "DE"},
                "lines": ORDER_LINES,
            },
        ),
        (
            "PUT",
            "/v1/shipment/{shipmentNbr}",
            {
                "shipVia": "DPD",
                "hold": False,
                "shipmentDetailLines": [{"operation": "Update", "lineNumber": 1, "shippedQty": 1}],
                "shipmentPackageLines": [
                    {
                        "operation": "Insert",
                        "boxId": "B",
                        "weight": 1.0,
                        "trackingNumber": "T1",
                        "confirmed": False,
                    }
                ],
            },
        ),
        (
            "POST",
            "/v2/customerinvoice",
            {
                "customerNumber": "10000",
                "documentDate": "2025-06-02",
                "hold": False,
                "billingAddress": {"overrideAddress": True, "countryId": "DE"},
                "invoiceLines": [
                    {
                        "operation": "Insert",
                        "quantity": 1,
                        "unitPriceInCurrency": 2.5,
                        "vatCodeId": "01",
                        "discountPercent": 0,
                        "subaccount": [{"segmentId": 1, "segmentValue": "0"}],
                    }
                ],
            },
        ),
        (
            "POST",
            "/v2/customerCreditNote",
            {
                "customerNumber": "10000",
                "lines": [{"operation": "Insert", "quantity": 1, "unitPriceInCurrency": 2.5}],
            },
        ),
    ],
)
def test_wrap_values_bodies_validate_against_the_request_schema(spec, method, template, payload):
    assert spec.request_errors(method, template, wrap_values(payload)) == []
    assert spec.request_errors(method, template, payload) != []  # unwrapped: rejected
