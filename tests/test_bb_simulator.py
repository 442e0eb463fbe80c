"""The BuchhaltungsButler simulator answers as the swagger says (raw HTTP, no client)."""

from __future__ import annotations

import base64
import importlib.util
import json
import subprocess
import sys
import time
from decimal import Decimal

import httpx
import pytest

from bbvisma.reference import reference_dir
from bbvisma.simulators.bb_contract import BBContract, ContractError
from bbvisma.simulators.buchhaltungsbutler import SEED_FILE, BBSimulator
from bbvisma.simulators.common import sim_http_client

API = "/api/v1"


@pytest.fixture
def creds(bb_seed):
    company = bb_seed["companies"][0]
    client = bb_seed["api_clients"][0]
    return {
        "auth": (client["api_client"], client["api_secret"]),
        "api_key": company["api_key"],
        "inactive_key": bb_seed["companies"][1]["api_key"],
    }


@pytest.fixture
def post(bb_app, creds):
    """POST a body (api_key added unless given) to an API path; returns (status, json|text)."""
    http = sim_http_client(bb_app)

    def call(path, body=None, *, auth=None, raw=None):
        if raw is not None:
            response = http.post(API + path, content=raw, auth=auth or creds["auth"])
        else:
            payload = {"api_key": creds["api_key"], **(body or {})}
            response = http.post(API + path, json=payload, auth=auth or creds["auth"])
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, response.text

    return call


def error(status, code, message):
    return status, {"success": False, "error_code": code, "message": message}


# -- auth and company -------------------------------------------------------------------------
def test_wrong_secret_gets_the_documented_401_error_3(post, creds):
    answer = post("/receipts/get", {"list_direction": "outbound"}, auth=(creds["auth"][0], "x"))
    assert answer == error(401, 3, "API credentials unknown or invalid")


def test_unknown_api_key_gets_401_error_4(post):
    answer = post("/settings/get/debtors", {"api_key": "nobody"})
    assert answer == error(401, 4, "customer not found or insufficient privileges")


def test_inactive_company_gets_403_error_11(post, creds, bb_sim):
    assert post(
        "/receipts/get", {"api_key": creds["inactive_key"], "list_direction": "outbound"}
    ) == error(403, 11, "customer has no active status")
    bb_sim.set_active(creds["api_key"], False)
    assert post("/settings/get/debtors")[0] == 403


def test_unreadable_body_cannot_name_a_company(post):
    assert post("/receipts/get", raw=b"not json")[0:2] == error(
        401, 4, "customer not found or insufficient privileges"
    )


def test_unknown_path_and_get_method_answer_404_html(post, bb_app, creds):
    status, text = post("/receipts/list", {})
    assert status == 404 and text.lstrip().startswith("<!DOCTYPE html>")
    answer = sim_http_client(bb_app).get(API + "/receipts/get", auth=creds["auth"])
    assert answer.status_code == 404 and "text/html" in answer.headers["content-type"]


