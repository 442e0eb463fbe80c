"""VismaClient against the Visma.net simulator (in-process, and once over real loopback HTTP).

Every simulator used here sits behind :class:`ContractGuard`, so each answer these tests
provoke is also checked against the OpenAPI document (the guard fails the test otherwise).
Time is a FakeClock shared by the client (token expiry, pacing, back-off) and the simulator
(quota windows, token lifetime): hours of quota pass in milliseconds.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from decimal import Decimal

import httpx
import pytest

from bbvisma.errors import (
    ApiError,
    AuthError,
    NotFound,
    OutcomeUnknown,
    PreconditionFailed,
    ProtocolError,
    ServerError,
)
from bbvisma.simulators.common import FakeClock, serve, sim_http_client
from bbvisma.simulators.vismanet import ContractGuard, VismaSimulator
from bbvisma.vismanet import Plain, VismaClient, wrap_values
from bbvisma.vismanet.models import CustomerDocument, InventorySummary, Shipment

BASE = "http://127.0.0.1:8072"
CLIENT_ID = "bbvisma-demo"
SECRET = "demo-secret-not-for-production"
TENANT = "6c4a3f0e-demo-tenant"
COMPANY = "DEMO1"


# --------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------
def make_sim(clock: FakeClock, **limits) -> VismaSimulator:
    return VismaSimulator.demo(clock=clock, **limits)


def make_client(app, clock: FakeClock, http: httpx.Client | None = None, **kw) -> VismaClient:
    params = {
        "base_url": BASE,
        "token_url": BASE + "/connect/token",
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
        "tenant_id": TENANT,
        "company_id": COMPANY,
        "http_client": http or sim_http_client(app, BASE),
        "clock": clock.now,
        "sleep": clock.sleep,
    }
    params.update(kw)
    return VismaClient(**params)


@pytest.fixture
def sim(fake_clock) -> VismaSimulator:
    return make_sim(fake_clock)


@pytest.fixture
def guard(sim):
    guard = ContractGuard(sim)
    yield guard
    assert not guard.violations, "\n".join(guard.violations)


@pytest.fixture
def client(guard, fake_clock):
    client = make_client(guard, fake_clock)
    yield client
    client.close()


def api_requests(sim: VismaSimulator, method: str | None = None, path: str | None = None):
    return [
        e
        for e in sim.requests.entries
        if e["path"] != "/connect/token"
        and (method is None or e["method"] == method)
        and (path is None or e["path"] == path)
    ]


def token_requests(sim: VismaSimulator):
    return [e for e in sim.requests.entries if e["path"] == "/connect/token"]


def new_customer(client: VismaClient, name: str = "Kunde GmbH", **extra) -> str:
    payload = {
        "name": name,
        "mainAddress": {
            "addressLine1": "Ring 1",
            "postalCode": "50667",
            "city": "Köln",
            "countryId": "DE",
        },
        "mainContact": {"email": f"{name.split()[0].lower()}@example.com"},
        "creditTermsId": "14S2",
        **extra,
    }
    return client.create_customer(payload)


def stock_item(client: VismaClient, number: str = "SKU-1", price: float = 10.0) -> str:
    return client.create_inventory(
        {
            "inventoryNumber": number,
            "description": f"Artikel {number}",
            "itemClass": "WAREN",
            "vatCode": "01",
            "defaultPrice": price,
        }
    )


def open_shipment(client: VismaClient) -> str:
    customer = new_customer(client)
    stock_item(client)
    order = client.create_sales_order(
        {
            "orderType": "SO",
            "customer": customer,
            "shipVia": "DHL",
            "lines": [{"operation": "Insert", "inventoryNumber": "SKU-1", "quantity": 2}],
        }
    )
    return client.create_shipment(
        order, order_type="SO", shipment_date="2025-06-02", warehouse="MAIN"
    )


# --------------------------------------------------------------------------------------------
# auth
# --------------------------------------------------------------------------------------------
def test_token_is_fetched_once_and_reused_across_calls(client, sim):
    for _ in range(5):
        client.list_branches()
    assert client.tokens_fetched == 1
    assert len(token_requests(sim)) == 1
    assert len(api_requests(sim)) == 5


def test_token_is_renewed_shortly_before_it_expires_without_provoking_a_401(
    client, sim, fake_clock
):
    client.list_branches()
    fake_clock.advance(3600 - 30)  # inside the refresh margin of a 3600 s token
    client.list_branches()
    assert client.tokens_fetched == 2
    assert all(e["status"] == 200 for e in api_requests(sim))


def test_rejected_token_is_replaced_once_and_the_call_succeeds(client, sim, guard):
    client.list_branches()
    control = sim_http_client(guard, BASE)
    assert control.post("/_sim/expire_tokens").json() == {"expired": 1}
    branches = client.list_branches()
    assert [b["number"] for b in branches] == ["1", "2"]
    assert client.tokens_fetched == 2
    assert [e["status"] for e in api_requests(sim)] == [200, 401, 200]


def test_a_fresh_token_rejected_again_is_an_auth_error_after_one_refresh(client, sim):
    sim.faults.add("status", path="^/v1/branch$", status=401, times=2)
    with pytest.raises(AuthError) as err:
        client.list_branches()
    assert "freshly issued access token" in str(err.value)
    assert client.tokens_fetched == 2
    assert len(api_requests(sim)) == 2


def test_wrong_client_secret_is_an_auth_error_naming_the_credentials_and_not_retried(
    guard, sim, fake_clock
):
    client = make_client(guard, fake_clock, client_secret="wrong-secret-0815")
    with pytest.raises(AuthError) as err:
        client.check_connection()
    assert "client ID / client secret" in str(err.value)
    assert err.value.code == "invalid_client"
    assert len(token_requests(sim)) == 1
    assert api_requests(sim) == []


def test_unlicensed_tenant_is_an_auth_error_naming_the_tenant_mix_up_and_not_retried(
    guard, sim, fake_clock
):
    client = make_client(guard, fake_clock, tenant_id="unlicensed-company-tenant")
    with pytest.raises(AuthError) as err:
        client.check_connection()
    message = str(err.value)
    assert err.value.code == "12027"
    assert "tenant ID" in message and "licence" in message
    assert [e["status"] for e in api_requests(sim)] == [401]


def test_company_outside_the_tenant_is_an_auth_error_with_fault_12002(guard, sim, fake_clock):
    client = make_client(guard, fake_clock, company_id="OTHER-COMPANY")
    with pytest.raises(AuthError) as err:
        client.list_branches()
    assert err.value.code == "12002"
    assert "company ID" in str(err.value)
    assert len(api_requests(sim)) == 1


def test_check_connection_names_the_company_and_the_announced_quota(client):
    info = client.check_connection()
    assert info["ok"] is True
    assert info["company_name"] == "Muster Handel GmbH"
    assert info["branches"] == ["1", "2"]
    assert info["rate_limit"] == 15000


# --------------------------------------------------------------------------------------------
# creates, reads, updates
# --------------------------------------------------------------------------------------------
def test_create_returns_the_key_from_the_location_header(client, sim):
    number = new_customer(client, "ACME Handel GmbH", corporateId="HRB 777")
    assert number == "10001"  # the demo tenant numbers customers from 10001
    customer = client.get_customer(number)
    assert customer["name"] == "ACME Handel GmbH"
    assert customer["mainAddress"]["country"] == {"id": "DE", "name": "Deutschland"}
    assert customer["creditTerms"]["id"] == "14S2"
    assert [e["status"] for e in api_requests(sim, "POST")] == [201]


def test_update_changes_only_the_fields_sent(client):
    number = new_customer(client)
    before = client.get_customer(number)["mainContact"]
    client.update_customer(number, {"mainContact": {"phone1": "+49 221 99"}})
    customer = client.get_customer(number)
    assert customer["mainContact"] == {**before, "phone1": "+49 221 99"}
    assert before["email"] == "kunde@example.com"
    assert customer["name"] == "Kunde GmbH"


def test_missing_record_is_not_found_and_find_returns_none(client):
    with pytest.raises(NotFound):
        client.get_customer("99999")
    assert client.find_customer("99999") is None
    assert client.find_inventory("NO-SUCH-SKU") is None


def test_customers_are_found_by_email_and_by_corporate_id(client):
    number = new_customer(client, "Beta Bau GmbH", corporateId="HRB 4711")
    new_customer(client, "Gamma GmbH")
    assert [c["number"] for c in client.find_customers_by_email("beta@example.com")] == [number]
    assert client.find_customer_by_corporate_id("HRB 4711")["number"] == number
    assert client.find_customer_by_corporate_id("HRB 0000") is None


def test_delta_read_returns_only_records_modified_since_the_watermark(client, fake_clock):
    first = new_customer(client, "Alt GmbH")
    fake_clock.advance(120)
    watermark = dt.datetime.fromtimestamp(fake_clock.now(), dt.timezone.utc)
    fake_clock.advance(60)
    second = new_customer(client, "Neu GmbH")
    changed = [c["number"] for c in client.list_customers(modified_since=watermark)]
    assert changed == [second]
    client.update_customer(first, {"name": "Alt GmbH (geändert)"})
    changed = {c["number"] for c in client.list_customers(modified_since=watermark)}
    assert changed == {first, second}


def test_inventory_with_barcode_attribute_and_image(client):
    stock_item(client, "SKU-9")
    client.update_inventory(
        "SKU-9", {"attributeLines": [{"attributeId": "FARBE", "attributeValue": "ROT"}]}
    )
    client.create_cross_reference(
        "SKU-9", {"alternateType": "Barcode", "alternateID": "4006381333931"}
    )
    first = client.upload_inventory_attachment("SKU-9", "sku9.png", b"\x89PNG-1", "image/png")
    again = client.upload_inventory_attachment("SKU-9", "sku9.png", b"\x89PNG-2", "image/png")
    assert first == again  # same file name: a new revision of the same attachment
    item = client.get_inventory("SKU-9")
    assert item["attachments"][0]["revision"] == 2
    assert item["attributes"] == [{"id": "FARBE", "value": "ROT", "description": "Farbe"}]
    assert client.list_cross_references("SKU-9")[0]["alternateID"] == "4006381333931"


def test_master_data_reads(client):
    assert {t["termsId"] for t in client.list_credit_terms()} >= {"14", "30", "14S2"}
    assert {p["paymentMethodID"] for p in client.list_payment_methods()} >= {"UEB", "LS"}
    assert {c["carrierId"] for c in client.list_carriers()} >= {"DHL", "DPD", "UPS"}
    assert [w["warehouseID"] for w in client.list_warehouses()] == ["MAIN", "MUC"]
    assert {c["id"] for c in client.list_item_classes()} >= {"WAREN", "DIENST"}
    assert client.get_item_class("WAREN")["type"] == "FinishedGoodItem"
    assert client.list_sales_categories()[0]["subCategories"][0]["description"] == "Papier"
    assert {c["vatCategoryId"] for c in client.list_vat_categories()} >= {"01", "02"}
    assert {v["vatId"] for v in client.list_vats()} >= {"UST19", "UST7"}
    assert {c["id"] for c in client.list_customer_classes()} == {"INLAND", "EU", "DRITT"}
    assert [a["attributeID"] for a in client.list_attributes()] == ["FARBE", "MATERIAL"]
    assert len(list(client.list_customer_sales_prices(inventory_id="FRACHT"))) == 1


# --------------------------------------------------------------------------------------------
# paging
# --------------------------------------------------------------------------------------------
def test_paging_stops_at_total_count_when_the_last_page_is_full(client, sim):
    for index in range(5):
        new_customer(client, f"Kunde{index} GmbH")  # 1 seeded + 5 = 6 customers
    sim.requests.clear()
    customers = list(client.list_customers(page_size=3))
    assert len(customers) == 6
    pages = [e for e in api_requests(sim, "GET", "/v1/customer")]
    assert len(pages) == 2  # no third request for an empty page


def test_oversized_page_size_is_clamped_and_every_record_is_still_read(guard, fake_clock):
    sim = guard.sim
    sim.max_page_size = 4
    client = make_client(guard, fake_clock)
    for index in range(5):
        new_customer(client, f"Kunde{index} GmbH")
    sim.requests.clear()
    numbers = [c["number"] for c in client.list_customers(page_size=50)]
    assert numbers == ["10000", "10001", "10002", "10003", "10004", "10005"]
    assert len(api_requests(sim, "GET", "/v1/customer")) == 2  # 4 + 2


def _scripted(pages: list[list[dict]], *, metadata: bool):
    """A fake Visma.net answering the token and a scripted sequence of list pages."""
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/connect/token":
            return httpx.Response(
                200, json={"access_token": "tok-abcdef", "expires_in": 3600, "token_type": "Bearer"}
            )
        seen.append(dict(request.url.params))
        number = int(request.url.params["pageNumber"])
        items = pages[number - 1] if number <= len(pages) else []
        if metadata:
            total = len({i["number"] for page in pages for i in page})
            items = [{**i, "metadata": {"totalCount": total, "maxPageSize": 3}} for i in items]
        return httpx.Response(200, json=items)

    return httpx.Client(transport=httpx.MockTransport(handler), base_url=BASE), seen


def test_paging_deduplicates_a_record_that_shifted_between_pages(fake_clock):
    pages = [
        [{"number": "A"}, {"number": "B"}, {"number": "C"}],
        [{"number": "C"}, {"number": "D"}, {"number": "E"}],
    ]
    http, seen = _scripted(pages, metadata=True)
    client = make_client(None, fake_clock, http=http)
    numbers = [c["number"] for c in client.list_customers(page_size=3)]
    assert numbers == ["A", "B", "C", "D", "E"]
    assert [p["pageNumber"] for p in seen] == ["1", "2"]


def test_paging_without_metadata_stops_at_the_empty_page(fake_clock):
    pages = [[{"number": "A"}, {"number": "B"}], [{"number": "C"}, {"number": "D"}]]
    http, seen = _scripted(pages, metadata=False)
    client = make_client(None, fake_clock, http=http)
    assert [c["number"] for c in client.list_customers(page_size=2)] == ["A", "B", "C", "D"]
    assert [p["pageNumber"] for p in seen] == ["1", "2", "3"]


def test_paging_stops_when_a_server_ignores_the_page_number(fake_clock):
    same = [{"number": "A"}, {"number": "B"}]
    http, seen = _scripted([same] * 50, metadata=False)
    client = make_client(None, fake_clock, http=http)
    assert [c["number"] for c in client.list_customers(page_size=2)] == ["A", "B"]
    assert len(seen) == 2


# --------------------------------------------------------------------------------------------
# error classes
# --------------------------------------------------------------------------------------------
def test_schema_violation_is_a_400_naming_the_field_and_not_retried(client, sim):
    with pytest.raises(ApiError) as err:
        client.create(
            "/v2/customerinvoice",
            {
                "customerNumber": "10000",
                "invoiceLines": [{"operation": "Insert", "quantity": "zwei"}],
            },
        )
    assert err.value.status == 400
    assert "invoiceLines[0].quantity.value" in str(err.value)
    assert len(api_requests(sim, "POST")) == 1


def test_unknown_vat_code_on_an_invoice_line_is_a_400_naming_field_and_value(client):
    with pytest.raises(ApiError) as err:
        client.create_customer_invoice(
            {
                "customerNumber": "10000",
                "invoiceLines": [
                    {
                        "operation": "Insert",
                        "description": "Beratung",
                        "quantity": 1,
                        "unitPriceInCurrency": 100,
                        "vatCodeId": "99",
                    }
                ],
            }
        )
    assert "invoiceLines[0].vatCodeId" in str(err.value) and "'99'" in str(err.value)


def test_stale_etag_rereads_the_shipment_and_retries_once(client, sim):
    number = open_shipment(client)
    _, old_etag = client.get_shipment_with_etag(number)
    client.update_shipment(number, {"note": "first"}, etag=old_etag)  # moves the ETag on
    sim.requests.clear()
    client.update_shipment(
        number,
        {
            "shipmentPackageLines": [
                {"operation": "Insert", "boxId": "KARTON", "trackingNumber": "00340434161094042557"}
            ]
        },
        etag=old_etag,
    )
    assert [(e["method"], e["status"]) for e in api_requests(sim)] == [
        ("PUT", 412),
        ("GET", 200),
        ("PUT", 204),
    ]
    shipment = Shipment.model_validate(client.get_shipment(number))
    assert shipment.tracking_numbers == ["00340434161094042557"]


def test_a_second_412_is_raised_as_precondition_failed(client, sim):
    number = open_shipment(client)
    sim.faults.add("status", method="PUT", path="^/v1/shipment/", status=412, times=2)
    with pytest.raises(PreconditionFailed):
        client.update_shipment(number, {"note": "x"}, etag='"1"')
    assert [e["method"] for e in api_requests(sim, path=f"/v1/shipment/{number}")][-3:] == [
        "PUT",
        "GET",
        "PUT",
    ]


def test_429_waits_retry_after_on_the_injected_sleep(client, sim, fake_clock):
    client.list_branches()
    sim.faults.add("rate_limit", path="^/v1/customer$", retry_after=7)
    before = fake_clock.slept
    assert len(list(client.list_customers())) == 1
    assert 7 <= fake_clock.slept - before < 8
    assert [e["status"] for e in api_requests(sim, path="/v1/customer")] == [429, 200]


def test_server_error_burst_is_retried_for_reads(client, sim):
    sim.faults.add("status", method="GET", path="^/v1/branch$", status=500, times=2)
    assert len(client.list_branches()) == 2
    assert [e["status"] for e in api_requests(sim)] == [500, 500, 200]


def test_server_error_on_a_create_is_not_retried(client, sim):
    sim.faults.add("status", method="POST", path="^/v1/customer$", status=500)
    with pytest.raises(ServerError):
        new_customer(client)
    assert len(api_requests(sim, "POST")) == 1
    assert list(sim.customers) == ["10000"]


def test_malformed_json_is_reread_once_then_a_protocol_error(client, sim):
    sim.faults.add("malformed", method="GET", path="^/v1/branch$", times=1)
    assert len(client.list_branches()) == 2
    sim.faults.add("malformed", method="GET", path="^/v1/carrier$", times=2)
    with pytest.raises(ProtocolError):
        client.list_carriers()


# --------------------------------------------------------------------------------------------
# quota pacing
# --------------------------------------------------------------------------------------------
def test_three_hours_of_quota_get_no_429_and_finish_at_the_start_of_the_third_window(
    fake_clock,
):
    sim = make_sim(fake_clock, quota_per_hour=10)
    guard = ContractGuard(sim)
    client = make_client(guard, fake_clock)
    start = fake_clock.now()
    for _ in range(30):
        client.list_branches()
    statuses = [e["status"] for e in api_requests(sim)]
    assert statuses == [200] * 30
    assert start + 7200 <= fake_clock.now() < start + 7200 + 5
    assert client.pacer.waited == pytest.approx(7200, abs=5)
    assert client.tokens_fetched == 3  # the 3600 s token is renewed in each new hour
    assert not guard.violations


# --------------------------------------------------------------------------------------------
# lookup before create
# --------------------------------------------------------------------------------------------
INVOICE = {
    "customerNumber": "10000",
    "externalReference": "RE-2025-0042",
    "documentDate": "2025-06-02",
    "invoiceLines": [
        {
            "operation": "Insert",
            "inventoryNumber": "SERVICE",
            "description": "Beratung",
            "quantity": Decimal("2"),
            "unitPriceInCurrency": Decimal("99.95"),
            "vatCodeId": "01",
        },
        {
            "operation": "Insert",
            "inventoryNumber": "FRACHT",
            "quantity": 1,
            "unitPriceInCurrency": Decimal("4.90"),
            "vatCodeId": "01",
        },
    ],
}


def test_lost_create_answer_is_resolved_by_lookup_without_a_duplicate(client, sim):
    sim.faults.add("drop_after_commit", method="POST", path="^/v2/customerinvoice$")
    reference, created = client.ensure_customer_invoice(INVOICE, external_ref="RE-2025-0042")
    assert created is True
    matching = [i for i in sim.invoices.values() if i["externalReference"] == "RE-2025-0042"]
    assert [i["referenceNumber"] for i in matching] == [reference]
    assert [e["method"] for e in api_requests(sim)] == ["GET", "POST", "GET"]
    doc = CustomerDocument.model_validate(client.get_customer_invoice(reference))
    assert doc.detailTotal == Decimal("204.80")
    assert doc.vatTotal == Decimal("38.91")
    assert doc.total == Decimal("243.71")


def test_a_plain_create_whose_answer_is_lost_raises_outcome_unknown(client, sim):
    sim.faults.add("drop_after_commit", method="POST", path="^/v2/customerinvoice$")
    with pytest.raises(OutcomeUnknown):
        client.create_customer_invoice(INVOICE)
    assert len(sim.invoices) == 1  # committed although the answer never came


def test_lost_request_that_never_committed_is_sent_once_more(guard, sim, fake_clock):
    inner = sim_http_client(guard, BASE)._transport
    state = {"dropped": 0}

    class DropFirstPost(httpx.BaseTransport):
        def handle_request(self, request):
            if request.method == "POST" and not state["dropped"] and "invoice" in str(request.url):
                state["dropped"] += 1
                raise httpx.RemoteProtocolError("connection reset", request=request)
            return inner.handle_request(request)

    http = httpx.Client(transport=DropFirstPost(), base_url=BASE)
    client = make_client(guard, fake_clock, http=http)
    reference, created = client.ensure_customer_invoice(INVOICE, external_ref="RE-2025-0042")
    assert created is True and state["dropped"] == 1
    assert [i["referenceNumber"] for i in sim.invoices.values()] == [reference]


def test_an_existing_record_is_used_instead_of_created_again(client, sim):
    first, created = client.ensure_customer_invoice(INVOICE, external_ref="RE-2025-0042")
    again, created_again = client.ensure_customer_invoice(INVOICE, external_ref="RE-2025-0042")
    assert (first, created, created_again) == (again, True, False)
    assert len(api_requests(sim, "POST")) == 1
    number, made = client.ensure_customer({"number": "10000", "name": "x"})
    assert (number, made) == ("10000", False)
    sku, made = client.ensure_inventory(
        {"inventoryNumber": "SKU-NEW", "description": "Neu", "itemClass": "WAREN"}
    )
    assert (sku, made) == ("SKU-NEW", True)
    assert client.ensure_inventory({"inventoryNumber": "SKU-NEW", "description": "Neu"}) == (
        "SKU-NEW",
        False,
    )


def test_sales_order_is_found_by_the_customer_reference_before_create(client, sim):
    customer = new_customer(client)
    stock_item(client)
    order = {
        "orderType": "SO",
        "customer": customer,
        "customerRefNo": "BB-4711",
        "lines": [{"operation": "Insert", "inventoryNumber": "SKU-1", "quantity": 1}],
    }
    sim.faults.add("drop_after_commit", method="POST", path="^/v2/salesorder$")
    number, created = client.ensure_sales_order(order, customer=customer, customer_ref="BB-4711")
    assert created and len(sim.orders) == 1
    assert client.ensure_sales_order(order, customer=customer, customer_ref="BB-4711") == (
        number,
        False,
    )


# --------------------------------------------------------------------------------------------
# stock through the client
# --------------------------------------------------------------------------------------------
def test_stock_flow_adjust_order_ship_confirm(client):
    customer = new_customer(client)
    stock_item(client)
    adjustment = client.create_inventory_adjustment(
        {
            "adjustmentLines": [
                {
                    "operation": "Insert",
                    "inventoryNumber": "SKU-1",
                    "warehouseId": "MAIN",
                    "quantity": 10,
                    "unitCost": 4.2,
                }
            ]
        }
    )
    assert client.release_inventory_adjustment(adjustment)["actionResult"] == "Done"
    order = client.create_sales_order(
        {
            "orderType": "SO",
            "customer": customer,
            "lines": [{"operation": "Insert", "inventoryNumber": "SKU-1", "quantity": 4}],
        }
    )
    row = InventorySummary.model_validate(client.get_inventory_summary("SKU-1")[0])
    assert (row.onHand, row.soBooked, row.available) == (10, 4, 6)
    shipment = client.create_shipment(
        order, order_type="SO", shipment_date=dt.date(2025, 6, 3), warehouse="MAIN"
    )
    client.confirm_shipment(shipment)
    row = InventorySummary.model_validate(
        client.get_inventory_summary("SKU-1", warehouse="MAIN")[0]
    )
    assert (row.onHand, row.soBooked, row.available) == (6, 0, 6)
    assert client.get_sales_order(order, order_type="SO")["status"] == "Completed"


# --------------------------------------------------------------------------------------------
# redaction
# --------------------------------------------------------------------------------------------
def test_client_secret_and_bearer_tokens_never_reach_exchanges_exceptions_or_logs(
    guard, sim, fake_clock, caplog
):
    caplog.set_level(logging.DEBUG)
    exchanges = []
    client = make_client(guard, fake_clock, on_exchange=exchanges.append)
    errors = []
    client.check_connection()
    new_customer(client)
    sim_http_client(guard, BASE).post("/_sim/expire_tokens")
    client.list_branches()  # 401, new token, retry
    try:
        client.get_customer("nope")
    except NotFound as exc:
        errors.append(exc)
    bad = make_client(
        guard, fake_clock, client_secret="wrong-secret-0815", on_exchange=exchanges.append
    )
    try:
        bad.list_branches()
    except AuthError as exc:
        errors.append(exc)
    tokens = list(sim.tokens)
    assert len(tokens) == 2
    text = json.dumps([e.as_dict() | {"headers": e.headers} for e in exchanges], default=str)
    text += " ".join(f"{e!s} {e.args!r} {e.details!r}" for e in errors) + caplog.text
    for secret in (SECRET, "wrong-secret-0815", *tokens):
        assert secret not in text
    token_exchanges = [e for e in exchanges if e.path.endswith("/connect/token")]
    assert token_exchanges and all(
        e.request_body["client_secret"] == "***" for e in token_exchanges
    )
    assert any(e.status == 401 for e in exchanges)


# --------------------------------------------------------------------------------------------
# real loopback HTTP
# --------------------------------------------------------------------------------------------
def test_real_loopback_http_survives_a_dropped_connection_without_duplicate(fake_clock):
    sim = make_sim(fake_clock)
    guard = ContractGuard(sim)
    with serve({0: guard}) as served:
        url = served.urls[0]
        client = VismaClient(
            base_url=url,
            token_url=url + "/connect/token",
            client_id=CLIENT_ID,
            client_secret=SECRET,
            tenant_id=TENANT,
            company_id=COMPANY,
            timeout=5.0,
            clock=fake_clock.now,
            sleep=fake_clock.sleep,
        )
        with client:
            assert client.check_connection()["ok"]
            sim.faults.add("drop_after_commit", method="POST", path="^/v2/customerinvoice$")
            reference, created = client.ensure_customer_invoice(
                INVOICE, external_ref="RE-2025-0042"
            )
            assert created
            assert client.get_customer_invoice(reference)["amount"] == 243.71
    assert len(sim.invoices) == 1
    assert not guard.violations, guard.violations


# --------------------------------------------------------------------------------------------
# wrap_values
# --------------------------------------------------------------------------------------------
def test_wrap_values_wraps_leaves_and_nested_objects_but_not_lists_or_plain_keys():
    body = wrap_values(
        {
            "name": "ACME",
            "creditLimit": Decimal("1500.50"),
            "documentDate": dt.date(2025, 6, 2),
            "mainAddress": {"city": "Köln", "countryId": "DE", "county": None},
            "overrideWithClassValues": True,
            "invoiceLines": [
                {
                    "operation": "Insert",
                    "quantity": Decimal("2"),
                    "subaccount": [{"segmentId": 1, "segmentValue": "10"}],
                }
            ],
            "packaging": {"baseItemWeight": 1.5},
            "note": None,
            "directDebitLines": [{"operation": "Update", "id": Plain("8c1e")}],
            "customerNumber": {"value": "10000"},
        }
    )
    assert body == {
        "name": {"value": "ACME"},
        "creditLimit": {"value": 1500.5},
        "documentDate": {"value": "2025-06-02"},
        "mainAddress": {"value": {"city": {"value": "Köln"}, "countryId": {"value": "DE"}}},
        "overrideWithClassValues": True,
        "invoiceLines": [
            {
                "operation": "Insert",
                "quantity": {"value": 2},
                "subaccount": [{"segmentId": 1, "segmentValue": "10"}],
            }
        ],
        "packaging": {"baseItemWeight": {"value": 1.5}},
        "directDebitLines": [{"operation": "Update", "id": "8c1e"}],
        "customerNumber": {"value": "10000"},
    }


# --------------------------------------------------------------------------------------------
# background API
# --------------------------------------------------------------------------------------------
def test_background_create_is_polled_until_finished_and_returns_the_key(guard, sim, fake_clock):
    client = make_client(guard, fake_clock, background_creates=True)
    number = new_customer(client, "Hintergrund GmbH")
    assert client.get_customer(number)["name"] == "Hintergrund GmbH"
    calls = [(e["method"], e["path"].split("/")[2], e["status"]) for e in api_requests(sim)]
    assert calls[0] == ("POST", "customer", 202)
    assert [c for c in calls if c[1] == "background"] == [
        ("GET", "background", 200),
        ("GET", "background", 200),
        ("GET", "background", 200),
    ]  # Started at 0 s and 1 s, Finished at 3 s (the simulator needs 2 s)


def test_background_create_that_failed_validation_raises_the_typed_error(guard, fake_clock):
    client = make_client(guard, fake_clock, background_creates=True)
    with pytest.raises(ApiError) as err:
        client.create_customer_invoice(
            {
                "customerNumber": "10000",
                "invoiceLines": [{"operation": "Insert", "description": "x", "vatCodeId": "99"}],
            }
        )
    assert err.value.status == 400 and "vatCodeId" in str(err.value)


def test_background_operation_that_never_finishes_is_an_outcome_unknown(fake_clock):
    sim = make_sim(fake_clock, background_seconds=10_000)
    guard = ContractGuard(sim)
    client = make_client(guard, fake_clock, background_creates=True, background_timeout=60)
    with pytest.raises(OutcomeUnknown) as err:
        new_customer(client, "Langsam GmbH")
    assert err.value.details["background_id"] in sim.background_jobs
    assert "10001" in sim.customers  # it was committed: ensure() would find it
    assert not guard.violations, guard.violations
