"""The Visma.net simulator on its own: auth, quota, validation, business rules, stock, ETags.

Raw HTTP (httpx, in-process) so the tests see exactly what a client would: status codes,
headers and bodies. Every answer also passes through :class:`ContractGuard` (spec check).
"""

from __future__ import annotations

import base64

import pytest

from bbvisma.simulators.common import FakeClock, sim_http_client
from bbvisma.simulators.vismanet import ERROR_KEYS, ContractGuard, VismaSimulator, default_seed

BASE = "http://127.0.0.1:8072"
CLIENT_ID = "bbvisma-demo"
SECRET = "demo-secret-not-for-production"
TENANT = "6c4a3f0e-demo-tenant"
ALL_SCOPES = (
    "vismanet_erp_service_api:create vismanet_erp_service_api:read vismanet_erp_service_api:update"
)


def v(value):
    return {"value": value}


@pytest.fixture
def sim(fake_clock) -> VismaSimulator:
    return VismaSimulator.demo(clock=fake_clock)


@pytest.fixture
def guard(sim):
    guard = ContractGuard(sim)
    yield guard
    assert not guard.violations, "\n".join(guard.violations)


@pytest.fixture
def http(guard):
    with sim_http_client(guard, BASE) as client:
        yield client


def get_token(http, client_id=CLIENT_ID, secret=SECRET, tenant=TENANT, scope=ALL_SCOPES):
    form = {
        "grant_type": "client_credentials",
        "client_id": client_id,
        "client_secret": secret,
        "scope": scope,
        "tenant_id": tenant,
    }
    response = http.post("/connect/token", data=form)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


@pytest.fixture
def api(http):
    """``api(method, path, **kw)`` with a valid bearer token."""
    token = get_token(http)

    def call(method, path, **kw):
        headers = {
            "Authorization": f"Bearer {token}",
            "ipp-company-id": "DEMO1",
            **kw.pop("headers", {}),
        }
        return http.request(method, path, headers=headers, **kw)

    return call


def create(api, path, body) -> str:
    response = api("POST", path, json=body)
    assert response.status_code == 201, response.text
    return response.headers["Location"].rsplit("/", 1)[-1]


def error_message(response) -> str:
    body = response.json()
    assert set(body) == set(ERROR_KEYS)
    return body["ExceptionMessage"]


def customer(api, name="Kunde GmbH", **extra) -> str:
    return create(api, "/v1/customer", {"name": v(name), "creditTermsId": v("14S2"), **extra})


def item(api, number="SKU-1", **extra) -> str:
    return create(
        api,
        "/v1/inventory",
        {
            "inventoryNumber": v(number),
            "description": v(f"Artikel {number}"),
            "itemClass": v("WAREN"),
            "vatCode": v("01"),
            "defaultPrice": v(10.0),
            **extra,
        },
    )


def adjust(api, quantity, *, number="SKU-1", warehouse="MAIN", hold=False, release=True) -> str:
    reference = create(
        api,
        "/v1/inventoryadjustment",
        {
            "hold": v(hold),
            "adjustmentLines": [
                {
                    "operation": "Insert",
                    "inventoryNumber": v(number),
                    "warehouseId": v(warehouse),
                    "quantity": v(quantity),
                }
            ],
        },
    )
    if release:
        assert api("POST", f"/v1/inventoryadjustment/{reference}/action/release").status_code == 200
    return reference


def order(api, customer_number, lines, **extra) -> str:
    return create(
        api,
        "/v2/salesorder",
        {
            "orderType": v("SO"),
            "customer": v(customer_number),
            **extra,
            "lines": [
                {
                    "operation": "Insert",
                    "inventoryNumber": v(n),
                    "quantity": v(q),
                    **({"warehouse": v(w)} if w else {}),
                }
                for n, q, w in lines
            ],
        },
    )


def ship(api, order_number, warehouse="MAIN"):
    return api(
        "POST",
        f"/v1/salesorder/{order_number}/action/createShipment",
        json={
            "orderType": "SO",
            "shipmentDate": "2025-06-02T00:00:00",
            "shipmentWarehouse": warehouse,
        },
    )


