"""BBClient against the BuchhaltungsButler simulator, in-process and over real loopback HTTP."""

from __future__ import annotations

import json
import logging
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from bbvisma.buchhaltungsbutler import (
    BERLIN,
    BBClient,
    Debtor,
    format_berlin_datetime,
    parse_berlin_datetime,
)
from bbvisma.errors import (
    ApiError,
    AuthError,
    ConfigError,
    NotFound,
    OutcomeUnknown,
    ProtocolError,
    RateLimited,
    RequestTimeout,
    ServerError,
)
from bbvisma.reference import reference_dir
from bbvisma.simulators.buchhaltungsbutler import API_PREFIX, BBSimulator
from bbvisma.simulators.common import serve, sim_http_client

BASE = "http://127.0.0.1" + API_PREFIX


@pytest.fixture
def creds(bb_seed):
    return {
        "api_client": bb_seed["api_clients"][0]["api_client"],
        "api_secret": bb_seed["api_clients"][0]["api_secret"],
        "api_key": bb_seed["companies"][0]["api_key"],
    }


@pytest.fixture
def exchanges():
    return []


@pytest.fixture
def make_client(bb_app, creds, fake_clock, exchanges):
    """A BBClient talking in-process to the contract-guarded simulator, on the fake clock."""
    clients = []

    def make(**overrides):
        kw = {
            "base_url": BASE,
            **creds,
            "http_client": sim_http_client(bb_app, timeout=overrides.pop("timeout", 30.0)),
            "sleep": fake_clock.sleep,
            "clock": fake_clock.now,
            "on_exchange": exchanges.append,
        }
        kw.update(overrides)
        client = BBClient(**kw)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def bb(make_client):
    return make_client()


def api_calls(sim, path=None):
    return [
        e
        for e in sim.requests.entries
        if e["path"].startswith(API_PREFIX) and (path is None or e["path"].endswith(path))
    ]


def small_company(sim, creds, debtors=0):
    """Replace the seed by one company with ``debtors`` numbered debtors."""
    sim.load_seed(
        {
            "api_clients": [{"api_client": creds["api_client"], "api_secret": creds["api_secret"]}],
            "companies": [
                {
                    "api_key": creds["api_key"],
                    "name": "Klein GmbH",
                    "debtors": [
                        {"postingaccount_number": str(10001 + i), "name": f"Kunde {i}"}
                        for i in range(debtors)
                    ],
                }
            ],
        }
    )


# -- connection and credentials ---------------------------------------------------------------
def test_check_connection_makes_one_cheap_call(bb, bb_sim):
    assert bb.check_connection()["ok"] is True
    assert len(api_calls(bb_sim)) == 1


def test_wrong_secret_is_an_auth_error_quoting_the_api_and_not_retried(make_client, bb_sim):
    client = make_client(api_secret="wrong-secret-123")
    with pytest.raises(AuthError) as caught:
        client.check_connection()
    assert str(caught.value) == (
        "BuchhaltungsButler rejected the API credentials "
        "(error 3: API credentials unknown or invalid)"
    )
    assert caught.value.status == 401 and caught.value.code == 3
    assert len(api_calls(bb_sim)) == 1


def test_unknown_api_key_is_an_auth_error_naming_the_company_problem(make_client):
    with pytest.raises(AuthError, match="does not know a company for this API key.*error 4"):
        make_client(api_key="unknown-key-0000").list_debtors()


def test_inactive_company_is_an_auth_error(make_client, bb_seed):
    client = make_client(api_key=bb_seed["companies"][1]["api_key"])
    with pytest.raises(AuthError, match="not active.*error 11: customer has no active status"):
        client.list_receipts(list_direction="outbound")


def test_missing_credentials_are_a_config_error_before_any_call():
    with pytest.raises(ConfigError, match="API secret"):
        BBClient(base_url=BASE, api_client="c", api_secret="", api_key="k")


def test_unknown_path_404_html_is_a_config_error_pointing_at_the_base_url(make_client):
    client = make_client(base_url="http://127.0.0.1/api/v2")
    with pytest.raises(ConfigError, match="no endpoint POST /settings/get/debtors.*base URL"):
        client.list_debtors()


def test_plain_http_to_a_non_loopback_host_is_refused(creds):
    with pytest.raises(ConfigError, match="plain http"):
        BBClient(base_url="http://bb.example.com/api/v1", **creds)


