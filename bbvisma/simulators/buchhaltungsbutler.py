"""A stateful, contract-true BuchhaltungsButler API v1 simulator (WSGI).

It answers the endpoints the sync uses, exactly as the vendored swagger describes them
(``<reference>/buchhaltungsbutler-v1.swagger.json``, read at runtime through
:class:`~bbvisma.simulators.bb_contract.BBContract`, so paths, body fields, error codes,
HTTP statuses and messages come from the spec, not from this file):

=================================  ==========================================================
``POST /settings/get/debtors``     ``limit`` (default 25) + ``offset``
``POST /settings/add/debtor``      answers the new ``postingaccount_number``
``POST /settings/add-batch/debtors`` up to 50 items, one call per 5 s and company
``POST /settings/update/debtor``   by ``postingaccount_number``
``POST /receipts/get``             ``list_direction`` (required), ``payment_status``,
                                   ``counterparty``, ``date_from``/``date_to``, ``due_date``,
                                   ``invoicenumber``, ``deleted``, ``order``, ``limit`` (<= 500),
                                   ``offset``, ``date_since_last_modified``
``POST /receipts/get/<id>``        the id stands where the swagger writes ``id_by_customer``;
                                   ``get_file: true`` adds ``file_content`` (base64) + ``file_type``
``POST /transactions/get``         id/date/account/to_from filters, ``limit`` (<= 500),
                                   ``offset``, ``date_since_last_modified``
``POST /transactions/get/<id>``
=================================  ==========================================================

Everything is served under ``/api/v1`` (the real base path), so a client's base URL is
``http://127.0.0.1:<port>/api/v1``.

Order of checks for an API request (each answer is the documented body of that endpoint):
HTTP Basic credentials (API client + secret) -> 401 error 3; ``api_key`` unknown or body
unreadable -> 401 error 4 (400 error 23 where an endpoint documents it); quota -> 429; company
inactive -> 403 error 11; body schema (built from the swagger's ``in: body`` parameters) and
value checks -> 400 with the code whose message names the field (``"invalid limit
specified"``); then the operation.

Choices where BuchhaltungsButler documents nothing (clients must not rely on more):

* **Quota**: 100 requests per sliding 60 s per ``api_key`` (``quota_per_minute``, ``None``
  disables). Beyond it: HTTP **429**, header ``Retry-After: <seconds>``, body
  ``{"success": false, "error_code": 429, "message": "request quota of N per minute exceeded"}``.
  Refused requests do not count.
* **Debtor list limit**: the swagger names a default (25) but no maximum and no "invalid limit"
  error. The simulator allows up to 500 (like receipts and transactions) and answers a limit
  outside 1..500 with the endpoint's only documented 400, error 5.
* **Unknown path or non-POST method**: 404 with an HTML page (as the real server does for
  unknown paths). A documented path the simulator does not implement answers 501.
* **Unset values** are JSON ``null`` (the live API sends ``null`` for unset strings);
  amounts are strings with two decimals, flags ``"0"``/``"1"``.
* **Modification time**: BuchhaltungsButler exposes none in its answers; the simulator keeps
  one per record (seed ``modified``, Berlin wall time, or the time of the last change) only to
  answer ``date_since_last_modified`` (strictly after; a date alone means 23:59:59).
* **Receipt files**: a seed receipt names a reference file (``einvoices/cii/...``); with
  ``get_file`` the bytes are served base64 and ``file_type`` is ``pdf``/``xml``. A receipt with
  ``e_invoice_type`` 0 and no file (the plain-PDF case) answers without ``file_content`` and
  ``file_type`` (both ``null``).
* **Fault statuses** without a body: 500 and 504 answer the documented error 0 / 30 body;
  other statuses an HTML page, as a proxy in front of the API would.

Control API (``/_sim/...``, see :class:`~bbvisma.simulators.common.SimulatorBase`) adds:
``POST /_sim/modify`` ``{"api_key", "receipt"|"debtor"|"transaction": id, "changes": {...}}``
(a record changed in the web UI: its modification time moves to now),
``POST /_sim/receipts`` ``{"api_key", ...fields}`` (a new receipt) and
``POST /_sim/company`` ``{"api_key", "active": bool}``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bbvisma.reference import reference_dir

from .bb_contract import QUOTA_ERROR_CODE, QUOTA_STATUS, BBContract
from .common import (
    Clock,
    Faults,
    SimRequest,
    SimResponse,
    SimulatorBase,
    json_response,
    text_response,
)

BERLIN = ZoneInfo("Europe/Berlin")
API_PREFIX = "/api/v1"
SEED_FILE = Path(__file__).resolve().parent / "seed" / "bb_default.json"
SEED_SECTION = "buchhaltungsbutler"

MAX_LIST_LIMIT = 500
DEBTOR_DEFAULT_LIMIT = 25
DEBTOR_MAX_LIMIT = 500
BATCH_MAX_ITEMS = 50
BATCH_MIN_INTERVAL = 5.0
#: /settings/add-batch/debtors documents no 400 at all; these answers are borrowed from
#: /receipts/addBatch (codes 5 and 6), the documented sibling
BATCH_ERRORS = {5: "Number of debtors exceeded", 6: "No debtors found"}
#: SKR03/SKR04 debtor accounts
DEBTOR_ACCOUNT_RANGE = (10000, 69999)

NOT_FOUND_HTML = (
    "<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>"
    "<h1>Not Found</h1><p>The requested URL was not found on this server.</p></body></html>\n"
)
GENERIC_ERRORS = {
    0: (500, "error while processing the request"),
    30: (504, "a timeout occurred while processing the request"),
}
#: countries the simulator accepts by German name besides ISO alpha-2 codes
GERMAN_COUNTRY_NAMES = {
    "deutschland": "DE",
    "österreich": "AT",
    "schweiz": "CH",
    "frankreich": "FR",
    "norwegen": "NO",
    "dänemark": "DK",
    "schweden": "SE",
    "niederlande": "NL",
    "belgien": "BE",
    "italien": "IT",
    "spanien": "ES",
    "polen": "PL",
    "vereinigtes königreich": "GB",
}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}( \d{2}:\d{2}:\d{2})?$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_IBAN = re.compile(r"^[A-Z]{2}\d{2}[A-Z0-9]{10,30}$")
_BIC = re.compile(r"^[A-Z]{6}[A-Z0-9]{2}([A-Z0-9]{3})?$")
_VAT_ID = re.compile(r"^[A-Z]{2}[A-Z0-9 ]{2,14}$")


class _Refusal(Exception):
    """An error answer, raised from deep inside a handler."""

    def __init__(self, response: SimResponse):
        super().__init__(response.status)
        self.response = response


@dataclass
class Company:
    """One company (Mandant), selected by its ``api_key``."""

    api_key: str
    name: str
    active: bool = True
    debtors: dict[str, dict[str, Any]] = field(default_factory=dict)
    receipts: dict[int, dict[str, Any]] = field(default_factory=dict)
    transactions: dict[int, dict[str, Any]] = field(default_factory=dict)
    calls: deque = field(default_factory=deque)
    last_batch: float | None = None
    #: the debtors' numbers and the receipts' ids in list order, kept between list calls (a
    #: list call costs what it lists, as a server's index makes it, not a sort of every row)
    _debtor_order: list[str] = field(default_factory=list, repr=False)
    _receipt_order: list[int] = field(default_factory=list, repr=False)

    def debtor_order(self) -> list[str]:
        """The debtors' numbers in the order /settings/get/debtors lists them."""
        self._debtor_order = _in_order(self.debtors, self._debtor_order, key=int)
        return self._debtor_order

    def receipt_order(self) -> list[int]:
        """The receipts' ids in ascending order (how /receipts/get reads them)."""
        self._receipt_order = _in_order(self.receipts, self._receipt_order)
        return self._receipt_order