# -- request validation against the swagger's body parameters --------------------------------
@pytest.mark.parametrize(
    ("path", "body", "code", "message"),
    [
        ("/receipts/get", {}, 5, "invalid list_direction specified"),
        ("/receipts/get", {"list_direction": "sideways"}, 5, "invalid list_direction specified"),
        (
            "/receipts/get",
            {"list_direction": "outbound", "limit": "ten"},
            10,
            "invalid limit specified",
        ),
        (
            "/receipts/get",
            {"list_direction": "outbound", "limit": 501},
            10,
            "invalid limit specified",
        ),
        (
            "/receipts/get",
            {"list_direction": "outbound", "offset": -1},
            12,
            "invalid offset specified",
        ),
        (
            "/receipts/get",
            {"list_direction": "outbound", "date_from": "2025-02-30"},
            7,
            "invalid date_from specified",
        ),
        (
            "/receipts/get",
            {"list_direction": "outbound", "payment_status": "open"},
            6,
            "invalid payment_status specified",
        ),
        (
            "/receipts/get",
            {"list_direction": "outbound", "deleted": "no"},
            14,
            "invalid deleted specified",
        ),
        (
            "/receipts/get",
            {"list_direction": "outbound", "order": {"colour": "ASC"}},
            15,
            "invalid sort field specified",
        ),
        (
            "/receipts/get",
            {"list_direction": "outbound", "order": {"date": "UP"}},
            16,
            "invalid sort value specified",
        ),
        (
            "/receipts/get",
            {"list_direction": "outbound", "date_since_last_modified": "yesterday"},
            19,
            "invalid date_since_last_modified specified",
        ),
        ("/receipts/get/1", {"get_file": "yes"}, 6, "invalid get_file specified"),
        ("/receipts/get/99999", {}, 5, "invalid id_by_customer specified"),
        ("/receipts/get/id_by_customer", {}, 5, "invalid id_by_customer specified"),
        ("/transactions/get", {"limit": 0}, 9, "invalid limit specified"),
        (
            "/transactions/get",
            {"date_since_last_modified": "2025-13-01"},
            14,
            "invalid date_since_last_modified specified",
        ),
        ("/transactions/get/99999", {}, 6, "transaction not found"),
        ("/settings/add/debtor", {"email": "a@b.de"}, 8, "invalid name specified"),
        ("/settings/add/debtor", {"name": "X", "email": "not-mail"}, 20, "invalid email specified"),
        (
            "/settings/add/debtor",
            {"name": "X", "country": "Atlantis"},
            16,
            "invalid country specified",
        ),
        (
            "/settings/add/debtor",
            {"name": "X", "postingaccount_number": "10001"},
            7,
            "invalid postingaccount_number specified",
        ),
        (
            "/settings/update/debtor",
            {"postingaccount_number": "10001"},
            1,
            "wrong debtor account postingaccount_number specified",
        ),
        (
            "/settings/update/debtor",
            {"postingaccount_number": 99999},
            24,
            "no debtor found for specified postingaccount_number",
        ),
        ("/settings/get/debtors", {"limit": 501}, 5, "invalid settings type specified"),
    ],
)
def test_wrong_request_bodies_get_the_endpoints_documented_400(post, path, body, code, message):
    assert post(path, body) == error(400, code, message)


def test_documented_messages_come_from_the_swagger_definitions():
    spec = json.loads((reference_dir() / "buchhaltungsbutler-v1.swagger.json").read_text())
    assert spec["definitions"]["ReceiptsGet_ErrorCode10"]["properties"]["message"]["enum"] == [
        "invalid limit specified"
    ]
    assert BBContract.load().error_body("/receipts/get", 10) == (
        400,
        {"success": False, "error_code": 10, "message": "invalid limit specified"},
    )


def test_contract_check_catches_an_invented_field_and_a_wrong_status():
    contract = BBContract.load()
    good = {"success": True, "message": "", "rows": 0, "data": []}
    contract.validate_response("/receipts/get", 200, good)
    with pytest.raises(ContractError, match="amount_paid"):
        contract.validate_response(
            "/receipts/get", 200, {**good, "rows": 1, "data": [{"amount_paid": "0.00"}]}
        )
    with pytest.raises(ContractError, match="documents no 404"):
        contract.validate_response("/receipts/get", 404, {"success": False, "error_code": 5})
    with pytest.raises(ContractError):
        contract.validate_response(
            "/receipts/get", 400, {"success": False, "error_code": 10, "message": "bad limit"}
        )


# -- lists, filters, paging -------------------------------------------------------------------
def test_receipt_list_is_string_typed_and_split_by_direction(post, bb_seed):
    status, body = post("/receipts/get", {"list_direction": "outbound"})
    seeded = [r for r in bb_seed["companies"][0]["receipts"] if r["type"].endswith("outbound")]
    assert status == 200 and body["success"] is True and body["rows"] == len(seeded)
    first = body["data"][0]
    assert first["amount"] == seeded[0]["amount"] and first["deleted"] == "0"
    _s, inbound = post("/receipts/get", {"list_direction": "inbound"})
    assert {r["type"] for r in inbound["data"]} == {"invoice inbound"}


def test_receipt_paging_limit_offset_and_short_last_page(post):
    _s, everything = post("/receipts/get", {"list_direction": "outbound"})
    total = everything["rows"]
    ids = []
    for offset in range(0, total + 10, 10):
        _s, page = post(
            "/receipts/get", {"list_direction": "outbound", "limit": 10, "offset": offset}
        )
        assert page["rows"] == len(page["data"]) == min(10, max(0, total - offset))
        ids += [r["id_by_customer"] for r in page["data"]]
    assert ids == [r["id_by_customer"] for r in everything["data"]]