# -- paging -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("page_size", "calls"), [(3, 3), (2, 4), (4, 2), (6, 2), (7, 1)])
def test_iter_debtors_stops_on_the_first_short_page(bb, bb_sim, creds, page_size, calls):
    small_company(bb_sim, creds, debtors=6)
    names = [d.name for d in bb.iter_debtors(page_size=page_size)]
    assert names == [f"Kunde {i}" for i in range(6)]
    # an exactly full last page costs one more (empty) request: rows has no total
    assert len(api_calls(bb_sim, "/settings/get/debtors")) == calls


def test_empty_results_cost_one_request(bb, bb_sim, creds):
    small_company(bb_sim, creds, debtors=0)
    assert list(bb.iter_debtors()) == []
    assert list(bb.iter_receipts(list_direction="outbound")) == []
    assert len(api_calls(bb_sim)) == 2


def test_limit_above_the_maximum_is_refused_before_sending(bb, bb_sim):
    with pytest.raises(ValueError, match="1..500"):
        bb.list_receipts(list_direction="outbound", limit=501)
    with pytest.raises(ValueError, match="1..500"):
        list(bb.iter_transactions(page_size=1000))
    assert api_calls(bb_sim) == []


def test_iter_receipts_pages_through_everything_once(bb, bb_sim, bb_seed):
    got = [r.id_by_customer for r in bb.iter_receipts(list_direction="outbound", page_size=10)]
    expected = [
        r["id_by_customer"]
        for r in bb_seed["companies"][0]["receipts"]
        if r["type"].endswith("outbound")
    ]
    assert got == expected
    assert len(api_calls(bb_sim, "/receipts/get")) == len(expected) // 10 + 1


# -- typed values -----------------------------------------------------------------------------
def test_string_amounts_become_decimals_and_flags_booleans(bb, bb_sim, creds):
    receipts = bb.list_receipts(list_direction="outbound", limit=5)
    assert receipts[0].amount == Decimal("12829.69")
    assert isinstance(receipts[0].amount, Decimal)
    assert receipts[0].deleted is False
    bb_sim.modify_receipt(creds["api_key"], 2, deleted=True)
    deleted = bb.list_receipts(list_direction="outbound", deleted=True)
    assert [(r.id_by_customer, r.deleted) for r in deleted] == [("2", True)]
    debtor = bb.list_debtors(limit=1)[0]
    assert debtor.import_pending is False and debtor.additional_address_line


def test_transaction_times_are_read_as_berlin_local_time(bb):
    detail = bb.get_transaction(1)
    assert detail.booking_date == datetime(2015, 4, 24, 0, 0, tzinfo=BERLIN)
    assert detail.booking_date.utcoffset() == timedelta(hours=2)  # summer time
    assert detail.amount == Decimal("10555.30") and detail.account == "1200"
    winter = parse_berlin_datetime("2018-01-10 00:00:00")
    assert winter.utcoffset() == timedelta(hours=1)
    assert winter.astimezone(timezone.utc) == datetime(2018, 1, 9, 23, 0, tzinfo=timezone.utc)


def test_watermarks_are_sent_as_berlin_wall_time():
    utc = datetime(2025, 1, 15, 9, 30, tzinfo=timezone.utc)
    assert format_berlin_datetime(utc) == "2025-01-15 10:30:00"
    assert format_berlin_datetime(datetime(2025, 7, 1, 9, 30, tzinfo=timezone.utc)) == (
        "2025-07-01 11:30:00"
    )
    assert format_berlin_datetime(datetime(2025, 7, 1, 9, 30)) == "2025-07-01 09:30:00"
    assert format_berlin_datetime(date(2025, 7, 1)) == "2025-07-01 00:00:00"


def test_date_since_last_modified_returns_what_changed_after_the_watermark(bb, bb_sim, creds):
    watermark = datetime.fromtimestamp(bb_sim.clock.now(), timezone.utc)
    assert bb.list_receipts(list_direction="outbound", date_since_last_modified=watermark) == []
    bb_sim.clock.advance(120)
    bb_sim.modify_receipt(creds["api_key"], 7, payment_date="2025-06-02")
    changed = bb.list_receipts(list_direction="outbound", date_since_last_modified=watermark)
    assert [(r.id_by_customer, r.is_paid) for r in changed] == [("7", True)]
    sent = [e for e in api_calls(bb_sim, "/receipts/get")]
    assert len(sent) == 2