def _in_order(rows: dict, order: list, key: Any = None) -> list:
    """``rows``' keys sorted: ``order`` again while it still holds as many keys -- a
    company's debtors and receipts are only ever added (a deleted receipt is flagged), and a
    key never changes."""
    return order if len(order) == len(rows) else sorted(rows, key=key)


# --------------------------------------------------------------------------------------------
# Value helpers
# --------------------------------------------------------------------------------------------
def berlin_to_epoch(text: str) -> float:
    """``YYYY-MM-DD HH:MM:SS`` (or a date, meaning 23:59:59) in Berlin time -> epoch seconds."""
    text = text.strip()
    if len(text) == 10:
        moment = datetime.combine(date.fromisoformat(text), time(23, 59, 59))
    else:
        moment = datetime.strptime(text, "%Y-%m-%d %H:%M:%S")
    return moment.replace(tzinfo=BERLIN).timestamp()


def epoch_to_berlin(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, BERLIN).strftime("%Y-%m-%d %H:%M:%S")


def _valid_date(value: Any) -> bool:
    if not isinstance(value, str) or not _DATE.match(value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _valid_datetime(value: Any) -> bool:
    if not isinstance(value, str) or not _DATETIME.match(value):
        return False
    try:
        berlin_to_epoch(value)
    except ValueError:
        return False
    return True


def _money(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return str(Decimal(str(value)).quantize(Decimal("0.01")))


def _flag(value: Any) -> str:
    return "1" if value else "0"


# --------------------------------------------------------------------------------------------
# The simulator
# --------------------------------------------------------------------------------------------
class BBSimulator(SimulatorBase):
    """The BuchhaltungsButler API v1 as a WSGI app (see the module docstring).

    :param quota_per_minute: requests per sliding minute and ``api_key`` (``None`` = no quota)
    :param quota_window: the window in seconds (60)
    :param debtor_max_limit: the largest ``limit`` /settings/get/debtors accepts
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        faults: Faults | None = None,
        quota_per_minute: int | None = 100,
        quota_window: float = 60.0,
        debtor_max_limit: int = DEBTOR_MAX_LIMIT,
        contract: BBContract | None = None,
    ):
        super().__init__(clock=clock, faults=faults)
        self.quota_per_minute = quota_per_minute
        self.quota_window = quota_window
        self.debtor_max_limit = debtor_max_limit
        self.contract = contract or BBContract.load()
        self.credentials: dict[str, str] = {}
        self.companies: dict[str, Company] = {}
        self.quota_refusals = 0
        #: optional ``file_loader(record) -> (bytes, "xml"|"pdf") | None``: serves receipt files
        #: generated on demand (benchmarks: 50 000 e-invoices never sit in memory as files);
        #: ``None`` from it, or no loader, reads ``record["file"]`` from the reference folder
        self.file_loader: Callable[[dict[str, Any]], tuple[bytes, str] | None] | None = None
        self._routes = {
            "/settings/get/debtors": self._get_debtors,
            "/settings/add/debtor": self._add_debtor,
            "/settings/add-batch/debtors": self._add_debtors_batch,
            "/settings/update/debtor": self._update_debtor,
            "/receipts/get": self._get_receipts,
            "/receipts/get/id_by_customer": self._get_receipt,
            "/transactions/get": self._get_transactions,
            "/transactions/get/id_by_customer": self._get_transaction,
        }
        # the fields each answer may carry: the swagger's, never more
        c = self.contract
        self._receipt_list_fields = _item_fields(c, "/receipts/get")
        self._receipt_fields = _object_fields(c, "/receipts/get/id_by_customer")
        self._transaction_list_fields = _item_fields(c, "/transactions/get")
        self._transaction_fields = _object_fields(c, "/transactions/get/id_by_customer")
        self._debtor_fields = _item_fields(c, "/settings/get/debtors") + ["customer_number"]

    @classmethod
    def with_default_seed(cls, **kw: Any) -> BBSimulator:
        sim = cls(**kw)
        sim.load_seed(default_seed())
        return sim

    # ========================================================================================
    # Seed and state
    # ========================================================================================
    def reset_state(self) -> None:
        self.credentials.clear()
        self.companies.clear()
        self.quota_refusals = 0

    def load_seed(self, section: dict[str, Any]) -> None:
        """Replace all data by ``section`` (the ``buchhaltungsbutler`` part of a seed file)."""
        with self.lock:
            self.remember_seed(section)
            self.reset_state()
            for cred in section.get("api_clients", []):
                self.credentials[cred["api_client"]] = cred["api_secret"]
            loaded_at = self.clock.now()
            for spec in section.get("companies", []):
                company = Company(
                    api_key=spec["api_key"],
                    name=spec.get("name", spec["api_key"]),
                    active=spec.get("active", True),
                )
                for debtor in spec.get("debtors", []):
                    record = self._stamp(dict(debtor), loaded_at)
                    record["postingaccount_number"] = str(record["postingaccount_number"])
                    company.debtors[record["postingaccount_number"]] = record
                for receipt in spec.get("receipts", []):
                    record = self._stamp(dict(receipt), loaded_at)
                    company.receipts[int(record["id_by_customer"])] = record
                for transaction in spec.get("transactions", []):
                    record = self._stamp(dict(transaction), loaded_at)
                    company.transactions[int(record["id_by_customer"])] = record
                self.companies[company.api_key] = company

    @staticmethod
    def _stamp(record: dict[str, Any], default: float) -> dict[str, Any]:
        modified = record.pop("modified", None)
        record["_modified"] = berlin_to_epoch(modified) if modified else default
        return record

    def dump_state(self) -> dict[str, Any]:
        """The current data in seed format (loadable again with :meth:`load_seed`)."""

        def plain(record: dict[str, Any]) -> dict[str, Any]:
            out = {k: v for k, v in record.items() if not k.startswith("_")}
            out["modified"] = epoch_to_berlin(record["_modified"])
            return out

        return {
            "api_clients": [
                {"api_client": k, "api_secret": v} for k, v in sorted(self.credentials.items())
            ],
            "companies": [
                {
                    "api_key": c.api_key,
                    "name": c.name,
                    "active": c.active,
                    "debtors": [plain(d) for _k, d in sorted(c.debtors.items())],
                    "receipts": [plain(r) for _k, r in sorted(c.receipts.items())],
                    "transactions": [plain(t) for _k, t in sorted(c.transactions.items())],
                    "requests_in_quota_window": len(c.calls),
                }
                for c in self.companies.values()
            ],
        }

    # -- test-side changes ("someone edited this in the web UI") ------------------------------
    def company(self, api_key: str) -> Company:
        try:
            return self.companies[api_key]
        except KeyError:
            raise KeyError("no company with that api_key in the simulator") from None

    def modify_receipt(self, api_key: str, id_by_customer: int | str, **changes: Any) -> dict:
        with self.lock:
            record = self.company(api_key).receipts[int(id_by_customer)]
            record.update(changes)
            record["_modified"] = self.clock.now()
            return dict(record)

    def modify_debtor(self, api_key: str, postingaccount_number: str, **changes: Any) -> dict:
        with self.lock:
            record = self.company(api_key).debtors[str(postingaccount_number)]
            record.update(changes)
            record["_modified"] = self.clock.now()
            return dict(record)

    def modify_transaction(self, api_key: str, id_by_customer: int | str, **changes: Any) -> dict:
        with self.lock:
            record = self.company(api_key).transactions[int(id_by_customer)]
            record.update(changes)
            record["_modified"] = self.clock.now()
            return dict(record)

    def add_receipt(self, api_key: str, **fields: Any) -> str:
        """A new receipt (e.g. uploaded in the web UI); returns its ``id_by_customer``."""
        with self.lock:
            company = self.company(api_key)
            new_id = max(company.receipts, default=0) + 1
            record = {"type": "invoice outbound", "e_invoice_type": 0, **fields}
            record["id_by_customer"] = str(new_id)
            record["_modified"] = self.clock.now()
            company.receipts[new_id] = record
            return str(new_id)

    def add_records(
        self, api_key: str, *, debtors: Iterable[dict] = (), receipts: Iterable[dict] = ()
    ) -> int:
        """Bulk-load debtors and receipts (seed shape, ``modified`` optional) into an existing
        company from any iterable -- a generator works, nothing is copied first (unlike
        :meth:`load_seed`, these records are not restored by ``/_sim/reset``). Returns the
        number of records added."""
        added = 0
        with self.lock:
            company = self.company(api_key)
            loaded_at = self.clock.now()
            for debtor in debtors:
                record = self._stamp(dict(debtor), loaded_at)
                record["postingaccount_number"] = str(record["postingaccount_number"])
                company.debtors[record["postingaccount_number"]] = record
                added += 1
            for receipt in receipts:
                record = self._stamp(dict(receipt), loaded_at)
                company.receipts[int(record["id_by_customer"])] = record
                added += 1
        return added

    def set_active(self, api_key: str, active: bool) -> None:
        with self.lock:
            self.company(api_key).active = active

    def handle_sim(self, request: SimRequest, name: str) -> SimResponse | None:
        if request.method != "POST" or name not in ("modify", "receipts", "company"):
            return None
        try:
            body = request.json()
            api_key = body["api_key"]
            if name == "modify":
                changes = body.get("changes") or {}
                if "receipt" in body:
                    record = self.modify_receipt(api_key, body["receipt"], **changes)
                elif "debtor" in body:
                    record = self.modify_debtor(api_key, body["debtor"], **changes)
                elif "transaction" in body:
                    record = self.modify_transaction(api_key, body["transaction"], **changes)
                else:
                    raise KeyError("receipt, debtor or transaction")
                record.pop("_modified", None)
                return json_response(200, record)
            if name == "receipts":
                fields = {k: v for k, v in body.items() if k != "api_key"}
                return json_response(200, {"id_by_customer": self.add_receipt(api_key, **fields)})
            self.set_active(api_key, bool(body["active"]))
            return json_response(200, {"active": bool(body["active"])})
        except (KeyError, ValueError, TypeError) as exc:
            return json_response(400, {"error": f"invalid control request: {exc}"})

    # ========================================================================================
    # Hooks of SimulatorBase
    # ========================================================================================
    def fault_status_response(self, status: int, body: Any = None) -> SimResponse:
        if body is not None:
            return super().fault_status_response(status, body)
        for code, (known_status, message) in GENERIC_ERRORS.items():
            if known_status == status:
                return json_response(
                    status, {"success": False, "error_code": code, "message": message}
                )
        return text_response(
            status,
            f"<html><body><h1>{status}</h1><p>upstream unavailable</p></body></html>",
            "text/html; charset=utf-8",
        )

    def rate_limit_response(self, retry_after: float | None) -> SimResponse:
        return self._quota_response(retry_after if retry_after is not None else 1.0)

    def internal_error_response(self, exc: Exception) -> SimResponse:
        status, message = GENERIC_ERRORS[0]
        return json_response(status, {"success": False, "error_code": 0, "message": message})

    def log_extra(self, request: SimRequest) -> dict[str, Any]:
        """Each log entry carries its arrival time (simulator clock), to check pacing."""
        return {"at": self.clock.now()}

    # ========================================================================================
    # Request handling
    # ========================================================================================
    def handle(self, request: SimRequest) -> SimResponse:
        if not request.path.startswith(API_PREFIX + "/"):
            return self._not_found()
        spec_path = self.contract.spec_path(request.path[len(API_PREFIX) :])
        if spec_path is None or request.method != "POST":
            return self._not_found()
        route = self._routes.get(spec_path)
        if route is None:
            return json_response(
                501,
                {"success": False, "error_code": 0, "message": f"{spec_path}: not simulated"},
            )
        try:
            if not self._authenticated(request):
                return self._error(spec_path, 3)
            body = self._body(request, spec_path)
            company = self.companies.get(body.get("api_key"))  # type: ignore[arg-type]
            if not isinstance(body.get("api_key"), str) or company is None:
                return self._error(spec_path, 4)
            refusal = self._count_quota(company)
            if refusal is not None:
                return refusal
            if not company.active:
                return self._error(spec_path, 11)
            self._validate_schema(spec_path, body)
            return route(company, body, request)
        except _Refusal as refusal:
            return refusal.response

    # -- the steps ----------------------------------------------------------------------------
    @staticmethod
    def _not_found() -> SimResponse:
        return text_response(404, NOT_FOUND_HTML, "text/html; charset=UTF-8")

    def _error(self, spec_path: str, code: int) -> SimResponse:
        status, body = self.contract.error_body(spec_path, code)
        return json_response(status, body)

    def _refuse(self, spec_path: str, code: int) -> _Refusal:
        return _Refusal(self._error(spec_path, code))

    def _refuse_field(self, spec_path: str, field_name: str) -> _Refusal:
        code = self.contract.field_error_code(spec_path, field_name)
        if code is None:
            code = self.contract.fallback_error_code(spec_path)
        return self._refuse(spec_path, code)

    def _authenticated(self, request: SimRequest) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or not encoded:
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        client, sep, secret = decoded.partition(":")
        return bool(sep) and client in self.credentials and self.credentials[client] == secret

    def _body(self, request: SimRequest, spec_path: str) -> dict[str, Any]:
        try:
            body = request.json()
        except (ValueError, UnicodeDecodeError):
            body = None
        if isinstance(body, dict):
            return body
        # without a readable body there is no api_key: the company cannot be found
        if 23 in self.contract.errors(spec_path):
            raise self._refuse(spec_path, 23)
        raise self._refuse(spec_path, 4)

    def _count_quota(self, company: Company) -> SimResponse | None:
        if not self.quota_per_minute:
            return None
        now = self.clock.now()
        calls = company.calls
        while calls and now - calls[0] >= self.quota_window:
            calls.popleft()
        if len(calls) >= self.quota_per_minute:
            self.quota_refusals += 1
            return self._quota_response(self.quota_window - (now - calls[0]))
        calls.append(now)
        return None

    def _quota_response(self, retry_after: float) -> SimResponse:
        seconds = max(1, math.ceil(retry_after))  # rounded up: waiting that long is enough
        return json_response(
            QUOTA_STATUS,
            {
                "success": False,
                "error_code": QUOTA_ERROR_CODE,
                "message": f"request quota of {self.quota_per_minute} per minute exceeded",
            },
            [("Retry-After", str(seconds))],
        )

    def _validate_schema(self, spec_path: str, body: dict[str, Any]) -> None:
        batch = spec_path == "/settings/add-batch/debtors"
        # batch items are checked one by one by the handler (each gets its own error entry)
        problems = self.contract.validate_request(spec_path, body, shallow=batch)
        if not problems:
            return
        if batch:
            raise _Refusal(self._batch_error(6))
        order = list(self.contract.request_schema(spec_path)["properties"])
        problems.sort(key=lambda p: order.index(p[0]) if p[0] in order else len(order))
        field_name = problems[0][0]
        if field_name == "order":
            raise self._refuse(spec_path, 16)
        raise self._refuse_field(spec_path, field_name or "")

    @staticmethod
    def _page(body: dict[str, Any], default: int, maximum: int) -> tuple[int, int] | str:
        limit = body.get("limit", default)
        offset = body.get("offset", 0)
        if not 1 <= limit <= maximum:
            return "limit"
        if offset < 0:
            return "offset"
        return limit, offset

    def _paged(
        self, spec_path: str, body: dict[str, Any], default: int, maximum: int
    ) -> tuple[int, int]:
        page = self._page(body, default, maximum)
        if isinstance(page, str):
            raise self._refuse_field(spec_path, page)
        return page

    @staticmethod
    def _list(rows: list[dict[str, Any]]) -> SimResponse:
        return json_response(200, {"success": True, "message": "", "rows": len(rows), "data": rows})

    # ========================================================================================
    # Debtors
    # ========================================================================================
    def _debtor_out(self, record: dict[str, Any]) -> dict[str, Any]:
        values = {
            "type": "debitor",
            "name": record.get("name"),
            "contact_person_name": record.get("contact_person_name"),
            "street": record.get("street"),
            "additional_addressline": record.get("additional_address_line"),
            "zip": record.get("zip"),
            "city": record.get("city"),
            "country": record.get("country"),
            "sales_tax_id_eu": record.get("sales_tax_id"),
            "email": record.get("email"),
            "uid_ch": None,
            "iban": record.get("iban"),
            "bic": record.get("bic"),
            "postingaccount_number": record["postingaccount_number"],
            "import_pending": 0,
            "customer_number": record.get("customer_number"),
        }
        return {k: values.get(k) for k in self._debtor_fields}

    def _get_debtors(self, company: Company, body: dict, _request: SimRequest) -> SimResponse:
        spec_path = "/settings/get/debtors"
        limit, offset = self._paged(spec_path, body, DEBTOR_DEFAULT_LIMIT, self.debtor_max_limit)
        page = company.debtor_order()[offset : offset + limit]
        return self._list([self._debtor_out(company.debtors[number]) for number in page])

    def _check_debtor_fields(self, spec_path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Value checks of add/update debtor; returns the cleaned fields to store."""
        clean: dict[str, Any] = {}
        for name in (
            "name",
            "contact_person_name",
            "street",
            "additional_address_line",
            "customer_number",
            "zip",
            "city",
        ):
            if name in body:
                value = body[name]
                if not isinstance(value, str) or not value.strip() or len(value) > 255:
                    raise self._refuse_field(spec_path, name)
                clean[name] = value.strip()
        if "country" in body:
            country = body["country"].strip()
            if re.fullmatch(r"[A-Za-z]{2}", country):
                clean["country"] = country.upper()
            elif country.lower() in GERMAN_COUNTRY_NAMES:
                clean["country"] = GERMAN_COUNTRY_NAMES[country.lower()]
            else:
                raise self._refuse_field(spec_path, "country")
        checks = (("sales_tax_id", _VAT_ID), ("email", _EMAIL), ("iban", _IBAN), ("bic", _BIC))
        for name, pattern in checks:
            if name in body:
                value = body[name].strip()
                if name in ("sales_tax_id", "iban", "bic"):
                    value = value.upper()
                if name == "iban":
                    value = value.replace(" ", "")
                if not pattern.match(value):
                    raise self._refuse_field(spec_path, name)
                clean[name] = value
        return clean

    def _new_debtor(self, company: Company, spec_path: str, body: dict[str, Any]) -> dict:
        clean = self._check_debtor_fields(spec_path, body)
        if "name" not in clean:
            raise self._refuse_field(spec_path, "name")
        number = body.get("postingaccount_number")
        if number is not None:
            number = str(number).strip()
            low, high = DEBTOR_ACCOUNT_RANGE
            if not number.isdigit() or not low <= int(number) <= high or number in company.debtors:
                raise self._refuse_field(spec_path, "postingaccount_number")
        else:
            used = [int(n) for n in company.debtors] or [DEBTOR_ACCOUNT_RANGE[0]]
            number = str(max(max(used) + 1, DEBTOR_ACCOUNT_RANGE[0] + 1))
        record = {"postingaccount_number": number, **clean, "_modified": self.clock.now()}
        company.debtors[number] = record
        return record

    def _add_debtor(self, company: Company, body: dict, _request: SimRequest) -> SimResponse:
        record = self._new_debtor(company, "/settings/add/debtor", body)
        number = record["postingaccount_number"]
        return json_response(200, {"success": True, "postingaccount_number": number, "message": ""})

    def _add_debtors_batch(self, company: Company, body: dict, _request: SimRequest) -> SimResponse:
        spec_path = "/settings/add-batch/debtors"
        spec_path_single = "/settings/add/debtor"
        now = self.clock.now()
        if company.last_batch is not None and now - company.last_batch < BATCH_MIN_INTERVAL:
            return self._error(spec_path, 15)
        items = body["debtors"]
        if not items:
            return self._batch_error(6)
        if len(items) > BATCH_MAX_ITEMS:
            return self._batch_error(5)
        company.last_batch = now
        created, errors = [], []
        for item in items:
            try:
                if not isinstance(item, dict):
                    raise self._refuse(spec_path_single, 8)
                self._validate_schema(spec_path_single, {"api_key": company.api_key, **item})
                record = self._new_debtor(company, spec_path_single, item)
            except _Refusal as refusal:
                error = json.loads(refusal.response.body)
                errors.append({**error, "request_data": [item]})
                continue
            created.append(
                {
                    "success": True,
                    "postingaccount_number": record["postingaccount_number"],
                    "message": "",
                }
            )
        return json_response(200, {"success": True, "debtors": created, "errors": errors})

    @staticmethod
    def _batch_error(code: int) -> SimResponse:
        return json_response(
            400, {"success": False, "error_code": code, "message": BATCH_ERRORS[code]}
        )

    def _update_debtor(self, company: Company, body: dict, _request: SimRequest) -> SimResponse:
        spec_path = "/settings/update/debtor"
        number = str(body["postingaccount_number"])
        if number not in company.debtors:
            raise self._refuse(spec_path, 24)
        clean = self._check_debtor_fields(spec_path, body)
        record = company.debtors[number]
        record.update(clean)
        record["_modified"] = self.clock.now()
        data = self._debtor_out(record)
        allowed = _object_fields(self.contract, spec_path)
        return json_response(
            200,
            {"success": True, "data": {k: data.get(k) for k in allowed}, "message": ""},
        )

    # ========================================================================================
    # Receipts
    # ========================================================================================
    def _receipt_values(self, record: dict[str, Any]) -> dict[str, Any]:
        direction = "outbound" if str(record.get("type", "")).endswith("outbound") else "inbound"
        due = record.get("due_date") or record.get("date_payment_due")
        return {
            "filename": record.get("filename"),
            "id_by_customer": str(record["id_by_customer"]),
            "type": record.get("type"),
            "date": record.get("date"),
            "date_delivery": record.get("date_delivery"),
            "date_uploaded": record.get("date_uploaded"),
            "counterparty": record.get("counterparty"),
            "invoicenumber": record.get("invoicenumber"),
            "amount": _money(record.get("amount")),
            "amount_original": _money(record.get("amount_original", record.get("amount"))),
            "currency": record.get("currency", "EUR"),
            "currency_original": record.get("currency_original", record.get("currency", "EUR")),
            "exchangerate": record.get("exchangerate"),
            "vat": _money(record.get("vat")),
            "payment_date": record.get("payment_date"),
            "due_date": due,
            "date_payment_due": due,
            "account": record.get("account"),
            "e_invoice_type": str(record.get("e_invoice_type", 0)),
            "list_direction": direction,
            "payment_reference": record.get("payment_reference"),
            "link_to_receipt_id_by_customer": record.get("link_to_receipt_id_by_customer"),
            "deleted": _flag(record.get("deleted")),
        }

    def _get_receipts(self, company: Company, body: dict, _request: SimRequest) -> SimResponse:
        spec_path = "/receipts/get"
        if body["list_direction"] not in ("inbound", "outbound"):
            raise self._refuse_field(spec_path, "list_direction")
        if "payment_status" in body and body["payment_status"] not in ("paid", "unpaid"):
            raise self._refuse_field(spec_path, "payment_status")
        if "counterparty" in body and not body["counterparty"].strip():
            raise self._refuse_field(spec_path, "counterparty")
        for name in ("date_from", "date_to"):
            if name in body and not _valid_date(body[name]):
                raise self._refuse_field(spec_path, name)
        limit, offset = self._paged(spec_path, body, MAX_LIST_LIMIT, MAX_LIST_LIMIT)
        order = body.get("order") or {}
        sort_fields = {"date", "amount", "invoicenumber", "invoicingparty"}
        if not isinstance(order, dict) or set(order) - sort_fields:
            raise self._refuse(spec_path, 15)
        if "invoicenumber" in body and not body["invoicenumber"].strip():
            raise self._refuse_field(spec_path, "invoicenumber")
        if "due_date" in body and not _valid_date(body["due_date"]):
            raise self._refuse_field(spec_path, "due_date")
        since = body.get("date_since_last_modified")
        if since is not None and not _valid_datetime(since):
            raise self._refuse_field(spec_path, "date_since_last_modified")

        # the matching receipts are kept as keys and only the page is rendered: a list call
        # over 50 000 receipts holds no row per receipt (this server runs in the benchmark's
        # process, whose memory measures the engine)
        matched = []
        for key in company.receipt_order():
            record = company.receipts[key]
            values = self._receipt_values(record)
            if values["list_direction"] != body["list_direction"]:
                continue
            if bool(record.get("deleted")) != bool(body.get("deleted", False)):
                continue
            status = body.get("payment_status")
            if status and (status == "paid") != bool(record.get("payment_date")):
                continue
            if (
                "counterparty" in body
                and (values["counterparty"] or "").casefold()
                != body["counterparty"].strip().casefold()
            ):
                continue
            if "date_from" in body and (values["date"] or "") < body["date_from"]:
                continue
            if "date_to" in body and (values["date"] or "9999") > body["date_to"]:
                continue
            if "invoicenumber" in body and values["invoicenumber"] != body["invoicenumber"]:
                continue
            if "due_date" in body and values["due_date"] != body["due_date"]:
                continue
            if since is not None and not record["_modified"] > berlin_to_epoch(since):
                continue
            matched.append(key)
        for sort_key, direction in reversed(list(order.items())):
            name = "counterparty" if sort_key == "invoicingparty" else sort_key

            def key_of(key, name=name):
                value = self._receipt_values(company.receipts[key]).get(name) or ""
                return Decimal(value) if name == "amount" and value else value

            matched.sort(key=key_of, reverse=direction == "DESC")
        page = [
            self._receipt_values(company.receipts[key]) for key in matched[offset : offset + limit]
        ]
        return self._list([{k: r.get(k) for k in self._receipt_list_fields} for r in page])

    def _get_receipt(self, company: Company, body: dict, request: SimRequest) -> SimResponse:
        spec_path = "/receipts/get/id_by_customer"
        raw_id = request.path.rstrip("/").rsplit("/", 1)[-1]
        if not raw_id.isdigit() or int(raw_id) not in company.receipts:
            raise self._refuse(spec_path, 5)
        record = company.receipts[int(raw_id)]
        values = self._receipt_values(record)
        values["file_content"] = None
        values["file_type"] = None
        if body.get("get_file") and record.get("file"):
            content, file_type = self._file(record)
            values["file_content"] = base64.b64encode(content).decode("ascii")
            values["file_type"] = file_type
        data = {k: values.get(k) for k in self._receipt_fields}
        return json_response(200, {"success": True, "message": "", "data": data})

    def _file(self, record: dict[str, Any]) -> tuple[bytes, str]:
        """``(bytes, "pdf"|"xml")`` of a receipt's file: from :attr:`file_loader` if it serves
        this record, else the reference file ``record["file"]`` names."""
        if self.file_loader is not None:
            loaded = self.file_loader(record)
            if loaded is not None:
                return loaded
        path = reference_dir() / record["file"]
        return path.read_bytes(), "pdf" if path.suffix.lower() == ".pdf" else "xml"

    # ========================================================================================
    # Transactions
    # ========================================================================================
    def _transaction_values(self, record: dict[str, Any]) -> dict[str, Any]:
        values = {k: record.get(k) for k in self._transaction_fields}
        values["id_by_customer"] = str(record["id_by_customer"])
        values["amount"] = _money(record.get("amount"))
        account = record.get("account")
        values["account"] = int(account) if account not in (None, "") else None
        return values

    def _get_transactions(self, company: Company, body: dict, _request: SimRequest) -> SimResponse:
        spec_path = "/transactions/get"
        for name in ("date_from", "date_to"):
            if name in body and not _valid_date(body[name]):
                raise self._refuse_field(spec_path, name)
        if "to_from" in body and not body["to_from"].strip():
            raise self._refuse_field(spec_path, "to_from")
        limit, offset = self._paged(spec_path, body, MAX_LIST_LIMIT, MAX_LIST_LIMIT)
        since = body.get("date_since_last_modified")
        if since is not None and not _valid_datetime(since):
            raise self._refuse_field(spec_path, "date_since_last_modified")
        rows = []
        for key in sorted(company.transactions):
            record = company.transactions[key]
            values = self._transaction_values(record)
            day = (values.get("booking_date") or "")[:10]
            if "id_by_customer_from" in body and key <= body["id_by_customer_from"]:
                continue
            if "id_by_customer_to" in body and key >= body["id_by_customer_to"]:
                continue
            if "date_from" in body and day < body["date_from"]:
                continue
            if "date_to" in body and day > body["date_to"]:
                continue
            if "account" in body and values.get("account") != body["account"]:
                continue
            if (
                "to_from" in body
                and (values.get("to_from") or "").casefold() != body["to_from"].strip().casefold()
            ):
                continue
            if since is not None and not record["_modified"] > berlin_to_epoch(since):
                continue
            rows.append(values)
        page = rows[offset : offset + limit]
        return self._list([{k: r.get(k) for k in self._transaction_list_fields} for r in page])

    def _get_transaction(self, company: Company, body: dict, request: SimRequest) -> SimResponse:
        spec_path = "/transactions/get/id_by_customer"
        raw_id = request.path.rstrip("/").rsplit("/", 1)[-1]
        if not raw_id.isdigit():
            raise self._refuse(spec_path, 5)
        if int(raw_id) not in company.transactions:
            raise self._refuse(spec_path, 6)
        values = self._transaction_values(company.transactions[int(raw_id)])
        return json_response(200, {"success": True, "message": "", "data": values})


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def _item_fields(contract: BBContract, spec_path: str) -> list[str]:
    schema = contract.response_schema(spec_path, 200, strict=False)
    return list(schema["properties"]["data"]["items"]["properties"])


def _object_fields(contract: BBContract, spec_path: str) -> list[str]:
    schema = contract.response_schema(spec_path, 200, strict=False)
    return list(schema["properties"]["data"]["properties"])


def default_seed() -> dict[str, Any]:
    """The ``buchhaltungsbutler`` section of the default seed file."""
    return json.loads(SEED_FILE.read_text(encoding="utf-8"))[SEED_SECTION]