def summary(api, number="SKU-1", warehouse="MAIN") -> dict:
    rows = api("GET", f"/v1/inventorysummary/{number}", params={"warehouse": warehouse}).json()
    assert len(rows) == 1
    return {k: rows[0][k] for k in ("onHand", "soBooked", "soShipped", "available")}


# --------------------------------------------------------------------------------------------
# token endpoint and auth
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"client_secret": "wrong"}, "invalid_client"),
        ({"client_id": "nobody"}, "invalid_client"),
        ({"grant_type": "password"}, "unsupported_grant_type"),
        ({"tenant_id": ""}, "invalid_request"),
        (
            {"scope": "vismanet_erp_service_api:delete vismanet_erp_service_api:admin"},
            "invalid_scope",
        ),
    ],
)
def test_token_endpoint_answers_oauth_errors(http, form, error):
    base = {
        "grant_type": "client_credentials",
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
        "scope": ALL_SCOPES,
        "tenant_id": TENANT,
    }
    response = http.post("/connect/token", data={**base, **form})
    assert response.status_code == 400
    assert response.json()["error"] == error


def test_token_endpoint_accepts_basic_client_auth_and_says_how_long_the_token_lives(http):
    basic = base64.b64encode(f"{CLIENT_ID}:{SECRET}".encode()).decode()
    response = http.post(
        "/connect/token",
        data={"grant_type": "client_credentials", "tenant_id": TENANT},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["expires_in"] == 3600 and body["token_type"] == "Bearer"
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("header", [None, "Bearer not-a-token", "Basic abc"])
def test_missing_or_unknown_bearer_is_401_with_the_visma_error_body(http, header):
    headers = {"Authorization": header} if header else {}
    response = http.get("/v1/branch", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert "denied" in error_message(response)


def test_token_expires_on_the_simulator_clock(http, fake_clock):
    token = get_token(http)
    headers = {"Authorization": f"Bearer {token}"}
    assert http.get("/v1/branch", headers=headers).status_code == 200
    fake_clock.advance(3600)
    assert http.get("/v1/branch", headers=headers).status_code == 401


def test_unlicensed_tenant_gets_fault_12027_and_foreign_company_fault_12002(http):
    token = get_token(http, tenant="unlicensed-company-tenant")
    response = http.get("/v1/branch", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.json()["ExceptionFaultCode"] == "12027"
    assert error_message(response) == "No license for this company."
    token = get_token(http)
    response = http.get(
        "/v1/branch", headers={"Authorization": f"Bearer {token}", "ipp-company-id": "OTHER"}
    )
    assert response.status_code == 401
    assert response.json()["ExceptionFaultCode"] == "12002"


def test_read_only_client_may_read_but_not_create(http):
    token = get_token(
        http,
        "bbvisma-readonly",
        "readonly-secret-not-for-production",
        scope="vismanet_erp_service_api:read",
    )
    headers = {"Authorization": f"Bearer {token}"}
    assert http.get("/v1/customer", headers=headers).status_code == 200
    response = http.post("/v1/customer", headers=headers, json={"name": v("X")})
    assert response.status_code == 403
    assert "vismanet_erp_service_api:create" in error_message(response)


# --------------------------------------------------------------------------------------------
# quota
# --------------------------------------------------------------------------------------------
def test_hourly_quota_is_announced_on_every_answer_and_enforced_with_retry_after(
    fake_clock,
):
    sim = VismaSimulator.demo(clock=fake_clock, quota_per_hour=3)
    guard = ContractGuard(sim)
    http = sim_http_client(guard, BASE)
    headers = {"Authorization": f"Bearer {get_token(http)}"}
    fake_clock.advance(600)  # ten minutes into the hour
    remaining = []
    for _ in range(3):
        response = http.get("/v1/branch", headers=headers)
        assert response.headers["X-RateLimit-Limit"] == "3"
        assert response.headers["X-RateLimit-Reset"] == "3000"
        assert response.headers["X-RateLimit-Policy"] == "3;w=3600"
        remaining.append(response.headers["X-RateLimit-Remaining"])
    assert remaining == ["2", "1", "0"]
    over = http.get("/v1/customer", headers=headers)
    assert over.status_code == 429
    assert over.headers["Retry-After"] == "3000"
    assert "rate limit" in error_message(over)
    other = get_token(
        http,
        "bbvisma-readonly",
        "readonly-secret-not-for-production",
        scope="vismanet_erp_service_api:read",
    )
    assert http.get("/v1/branch", headers={"Authorization": f"Bearer {other}"}).status_code == 200
    fake_clock.advance(3000)  # the next window (the one-hour token expired with the last one)
    fresh = http.get("/v1/branch", headers={"Authorization": f"Bearer {get_token(http)}"})
    assert fresh.status_code == 200 and fresh.headers["X-RateLimit-Remaining"] == "2"
    assert not guard.violations, guard.violations


# --------------------------------------------------------------------------------------------
# request validation
# --------------------------------------------------------------------------------------------
def test_an_unwrapped_value_is_rejected_naming_the_field(api):
    response = api("POST", "/v1/customer", json={"name": "ACME", "status": v("Active")})
    assert response.status_code == 400
    assert "name: 'ACME' is not of type 'object'" in error_message(response)


def test_a_value_outside_the_spec_enum_is_rejected(api):
    response = api("POST", "/v1/customer", json={"name": v("A"), "status": v("Happy")})
    assert response.status_code == 400
    assert "status.value: 'Happy' is not one of" in error_message(response)


def test_null_values_count_as_not_sent(api):
    number = create(
        api, "/v1/customer", {"name": v("Null GmbH"), "note": None, "corporateId": v(None)}
    )
    assert api("GET", f"/v1/customer/{number}").json()["name"] == "Null GmbH"


def test_a_body_that_is_not_json_is_a_400(api):
    response = api(
        "POST", "/v1/customer", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert "not valid JSON" in error_message(response)


@pytest.mark.parametrize(
    ("path", "body", "named"),
    [
        ("/v1/customer", {"name": v("A"), "creditTermsId": v("99")}, "creditTermsId: Terms '99'"),
        ("/v1/customer", {"name": v("A"), "customerClassId": v("VIP")}, "customerClassId"),
        ("/v1/customer", {"name": v("A"), "priceClassId": v("GOLD")}, "priceClassId"),
        ("/v1/customer", {"name": v("A"), "currencyId": v("XXX")}, "currencyId: Currency 'XXX'"),
        (
            "/v1/customer",
            {"name": v("A"), "defaultPaymentMethod": v({"paymentMethodId": v("CASH")})},
            "defaultPaymentMethod.paymentMethodId: Payment method 'CASH'",
        ),
        (
            "/v1/customer",
            {"name": v("A"), "mainAddress": v({"countryId": v("XX")})},
            "mainAddress.countryId: Country 'XX'",
        ),
        (
            "/v1/inventory",
            {"inventoryNumber": v("N"), "description": v("d"), "itemClass": v("NOPE")},
            "itemClass: Item class 'NOPE'",
        ),
        (
            "/v1/inventory",
            {"inventoryNumber": v("N"), "description": v("d"), "vatCode": v("99")},
            "vatCode: VAT category '99'",
        ),
        (
            "/v1/inventory",
            {"inventoryNumber": v("N"), "description": v("d"), "defaultWarehouse": v("NORTH")},
            "defaultWarehouse: Warehouse 'NORTH'",
        ),
        (
            "/v1/inventory",
            {"inventoryNumber": v("N"), "description": v("d"), "baseUnit": v("BARREL")},
            "baseUnit: Unit of measure 'BARREL'",
        ),
        (
            "/v2/salesorder",
            {"orderType": v("SO"), "customer": v("77777")},
            "customer: Customer '77777'",
        ),
        (
            "/v2/salesorder",
            {
                "orderType": v("SO"),
                "customer": v("10000"),
                "lines": [{"operation": "Insert", "inventoryNumber": v("GHOST")}],
            },
            "lines[0].inventoryNumber: Inventory item 'GHOST'",
        ),
        (
            "/v2/salesorder",
            {
                "orderType": v("SO"),
                "customer": v("10000"),
                "lines": [
                    {"operation": "Insert", "inventoryNumber": v("SERVICE"), "warehouse": v("X")}
                ],
            },
            "lines[0].warehouse: Warehouse 'X'",
        ),
        (
            "/v2/salesorder",
            {"orderType": v("SO"), "customer": v("10000"), "shipVia": v("FEDEX")},
            "shipVia: Carrier 'FEDEX'",
        ),
        (
            "/v2/salesorder",
            {"orderType": v("SO"), "customer": v("10000"), "branchNumber": v("9")},
            "branchNumber: Branch '9'",
        ),
        ("/v2/salesorder", {"orderType": v("XX"), "customer": v("10000")}, "orderType"),
        (
            "/v2/customerinvoice",
            {"customerNumber": v("10000"), "creditTermsId": v("60")},
            "creditTermsId: Terms '60'",
        ),
        (
            "/v2/customerinvoice",
            {"customerNumber": v("10000"), "paymentMethodId": v("GOLD")},
            "paymentMethodId: Payment method 'GOLD'",
        ),
        (
            "/v2/customerinvoice",
            {
                "customerNumber": v("10000"),
                "invoiceLines": [{"operation": "Insert", "inventoryNumber": v("GHOST")}],
            },
            "invoiceLines[0].inventoryNumber: Inventory item 'GHOST'",
        ),
        (
            "/v2/customerCreditNote",
            {
                "customerNumber": v("10000"),
                "lines": [{"operation": "Insert", "description": v("x"), "vatCodeId": v("77")}],
            },
            "lines[0].vatCodeId: VAT category '77'",
        ),
        (
            "/v1/inventoryadjustment",
            {
                "adjustmentLines": [
                    {"operation": "Insert", "inventoryNumber": v("SERVICE"), "quantity": v(1)}
                ]
            },
            "is not a stock item",
        ),
    ],
)
def test_unknown_references_are_400_naming_field_and_value(api, path, body, named):
    response = api("POST", path, json=body)
    assert response.status_code == 400, response.text
    assert named in error_message(response)


def test_attribute_combo_value_must_be_one_of_its_values(api):
    item(api)
    bad = api(
        "PUT",
        "/v1/inventory/SKU-1",
        json={"attributeLines": [{"attributeId": v("FARBE"), "attributeValue": v("LILA")}]},
    )
    assert bad.status_code == 400
    assert "attributeLines[0].attributeValue: 'LILA'" in error_message(bad)
    good = api(
        "PUT",
        "/v1/inventory/SKU-1",
        json={"attributeLines": [{"attributeId": v("FARBE"), "attributeValue": v("BLAU")}]},
    )
    assert good.status_code == 204


def test_duplicates_are_rejected(api):
    item(api)
    again = api(
        "POST", "/v1/inventory", json={"inventoryNumber": v("SKU-1"), "description": v("x")}
    )
    assert again.status_code == 400 and "already exists" in error_message(again)
    xref = {"alternateType": v("Barcode"), "alternateID": v("4006381333931")}
    assert api("POST", "/v1/inventory/SKU-1/crossReferences", json=xref).status_code == 200
    dup = api("POST", "/v1/inventory/SKU-1/crossReferences", json=xref)
    assert dup.status_code == 400 and "4006381333931" in error_message(dup)


def test_unknown_path_is_404_and_wrong_method_405_both_in_the_visma_error_shape(api):
    assert api("GET", "/v1/nothing").status_code == 404
    response = api("DELETE", "/v1/customer/10000")
    assert response.status_code == 405
    assert "DELETE" in error_message(response)


def test_location_is_an_absolute_url_of_a_readable_resource(api):
    response = api("POST", "/v1/customer", json={"name": v("Loc GmbH")})
    location = response.headers["Location"]
    assert location == f"{BASE}/v1/customer/10001"
    assert response.content == b""
    assert api("GET", location).json()["name"] == "Loc GmbH"


# --------------------------------------------------------------------------------------------
# documents: totals from the lines
# --------------------------------------------------------------------------------------------
def test_invoice_totals_are_computed_from_lines_discounts_and_vat_categories(api):
    reference = create(
        api,
        "/v2/customerinvoice",
        {
            "customerNumber": v("10000"),
            "creditTermsId": v("14S2"),
            "documentDate": v("2025-06-02"),
            "externalReference": v("RE-1"),
            "invoiceLines": [
                {
                    "operation": "Insert",
                    "description": v("Papier"),
                    "quantity": v(3),
                    "unitPriceInCurrency": v(19.99),
                    "discountPercent": v(10),
                    "vatCodeId": v("01"),
                },
                {
                    "operation": "Insert",
                    "description": v("Buch"),
                    "quantity": v(1),
                    "unitPriceInCurrency": v(100),
                    "vatCodeId": v("02"),
                },
                {
                    "operation": "Insert",
                    "description": v("Versicherung"),
                    "quantity": v(1),
                    "manualAmountInCurrency": v(50),
                    "vatCodeId": v("05"),
                },
            ],
        },
    )
    doc = api("GET", f"/v1/customerinvoice/{reference}").json()
    assert [line["amount"] for line in doc["invoiceLines"]] == [53.97, 100.0, 50.0]
    assert doc["detailTotal"] == 203.97
    assert doc["vatTotal"] == 17.25  # 53.97 x 19 % = 10.25, 100 x 7 % = 7.00, exempt 0
    assert doc["amount"] == doc["balance"] == 221.22
    assert (doc["vatTaxableTotal"], doc["vatExemptTotal"]) == (153.97, 50.0)
    assert {(t["taxId"], t["vatAmount"]) for t in doc["taxDetails"]} == {
        ("UST19", 10.25),
        ("UST7", 7.0),
        ("FREI", 0.0),
    }
    assert doc["documentDueDate"] == "2025-07-02T00:00:00"  # 30 days net
    assert doc["cashDiscountDate"] == "2025-06-16T00:00:00"  # 14 days 2 %
    assert doc["cashDiscount"] == 4.42
    assert doc["status"] == "Balanced"


def test_documents_release_once_and_not_from_hold(api):
    reference = create(
        api,
        "/v2/customerCreditNote",
        {
            "customerNumber": v("10000"),
            "lines": [
                {
                    "operation": "Insert",
                    "description": v("Gutschrift"),
                    "quantity": v(1),
                    "unitPriceInCurrency": v(10),
                    "vatCodeId": v("01"),
                }
            ],
        },
    )
    note = api("GET", f"/v1/customerCreditNote/{reference}").json()
    assert (note["documentType"], note["amount"]) == ("CreditNote", 11.9)
    path = f"/v1/customerCreditNote/{reference}/action/release"
    assert api("POST", path).json()["actionResult"] == "Done"
    again = api("POST", path)
    assert again.status_code == 400 and "already released" in error_message(again)
    held = create(api, "/v2/customerinvoice", {"customerNumber": v("10000"), "hold": v(True)})
    response = api("POST", f"/v1/customerinvoice/{held}/action/release")
    assert response.status_code == 400 and "on hold" in error_message(response)


def test_documents_are_listed_by_external_reference(api):
    for ref in ("A-1", "A-2", "A-1"):
        create(
            api, "/v2/customerinvoice", {"customerNumber": v("10000"), "externalReference": v(ref)}
        )
    found = api("GET", "/v1/customerinvoice", params={"externalReference": "A-1"}).json()
    assert [d["referenceNumber"] for d in found] == ["000001", "000003"]
    assert found[0]["metadata"] == {"totalCount": 2, "maxPageSize": 1000}


def test_documents_are_listed_by_creation_time_with_each_condition(api, fake_clock):
    """``createdDateTime`` + ``createdDateTimeCondition`` (spec parameters of both document
    lists), on the simulator's clock in UTC, combinable with the other filters and paged."""
    early = create(api, "/v2/customerinvoice", {"customerNumber": v("10000")})  # 12:00:00
    fake_clock.advance(90)
    late = create(
        api, "/v2/customerinvoice", {"customerNumber": v("10000"), "externalReference": v("L")}
    )  # 12:01:30
    credit = create(api, "/v2/customerCreditNote", {"customerNumber": v("10000")})
    released = api("POST", f"/v1/customerinvoice/{early}/action/release")  # changed later
    assert released.status_code == 200, released.text

    def numbers(path="/v1/customerinvoice", condition=">=", when="2025-06-02 12:01:30", **more):
        params = {"createdDateTime": when, "createdDateTimeCondition": condition, **more}
        response = api("GET", path, params=params)
        assert response.status_code == 200, response.text
        return [d["referenceNumber"] for d in response.json()]

    assert numbers() == [late]  # created before, however recently changed: not listed
    assert numbers(condition=">") == []
    assert numbers(condition="<") == [early]
    assert numbers(condition="<=", when="2025-06-02T12:01:30.000") == [early, late]
    assert numbers(when="2025-06-02") == [early, late]
    assert numbers(externalReference="L") == [late]
    assert numbers(pageSize=1, pageNumber=2, when="2025-06-02") == [late]
    assert numbers("/v1/customerCreditNote") == [credit]
    listed = api("GET", "/v1/customerinvoice", params={"pageSize": 1}).json()
    assert listed[0]["createdDateTime"] == "2025-06-02T12:00:00.000"
    assert listed[0]["metadata"] == {"totalCount": 2, "maxPageSize": 1000}


def test_sales_orders_are_listed_by_type_and_change_time_not_by_creation_time(api, sim, fake_clock):
    """The order lists have no creation filter in the spec: the contract guard flags one."""
    number = customer(api)
    item(api)
    first = order(api, number, [("SKU-1", 1, None)])
    fake_clock.advance(60)
    second = order(api, number, [("SKU-1", 2, None)])
    params = {
        "orderType": "SO",
        "lastModifiedDateTime": "2025-06-02 12:01:00",
        "lastModifiedDateTimeCondition": ">=",
    }
    for path in ("/v1/salesorder", f"/v1/customer/{number}/salesorder"):
        assert [o["orderNo"] for o in api("GET", path, params=params).json()] == [second]
    assert [o["orderNo"] for o in api("GET", "/v1/salesorder").json()] == [first, second]
    guard = ContractGuard(sim)
    with sim_http_client(guard, BASE) as client:
        token = get_token(client)
        client.get(
            "/v1/salesorder",
            headers={"Authorization": f"Bearer {token}"},
            params={"createdDateTime": "2025-06-02", "createdDateTimeCondition": ">="},
        )
    assert any("'createdDateTime' is not in the spec" in v for v in guard.violations)


# --------------------------------------------------------------------------------------------
# stock
# --------------------------------------------------------------------------------------------
def test_inventory_summary_follows_adjustments_orders_and_shipments(api):
    number = customer(api)
    item(api)
    assert summary(api) == {"onHand": 0, "soBooked": 0, "soShipped": 0, "available": 0}
    adjust(api, 10)
    adjust(api, 5, hold=True, release=False)  # not released: does not count
    assert summary(api)["onHand"] == 10
    order_number = order(api, number, [("SKU-1", 4, None)])
    assert summary(api) == {"onHand": 10, "soBooked": 4, "soShipped": 0, "available": 6}
    shipment = ship(api, order_number).json()["referenceNumber"]
    api(
        "PUT",
        f"/v1/shipment/{shipment}",
        json={
            "shipmentDetailLines": [{"operation": "Update", "lineNumber": v(1), "shippedQty": v(3)}]
        },
    )
    assert summary(api) == {"onHand": 10, "soBooked": 1, "soShipped": 3, "available": 6}
    assert api("POST", f"/v1/shipment/{shipment}/action/confirmShipment").status_code == 200
    assert summary(api) == {"onHand": 7, "soBooked": 1, "soShipped": 0, "available": 6}
    sales_order = api("GET", f"/v1/salesorder/SO/{order_number}").json()
    assert sales_order["status"] == "BackOrder"
    assert (sales_order["lines"][0]["openQty"], sales_order["lines"][0]["qtyOnShipments"]) == (1, 0)
    rest = ship(api, order_number).json()["shipmentDto"]
    assert rest["shipmentDetailLines"][0]["shippedQty"] == 1


def test_non_stock_items_have_no_summary_and_unknown_items_404(api):
    assert api("GET", "/v1/inventorysummary/SERVICE").json() == []
    assert api("GET", "/v1/inventorysummary/GHOST").status_code == 404


def test_create_shipment_copies_the_open_lines_of_the_requested_warehouse(api):
    number = customer(api)
    item(api, "SKU-1")
    item(api, "SKU-2")
    order_number = order(api, number, [("SKU-1", 2, "MAIN"), ("SKU-2", 5, "MUC")], shipVia=v("DPD"))
    result = ship(api, order_number, "MAIN").json()
    dto = result["shipmentDto"]
    assert result["actionResult"] == "Done" and dto["shipmentNumber"] == result["referenceNumber"]
    assert [(x["inventoryNumber"], x["shippedQty"]) for x in dto["shipmentDetailLines"]] == [
        ("SKU-1", 2)
    ]
    assert dto["shipVia"]["id"] == "DPD" and dto["status"] == "Open"
    nothing = ship(api, order_number, "MAIN")
    assert nothing.status_code == 400 and "no open lines" in error_message(nothing)
    held = order(api, number, [("SKU-1", 1, None)], hold=v(True))
    refused = ship(api, held)
    assert refused.status_code == 400 and "on hold" in error_message(refused)


def test_shipment_etag_changes_with_every_change_and_a_stale_if_match_is_412(api):
    number = customer(api)
    item(api)
    order_number = order(api, number, [("SKU-1", 2, None)])
    shipment = ship(api, order_number).json()["referenceNumber"]
    path = f"/v1/shipment/{shipment}"
    first = api("GET", path).headers["ETag"]
    ok = api("PUT", path, json={"shipVia": v("UPS")}, headers={"If-Match": first})
    assert ok.status_code == 204
    second = api("GET", path).headers["ETag"]
    assert second != first
    stale = api("PUT", path, json={"note": v("x")}, headers={"If-Match": first})
    assert stale.status_code == 412
    assert "If-Match" in error_message(stale)
    assert (
        api(
            "PUT",
            path,
            json={
                "shipmentPackageLines": [
                    {"operation": "Insert", "boxId": v("KARTON"), "trackingNumber": v("1Z999")}
                ]
            },
        ).status_code
        == 204
    )  # If-Match is optional
    third = api("GET", path)
    assert third.headers["ETag"] not in (first, second)
    assert third.json()["shipmentPackageLines"][0]["trackingNumber"] == "1Z999"
    assert api("POST", f"{path}/action/confirmShipment").status_code == 200
    assert api("GET", path).json()["status"] == "Confirmed"
    frozen = api("PUT", path, json={"note": v("late")})
    assert frozen.status_code == 400 and "Confirmed" in error_message(frozen)
    again = api("POST", f"{path}/action/confirmShipment")
    assert again.status_code == 400 and "already confirmed" in error_message(again)


# --------------------------------------------------------------------------------------------
# lists
# --------------------------------------------------------------------------------------------
def test_page_size_is_clamped_silently_and_every_item_carries_metadata(fake_clock):
    sim = VismaSimulator.demo(clock=fake_clock, max_page_size=2)
    guard = ContractGuard(sim)
    http = sim_http_client(guard, BASE)
    headers = {"Authorization": f"Bearer {get_token(http)}"}
    for name in ("A", "B", "C"):
        http.post("/v1/customer", headers=headers, json={"name": v(name)})
    page = http.get("/v1/customer", headers=headers, params={"pageSize": 100}).json()
    assert [c["number"] for c in page] == ["10000", "10001"]
    assert {json_meta["totalCount"] for json_meta in (c["metadata"] for c in page)} == {4}
    assert page[0]["metadata"]["maxPageSize"] == 2
    last = http.get("/v1/customer", headers=headers, params={"pageSize": 100, "pageNumber": 2})
    assert [c["number"] for c in last.json()] == ["10002", "10003"]
    beyond = http.get("/v1/customer", headers=headers, params={"pageNumber": 3})
    assert beyond.json() == []
    bad = http.get("/v1/customer", headers=headers, params={"pageNumber": 0})
    assert bad.status_code == 400 and "pageNumber" in error_message(bad)
    assert not guard.violations, guard.violations


def test_last_modified_filter_honours_each_condition(api, fake_clock):
    customer(api, "Früh")  # 12:00:00.000
    fake_clock.advance(60)
    customer(api, "Spät")  # 12:01:00.000

    def names(condition, when="2025-06-02 12:01:00"):
        response = api(
            "GET",
            "/v1/customer",
            params={"lastModifiedDateTime": when, "lastModifiedDateTimeCondition": condition},
        )
        assert response.status_code == 200, response.text
        return [c["name"] for c in response.json()]

    assert names(">=") == ["Spät"]
    assert names(">") == []
    assert names("<") == ["Barverkauf Laufkundschaft", "Früh"]
    assert names("<=", "2025-06-02T12:01:00.000") == ["Barverkauf Laufkundschaft", "Früh", "Spät"]
    assert names(">=", "2025-06-02") == ["Barverkauf Laufkundschaft", "Früh", "Spät"]


@pytest.mark.parametrize(
    ("path", "prefix"),
    [
        ("/v1/customer", "lastModified"),
        ("/v1/customerinvoice", "created"),
        ("/v1/customerCreditNote", "created"),
        ("/v1/salesorder", "lastModified"),
    ],
)
def test_a_date_time_filter_needs_both_parameters_a_known_condition_and_format(api, path, prefix):
    value, condition = f"{prefix}DateTime", f"{prefix}DateTimeCondition"
    for params, named in (
        ({value: "2025-06-02"}, "mutually inclusive"),
        ({value: "2025-06-02", condition: "=>"}, condition),
        ({value: "2.6.2025", condition: ">"}, value),
    ):
        response = api("GET", path, params=params)
        assert response.status_code == 400 and named in error_message(response)


def test_credit_terms_come_as_a_pagination_object(api):
    body = api("GET", "/v1/creditTerm", params={"pageSize": 2}).json()
    assert (body["pageNumber"], body["pageSize"], body["totalCount"]) == (1, 2, 5)
    assert [t["termsId"] for t in body["records"]] == ["0", "14"]


# --------------------------------------------------------------------------------------------
# control API, faults, seed
# --------------------------------------------------------------------------------------------
def test_control_api_sets_faults_shows_state_and_resets_to_the_seed(api, http):
    customer(api, "Vorher GmbH")
    rules = [{"kind": "status", "path": "^/v1/branch$", "status": 503, "times": 1}]
    assert http.post("/_sim/faults", json=rules).status_code == 200
    failed = api("GET", "/v1/branch")
    assert failed.status_code == 503
    assert set(failed.json()) == set(ERROR_KEYS)
    state = http.get("/_sim/state").json()
    assert [c["name"] for c in state["state"]["customers"]] == [
        "Barverkauf Laufkundschaft",
        "Vorher GmbH",
    ]
    assert [r["status"] for r in state["requests"] if r["path"] == "/v1/branch"] == [503]
    assert state["state"]["tokens_issued"] == 1
    assert SECRET not in str(state)
    assert http.post("/_sim/reset").json() == {"reset": True}
    after = http.get("/_sim/state").json()
    assert [c["number"] for c in after["state"]["customers"]] == ["10000"]
    assert after["faults"] == [] and after["requests"] == []
    token = get_token(http)
    again = http.post(
        "/v1/customer", json={"name": v("Nachher")}, headers={"Authorization": f"Bearer {token}"}
    )
    assert again.headers["Location"].endswith("/10001")  # numbering restarted


def test_seed_section_or_whole_seed_file_load_the_same_company(fake_clock):
    whole = VismaSimulator(clock=fake_clock)
    whole.load_seed({"vismanet": default_seed()})
    section = VismaSimulator.demo(clock=FakeClock())
    assert whole.dump_state()["customers"] == section.dump_state()["customers"]
    assert set(whole.carriers) == {"DHL", "DPD", "UPS", "ABHOLUNG"}
    assert set(whole.payment_methods) >= {"UEB", "LS"}
    assert whole.credit_terms["14S2"]["discountPercent"] == 2.0
    assert whole.inventory["SERVICE"]["type"] == "ServiceItem"