def test_receipt_filters_paid_dates_counterparty_and_order(post):
    _s, paid = post("/receipts/get", {"list_direction": "outbound", "payment_status": "paid"})
    _s, unpaid = post("/receipts/get", {"list_direction": "outbound", "payment_status": "unpaid"})
    assert paid["rows"] and unpaid["rows"]
    assert all(r["payment_date"] for r in paid["data"])
    assert not any(r["payment_date"] for r in unpaid["data"])
    _s, window = post(
        "/receipts/get",
        {"list_direction": "outbound", "date_from": "2018-01-01", "date_to": "2018-12-31"},
    )
    assert window["rows"] and all(r["date"].startswith("2018") for r in window["data"])
    _s, named = post("/receipts/get", {"list_direction": "outbound", "counterparty": "klant"})
    assert {r["counterparty"] for r in named["data"]} == {"Klant"}
    _s, ordered = post("/receipts/get", {"list_direction": "outbound", "order": {"amount": "DESC"}})
    amounts = [Decimal(r["amount"]) for r in ordered["data"]]
    assert amounts == sorted(amounts, reverse=True)


def test_date_since_last_modified_returns_only_records_changed_after_it(post, bb_sim, creds):
    since = "2025-05-02 12:00:00"
    _s, body = post(
        "/receipts/get", {"list_direction": "outbound", "date_since_last_modified": since}
    )
    expected = [
        r["id_by_customer"]
        for r in json.loads(SEED_FILE.read_text())["buchhaltungsbutler"]["companies"][0]["receipts"]
        if r["type"].endswith("outbound") and r["modified"] > since
    ]
    assert expected and [r["id_by_customer"] for r in body["data"]] == expected
    # a record edited "now" (the fake clock is weeks after the seed) shows up; others do not
    bb_sim.clock.advance(60)
    now_minus = bb_sim.clock.now() - 30
    from bbvisma.simulators.buchhaltungsbutler import epoch_to_berlin

    bb_sim.modify_receipt(creds["api_key"], 1, payment_date="2025-06-01")
    _s, changed = post(
        "/receipts/get",
        {"list_direction": "outbound", "date_since_last_modified": epoch_to_berlin(now_minus)},
    )
    assert [r["id_by_customer"] for r in changed["data"]] == ["1"]
    assert changed["data"][0]["payment_date"] == "2025-06-01"


def test_a_date_alone_in_date_since_last_modified_means_the_end_of_that_day(post):
    def ids(since):
        _s, body = post(
            "/receipts/get", {"list_direction": "outbound", "date_since_last_modified": since}
        )
        return [r["id_by_customer"] for r in body["data"]]

    # seed: the last e-invoice receipt changed 2025-05-02 12:40, the plain one 2025-05-03 10:15
    assert ids("2025-05-02") == ids("2025-05-02 23:59:59") == ["41"]
    assert ids("2025-05-03") == []
    assert len(ids("2025-05-02 12:00:00")) > 1


def test_debtors_default_page_is_25_and_fields_follow_the_list_answer(post, bb_seed):
    status, body = post("/settings/get/debtors")
    assert status == 200 and body["rows"] == 25
    debtor = body["data"][0]
    seeded = bb_seed["companies"][0]["debtors"][0]
    assert debtor["type"] == "debitor"
    assert debtor["additional_addressline"] == seeded["additional_address_line"]
    assert debtor["sales_tax_id_eu"] == seeded["sales_tax_id"]


# -- receipts with files ----------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["zugferd-pdf", "cii", "ubl"])
def test_get_file_serves_the_reference_file_bytes_and_its_e_invoice_type(post, bb_seed, kind):
    receipt = next(
        r for r in bb_seed["companies"][0]["receipts"] if r.get("file", "").split("/")[1] == kind
    )
    status, body = post(f"/receipts/get/{receipt['id_by_customer']}", {"get_file": True})
    data = body["data"]
    assert status == 200
    assert (
        base64.b64decode(data["file_content"]) == (reference_dir() / receipt["file"]).read_bytes()
    )
    assert (data["file_type"], data["e_invoice_type"]) == (
        ("pdf", "1") if kind == "zugferd-pdf" else ("xml", "2")
    )
    _s, without = post(f"/receipts/get/{receipt['id_by_customer']}", {})
    assert without["data"]["file_content"] is None


def test_receipt_without_e_invoice_has_type_0_and_no_file(post, bb_seed):
    plain = next(
        r
        for r in bb_seed["companies"][0]["receipts"]
        if r["e_invoice_type"] == 0 and r["type"] == "invoice outbound"
    )
    _s, body = post(f"/receipts/get/{plain['id_by_customer']}", {"get_file": True})
    assert body["data"]["e_invoice_type"] == "0"
    assert body["data"]["file_content"] is None and body["data"]["file_type"] is None