def test_get_receipt_with_file_returns_the_exact_reference_bytes(bb, bb_seed):
    for kind, e_type in (("zugferd-pdf", 1), ("ubl", 2)):
        seeded = next(
            r
            for r in bb_seed["companies"][0]["receipts"]
            if r.get("file", "").startswith(f"einvoices/{kind}/")
        )
        detail = bb.get_receipt(seeded["id_by_customer"], get_file=True)
        assert detail.file == (reference_dir() / seeded["file"]).read_bytes()
        assert detail.e_invoice_type == e_type and detail.is_e_invoice
        assert detail.currency == seeded["currency"]
        assert bb.get_receipt(seeded["id_by_customer"]).file is None


def test_receipt_without_e_invoice_has_no_file(bb):
    detail = bb.get_receipt(41, get_file=True)
    assert (detail.e_invoice_type, detail.file, detail.is_e_invoice) == (0, None, False)
    assert detail.vat == Decimal("19.00")


def test_unknown_receipt_id_is_not_found(bb):
    with pytest.raises(NotFound, match="error 5: invalid id_by_customer specified"):
        bb.get_receipt(9999)


# -- transient errors and retries -------------------------------------------------------------
def test_a_burst_of_500s_is_retried_until_success(bb, bb_sim):
    bb_sim.faults.add("status", path="/settings/get/debtors", times=3, status=500)
    assert len(bb.list_debtors(limit=5)) == 5
    assert [e["status"] for e in api_calls(bb_sim)] == [500, 500, 500, 200]


def test_persistent_500_gives_up_after_max_attempts_with_a_server_error(bb, bb_sim):
    bb_sim.faults.add("status", times=None, status=500)
    with pytest.raises(ServerError, match="error 0: error while processing the request"):
        bb.list_debtors()
    assert len(api_calls(bb_sim)) == 4


def test_504_is_a_timeout_and_retried(bb, bb_sim):
    bb_sim.faults.add("status", times=1, status=504)
    assert bb.list_receipts(list_direction="inbound")
    bb_sim.faults.add("status", times=None, status=504)
    with pytest.raises(RequestTimeout, match="error 30"):
        bb.list_receipts(list_direction="inbound")


def test_proxy_html_503_is_a_server_error(bb, bb_sim):
    bb_sim.faults.add("status", times=None, status=503)
    with pytest.raises(ServerError, match="HTTP 503 without an API error body"):
        bb.list_debtors()


def test_malformed_json_on_a_read_is_retried_and_persistent_garbage_names_the_path(bb, bb_sim):
    bb_sim.faults.add("malformed", times=1)
    assert bb.list_debtors(limit=2)
    bb_sim.faults.add("malformed", times=None)
    with pytest.raises(ProtocolError, match="/settings/get/debtors.*envelope"):
        bb.list_debtors(limit=2)


def test_429_is_rate_limited_then_retried_after_retry_after(make_client, bb_sim, fake_clock):
    bb_sim.quota_per_minute = 3  # a server stricter than the client believes
    client = make_client(requests_per_minute=100)
    started = fake_clock.now()
    for _ in range(4):
        client.list_debtors(limit=1)
    statuses = [e["status"] for e in api_calls(bb_sim)]
    assert statuses == [200, 200, 200, 429, 200]
    assert fake_clock.now() - started >= 60  # waited what Retry-After said


def test_429_beyond_retries_raises_rate_limited_with_retry_after(make_client, bb_sim):
    client = make_client(max_attempts=1)
    bb_sim.faults.add("rate_limit", retry_after=7)
    with pytest.raises(RateLimited) as caught:
        client.list_debtors()
    assert caught.value.retry_after == 7 and caught.value.code == 429


def test_client_pacing_keeps_250_calls_within_100_per_minute(make_client, bb_sim, fake_clock):
    client = make_client()
    started = fake_clock.now()
    for _ in range(250):
        client.list_debtors(limit=1)
    times = [e["at"] for e in api_calls(bb_sim)]
    assert len(times) == 250 and bb_sim.quota_refusals == 0
    assert all(e["status"] == 200 for e in api_calls(bb_sim))
    # any 101 consecutive calls span at least 60 s: never more than 100 in a window
    assert min(times[i + 100] - times[i] for i in range(len(times) - 100)) >= 60
    assert fake_clock.now() - started >= 120