# -- writes -----------------------------------------------------------------------------------
def test_add_then_update_debtor_round_trip(post):
    status, added = post(
        "/settings/add/debtor",
        {"name": "Nordlicht GmbH", "country": "Dänemark", "email": "ap@nordlicht.example"},
    )
    assert status == 200 and added["success"] is True
    number = added["postingaccount_number"]
    status, updated = post(
        "/settings/update/debtor", {"postingaccount_number": int(number), "city": "Kolding"}
    )
    assert status == 200
    assert (updated["data"]["country"], updated["data"]["city"]) == ("DK", "Kolding")


def test_batch_add_reports_items_separately_and_is_limited_to_one_call_per_5s(bb_sim, creds):
    http = sim_http_client(bb_sim)
    url = API + "/settings/add-batch/debtors"

    def batch(items):
        body = {"api_key": creds["api_key"], "debtors": items}
        return http.post(url, json=body, auth=creds["auth"])

    answer = batch([{"name": "Eins AG"}, {"name": "Zwei AG", "email": "kaputt"}])
    body = answer.json()
    assert answer.status_code == 200
    assert len(body["debtors"]) == 1 and body["errors"][0]["error_code"] == 20
    BBContract.load().validate_response("/settings/add-batch/debtors", 200, body)
    refused = batch([{"name": "Drei AG"}])
    assert (refused.status_code, refused.json()["error_code"]) == (403, 15)
    bb_sim.clock.advance(5)
    assert batch([{"name": f"D{i}"} for i in range(51)]).json()["error_code"] == 5
    bb_sim.clock.advance(5)
    assert batch([{"name": "Drei AG"}]).status_code == 200


# -- quota ------------------------------------------------------------------------------------
def test_quota_refuses_the_101st_request_in_a_minute_with_429_and_retry_after(bb_app, creds):
    bb_app.sim.quota_per_minute = 100
    http = sim_http_client(bb_app)
    body = {"api_key": creds["api_key"], "limit": 1}
    for _ in range(100):
        assert http.post(API + "/settings/get/debtors", json=body, auth=creds["auth"]).is_success
        bb_app.sim.clock.advance(0.125)  # binary-exact steps: no float noise in the window
    refused = http.post(API + "/settings/get/debtors", json=body, auth=creds["auth"])
    assert refused.status_code == 429
    assert refused.json()["error_code"] == 429
    # the first call (12.5 s ago) leaves the window after 47.5 s more: rounded up to 48
    assert refused.headers["Retry-After"] == "48"
    bb_app.sim.clock.advance(47)
    assert (
        http.post(API + "/settings/get/debtors", json=body, auth=creds["auth"]).status_code == 429
    )
    bb_app.sim.clock.advance(1)
    assert http.post(API + "/settings/get/debtors", json=body, auth=creds["auth"]).is_success
    other = {"api_key": creds["inactive_key"]}  # quotas are per company
    assert (
        http.post(API + "/settings/get/debtors", json=other, auth=creds["auth"]).status_code == 403
    )


# -- faults and control API -------------------------------------------------------------------
def test_injected_500_and_504_use_the_documented_error_bodies(post, bb_sim):
    bb_sim.faults.add("status", status=500)
    bb_sim.faults.add("status", status=504)
    assert post("/settings/get/debtors") == error(500, 0, "error while processing the request")
    assert post("/settings/get/debtors") == error(
        504, 30, "a timeout occurred while processing the request"
    )


def test_sim_modify_reset_and_state_control_endpoints(bb_sim, creds):
    http = sim_http_client(bb_sim)
    changed = http.post(
        "/_sim/modify",
        json={"api_key": creds["api_key"], "debtor": "10001", "changes": {"city": "Halle"}},
    )
    assert changed.json()["city"] == "Halle"
    new = http.post(
        "/_sim/receipts",
        json={
            "api_key": creds["api_key"],
            "amount": "10.00",
            "counterparty": "Neu",
            "date": "2025-06-01",
        },
    )
    assert new.json()["id_by_customer"] == "44"
    http.post("/_sim/company", json={"api_key": creds["api_key"], "active": False})
    assert not bb_sim.company(creds["api_key"]).active
    state = http.get("/_sim/state").json()["state"]
    assert state["companies"][0]["debtors"][0]["city"] == "Halle"
    http.post("/_sim/reset")
    company = bb_sim.company(creds["api_key"])
    assert company.active and 44 not in company.receipts
    assert company.debtors["10001"]["city"] != "Halle"


def test_dump_state_loads_back_into_an_equal_simulator(bb_sim, creds):
    bb_sim.modify_receipt(creds["api_key"], 3, deleted=True)
    copy = BBSimulator(clock=bb_sim.clock)
    copy.load_seed(bb_sim.dump_state())
    assert copy.dump_state() == bb_sim.dump_state()


# -- the default seed -------------------------------------------------------------------------
def _seed_builder():
    path = SEED_FILE.parent / "build_bb_default.py"
    spec = importlib.util.spec_from_file_location("build_bb_default", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_default_seed_has_one_receipt_per_reference_einvoice_with_its_grand_total(bb_seed):
    builder = _seed_builder()
    receipts = [r for r in bb_seed["companies"][0]["receipts"] if r.get("file")]
    files = sorted(
        str(p.relative_to(reference_dir()))
        for sub in ("cii", "ubl", "zugferd-pdf")
        for p in (reference_dir() / "einvoices" / sub).iterdir()
    )
    assert sorted(r["file"] for r in receipts) == files
    debtors = {d["postingaccount_number"]: d for d in bb_seed["companies"][0]["debtors"]}
    for receipt in receipts:
        doc = builder.read_document(reference_dir() / receipt["file"])
        assert Decimal(receipt["amount"]) == Decimal(doc["amount"]), receipt["file"]
        assert receipt["counterparty"] == doc["buyer"]["name"]
        assert receipt["counterparty"].casefold() == debtors[receipt["debtor"]]["name"].casefold()
        assert receipt["type"] == (
            "credit outbound" if doc["type_code"] == "381" else "invoice outbound"
        )
        assert receipt["e_invoice_type"] == (1 if receipt["file"].endswith(".pdf") else 2)


def test_default_seed_has_persons_companies_and_several_countries(bb_seed):
    debtors = bb_seed["companies"][0]["debtors"]
    countries = {d.get("country") for d in debtors}
    assert {"DE", "AT", "FR", "NO", "DK"} <= countries
    assert any(d["name"].endswith(("GmbH", "AG", "Ltd")) for d in debtors)
    assert any(d["name"] == "Anna Schmidt" for d in debtors)
    assert sum(1 for d in debtors if d.get("email")) >= 5
    assert sum(1 for d in debtors if d.get("sales_tax_id")) >= 5


# -- the serve command ------------------------------------------------------------------------
def serve_command(*options: str) -> list[str]:
    """``python -m bbvisma.simulators serve`` on free ports, with further ``options``."""
    return [
        sys.executable,
        "-m",
        "bbvisma.simulators",
        "serve",
        "--bb-port",
        "0",
        "--visma-port",
        "0",
        *options,
    ]


def test_serve_command_prints_urls_and_credentials_and_serves_until_duration(tmp_path, bb_seed):
    seed_file = tmp_path / "seed.json"
    seed_file.write_text(json.dumps({"buchhaltungsbutler": bb_seed}))
    proc = subprocess.Popen(
        serve_command("--seed", str(seed_file), "--duration", "20"),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        while not any(line.startswith("BuchhaltungsButler simulator:") for line in lines):
            line = proc.stdout.readline()
            assert line, "serve exited before printing its URL"
            lines.append(line)
        url = next(li for li in lines if li.startswith("BuchhaltungsButler")).split()[-1]
        client = bb_seed["api_clients"][0]
        body = {"api_key": bb_seed["companies"][0]["api_key"], "limit": 1}
        answer = httpx.post(
            url + "/settings/get/debtors",
            json=body,
            auth=(client["api_client"], client["api_secret"]),
            timeout=5,
        )
        assert answer.json()["rows"] == 1
        while not lines[-1].startswith("control API"):
            lines.append(proc.stdout.readline())
        text = "".join(lines)
        assert bb_seed["companies"][0]["api_key"] in text
        assert bb_seed["api_clients"][0]["api_secret"] in text
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_serve_command_stops_by_itself_after_duration():
    started = time.monotonic()
    done = subprocess.run(
        serve_command("--duration", "0.2"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0 and "/api/v1" in done.stdout
    assert time.monotonic() - started < 20


def test_dump_seed_prints_the_merged_default_seed():
    done = subprocess.run(
        [sys.executable, "-m", "bbvisma.simulators", "dump-seed"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    seed = json.loads(done.stdout)
    assert seed["buchhaltungsbutler"] == json.loads(SEED_FILE.read_text())["buchhaltungsbutler"]