# -- writes -----------------------------------------------------------------------------------
def test_add_debtor_returns_the_assigned_account_number(bb, bb_sim, creds):
    debtor = bb.add_debtor(
        name="Nordlicht GmbH",
        email="ap@nordlicht.example",
        country="DK",
        sales_tax_id_eu="DK12345678",
    )
    assert isinstance(debtor, Debtor) and debtor.postingaccount_number == "10031"
    stored = bb_sim.company(creds["api_key"]).debtors["10031"]
    assert stored["sales_tax_id"] == "DK12345678"


def test_add_debtor_with_a_dropped_answer_finds_it_instead_of_adding_twice(bb, bb_sim, creds):
    before = len(bb_sim.company(creds["api_key"]).debtors)
    bb_sim.faults.add("drop_after_commit", path="/settings/add/debtor")
    debtor = bb.add_debtor(name="Fjordlys AS", email="post@fjordlys.example", country="NO")
    debtors = bb_sim.company(creds["api_key"]).debtors
    assert len(debtors) == before + 1
    assert debtors[debtor.postingaccount_number]["name"] == "Fjordlys AS"
    assert len(api_calls(bb_sim, "/settings/add/debtor")) == 1  # never resent


def test_add_debtor_with_a_garbled_answer_finds_it_too(bb, bb_sim, creds):
    before = len(bb_sim.company(creds["api_key"]).debtors)
    bb_sim.faults.add("malformed", path="/settings/add/debtor")
    debtor = bb.add_debtor(name="Hof Sonnenschein", zip="12345")
    assert len(bb_sim.company(creds["api_key"]).debtors) == before + 1
    assert debtor.zip == "12345"


def test_add_debtor_lost_before_commit_raises_outcome_unknown_without_resending(bb, bb_sim, creds):
    before = len(bb_sim.company(creds["api_key"]).debtors)
    bb_sim.faults.add("drop", path="/settings/add/debtor")
    with pytest.raises(OutcomeUnknown, match="not there \\(yet\\); not resent"):
        bb.add_debtor(name="Nebel KG")
    assert len(bb_sim.company(creds["api_key"]).debtors) == before
    assert len(api_calls(bb_sim, "/settings/add/debtor")) == 1


def test_add_debtor_lost_and_re_check_failing_is_still_outcome_unknown(bb, bb_sim):
    bb_sim.faults.add("drop_after_commit", path="/settings/add/debtor")
    bb_sim.faults.add("status", path="/settings/get/debtors", times=None, status=500)
    with pytest.raises(OutcomeUnknown, match="re-checking the debtor list failed too"):
        bb.add_debtor(name="Nebel KG")
    assert len(api_calls(bb_sim, "/settings/add/debtor")) == 1


def test_add_debtor_timeout_in_flight_is_resolved_by_the_re_check(make_client, bb_sim, creds):
    client = make_client(timeout=5.0)
    bb_sim.faults.add("timeout", path="/settings/add/debtor", seconds=60)
    debtor = client.add_debtor(name="Langsam GmbH", city="Leipzig")
    assert (
        bb_sim.company(creds["api_key"]).debtors[debtor.postingaccount_number]["city"] == "Leipzig"
    )


def test_refused_add_debtor_is_an_api_error_with_the_field_named(bb, bb_sim):
    with pytest.raises(ApiError, match=r"HTTP 400, error 20: invalid email specified") as caught:
        bb.add_debtor(name="X", email="not-an-address")
    assert not caught.value.retryable
    assert len(api_calls(bb_sim)) == 1


def test_unknown_debtor_fields_are_refused_locally(bb, bb_sim):
    with pytest.raises(ValueError, match="no field"):
        bb.add_debtor(name="X", phone="123")
    assert api_calls(bb_sim) == []


def test_update_debtor_sends_the_integer_key_and_is_retried_safely(bb, bb_sim, creds):
    bb_sim.faults.add("drop_after_commit", path="/settings/update/debtor")
    bb.update_debtor("10005", city="Aarhus", email="ap@buyercompany.dk")
    stored = bb_sim.company(creds["api_key"]).debtors["10005"]
    assert (stored["city"], stored["email"]) == ("Aarhus", "ap@buyercompany.dk")
    assert [e["status"] for e in api_calls(bb_sim)] == [None, 200]
    with pytest.raises(NotFound, match="error 24"):
        bb.update_debtor(99999, city="Nowhere")


def test_debtor_batch_reports_created_and_refused_items(bb, bb_sim, fake_clock):
    result = bb.add_debtors_batch([{"name": "Eins AG"}, {"name": "Zwei AG", "email": "kaputt"}])
    assert len(result.created) == 1 and result.errors[0]["error_code"] == 20
    started = fake_clock.now()
    bb.add_debtors_batch([{"name": "Drei AG"}])  # paced: one batch call per 5 s
    assert fake_clock.now() - started >= 5
    assert all(e["status"] == 200 for e in api_calls(bb_sim))


# -- secrets ----------------------------------------------------------------------------------
def test_secrets_never_reach_exchanges_exceptions_or_logs(
    make_client, bb_app, bb_sim, creds, exchanges, caplog
):
    caplog.set_level(logging.DEBUG)
    client = make_client()
    texts = []
    client.list_debtors(limit=2)
    # a server that echoes the key in its message must not leak it either
    bb_sim.faults.add(
        "status",
        times=None,
        status=500,
        body={"success": False, "error_code": 0, "message": f"failed for {creds['api_key']}"},
    )
    with pytest.raises(ServerError) as caught:
        client.list_debtors()
    texts.append(str(caught.value))
    bb_sim.faults.clear()
    # that echo is off-contract on purpose: expect exactly those breaches, then none
    assert bb_app.violations and all("failed for" in v for v in bb_app.violations)
    bb_app.violations.clear()
    with pytest.raises(AuthError) as caught:
        make_client(api_secret="another-wrong-secret").list_debtors()
    texts.append(str(caught.value))
    bb_sim.faults.add("drop_after_commit")
    client.add_debtor(name="Geheim GmbH")
    dumped = json.dumps([e.as_dict() for e in exchanges], default=str)
    assert exchanges and '"***"' in dumped  # the api_key field is masked, not dropped
    for secret in (creds["api_key"], creds["api_secret"], "another-wrong-secret"):
        assert secret not in dumped
        assert all(secret not in t for t in texts)
        assert secret not in caplog.text
    assert "failed for ***" in texts[0]


# -- over real loopback HTTP ------------------------------------------------------------------
@pytest.fixture
def served(bb_app):
    with serve({0: bb_app}) as running:
        yield running.urls[0] + API_PREFIX


@pytest.fixture
def http_client(served, creds, fake_clock):
    client = BBClient(
        base_url=served, **creds, timeout=2.0, sleep=fake_clock.sleep, clock=fake_clock.now
    )
    yield client
    client.close()


def test_over_http_paging_files_and_errors_behave_as_in_process(http_client, bb_sim, bb_seed):
    assert len(list(http_client.iter_debtors(page_size=7))) == len(
        bb_seed["companies"][0]["debtors"]
    )
    detail = http_client.get_receipt(29, get_file=True)
    assert detail.file.startswith(b"%PDF")
    bb_sim.faults.add("status", times=2, status=500)
    assert http_client.list_receipts(list_direction="inbound")


def test_over_http_a_dropped_add_debtor_is_found_not_duplicated(http_client, bb_sim, creds):
    before = len(bb_sim.company(creds["api_key"]).debtors)
    bb_sim.faults.add("drop_after_commit", path="/settings/add/debtor")
    debtor = http_client.add_debtor(name="Socket Schmidt GmbH")
    assert len(bb_sim.company(creds["api_key"]).debtors) == before + 1
    assert debtor.postingaccount_number in bb_sim.company(creds["api_key"]).debtors


def test_over_http_a_slow_read_times_out_and_is_retried(served, creds, bb_sim, fake_clock):
    client = BBClient(
        base_url=served, **creds, timeout=0.2, sleep=fake_clock.sleep, clock=fake_clock.now
    )
    bb_sim.faults.add("timeout", path="/receipts/get", seconds=0.6)
    try:
        assert client.list_receipts(list_direction="inbound", limit=5)
    finally:
        client.close()
    assert len(api_calls(bb_sim, "/receipts/get")) == 2


def test_over_http_wrong_secret_and_unknown_path(served, creds):
    with (
        BBClient(base_url=served, **{**creds, "api_secret": "nope-nope"}) as client,
        pytest.raises(AuthError, match="error 3"),
    ):
        client.check_connection()
    wrong = served.replace("/api/v1", "/v1")
    with BBClient(base_url=wrong, **creds) as client, pytest.raises(ConfigError, match="404"):
        client.check_connection()


def test_simulator_fixture_is_contract_guarded(bb_app):
    assert isinstance(bb_app.sim, BBSimulator)
