"""BuchhaltungsButler API v1 client (the source system of the sync).

The API in one paragraph (``<reference>/buchhaltungsbutler-v1.swagger.json``): every endpoint
is ``POST`` with a JSON body, reads included; HTTP Basic auth with the *API client* (user) and
*API secret* (password); the body always carries ``api_key``, which selects the company.
Answers are ``{"success": true, "message": "", "rows": N, "data": [...]}`` (``rows`` counts
this page only); errors ``{"success": false, "error_code": N, "message": "..."}`` with HTTP
400/401/403/422/500/504, where ``error_code`` means something different per endpoint except the
global ones (0 internal, 3 credentials, 4 company not found / no privileges, 11 company
inactive, 15 temporarily restricted, 30 timeout). Paging is ``limit`` + ``offset``; a limit
above the maximum is refused, so this client never sends one.

How this client deals with it:

* **Pacing**: 100 requests a minute per company, counted here with a sliding-window
  :class:`~bbvisma.transport.RateLimiter` (the API sends no rate-limit headers). What the
  server does beyond the quota is undocumented; the simulator answers HTTP 429 with
  ``{"success": false, "error_code": 429, "message": ...}`` and ``Retry-After``. Any 429 (and
  the documented 403 error 15 "temporarily restricted") becomes
  :class:`~bbvisma.errors.RateLimited`.
* **Retries**: every read is a POST but safe to repeat, so it is sent ``idempotent`` and the
  transport retries timeouts, 5xx, 504 and garbled answers. Writes are never resent blindly:
  :meth:`BBClient.add_debtor` answers a lost reply by looking the debtor up.
  :meth:`BBClient.update_debtor` sets absolute values, so repeating it is harmless and it is
  retried like a read.
* **Errors**: every refusal becomes a typed error of :mod:`bbvisma.errors` that quotes the
  server's own message (``AuthError("BuchhaltungsButler rejected the API credentials (error 3:
  API credentials unknown or invalid)")``). An unknown path (404 HTML) is a
  :class:`~bbvisma.errors.ConfigError` pointing at the base URL; a body that is not the
  documented envelope is a :class:`~bbvisma.errors.ProtocolError` naming the path.
* **Secrets**: API client, secret and key are registered with the transport's
  :class:`~bbvisma.transport.Redactor`, so no exchange, log line or exception carries them.
* **Change detection**: receipts carry no modification time. ``date_since_last_modified``
  (a request filter, Berlin wall time) is the only change signal; it is documented in BB's
  current spec but missing from the vendored swagger copy -- see
  :mod:`bbvisma.simulators.bb_contract`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from datetime import date, datetime
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from bbvisma.client_base import ApiClientBase, json_or_none, missing_settings
from bbvisma.errors import (
    ApiError,
    AuthError,
    BBVismaError,
    ConfigError,
    NotFound,
    OutcomeUnknown,
    ProtocolError,
    RateLimited,
    RequestTimeout,
    ServerError,
)
from bbvisma.transport import (
    Exchange,
    RateLimiter,
    Redactor,
    Transport,
    generic_status_error,
    parse_retry_after,
)

from .models import (
    DEBTOR_WRITE_FIELDS,
    LIST_DIRECTIONS,
    PAYMENT_STATUSES,
    BatchResult,
    Debtor,
    Receipt,
    ReceiptDetail,
    Transaction,
    TransactionDetail,
    format_berlin_datetime,
)

_logger = logging.getLogger(__name__)

SYSTEM = "bb"
DEFAULT_BASE_URL = "https://webapp.buchhaltungsbutler.de/api/v1"
#: largest ``limit`` per list (receipts/transactions: documented; debtors: not documented,
#: chosen equal to the others -- the simulator enforces the same)
MAX_LIMIT = {"receipts": 500, "transactions": 500, "debtors": 500}
DEBTOR_DEFAULT_LIMIT = 25
BATCH_MAX_ITEMS = 50
BATCH_INTERVAL = 5.0

ModelT = TypeVar("ModelT", bound=BaseModel)

#: what the global error codes mean, in words for whoever set up the integration
_AUTH_TEXT = {
    3: "BuchhaltungsButler rejected the API credentials",
    4: "BuchhaltungsButler does not know a company for this API key, or the API client may "
    "not access it",
    11: "The BuchhaltungsButler company of this API key is not active",
}
#: (endpoint, error_code) pairs that mean "no such record"
_NOT_FOUND = {
    ("/receipts/get/id_by_customer", 5),
    ("/transactions/get/id_by_customer", 5),
    ("/transactions/get/id_by_customer", 6),
    ("/settings/update/debtor", 24),
    ("/settings/update/debtor", 1),
}
_ID_PATH = re.compile(r"^(/(?:receipts|transactions)/get)/[^/]+$")


class BBClient(ApiClientBase):
    """Talks to one BuchhaltungsButler company (one ``api_key``). Thread-safe.

    :param base_url: ``https://webapp.buchhaltungsbutler.de/api/v1`` (or a loopback simulator)
    :param requests_per_minute: the company's quota; pacing happens here, before sending
    :param on_exchange: receives every redacted :class:`~bbvisma.transport.Exchange`
    :param http_client: an ``httpx.Client`` to use (tests: ``sim_http_client(simulator)``)
    :param sleep, clock: injectable time for the pacer and the retry back-off
    """

    def __init__(
        self,
        *,
        base_url: str = DEFAULT_BASE_URL,
        api_client: str,
        api_secret: str,
        api_key: str,
        timeout: float = 30.0,
        verify: bool | str = True,
        requests_per_minute: int = 100,
        on_exchange: Callable[[Exchange], None] | None = None,
        http_client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        max_attempts: int = 4,
        backoff_initial: float = 0.5,
    ):
        missing = missing_settings(
            ("API client", api_client), ("API secret", api_secret), ("API key", api_key)
        )
        if missing:
            raise ConfigError(
                f"BuchhaltungsButler: {', '.join(missing)} missing in the settings.", system=SYSTEM
            )
        self._api_key = api_key
        self._auth = httpx.BasicAuth(api_client, api_secret)
        self.redactor = Redactor([api_client, api_secret, api_key])
        self.limiter = RateLimiter(requests_per_minute, 60.0, clock=clock, sleep=sleep)
        self._batch_limiter = RateLimiter(1, BATCH_INTERVAL, clock=clock, sleep=sleep)
        self.transport = Transport(
            base_url,
            system=SYSTEM,
            error_parser=self._parse_error,
            redactor=self.redactor,
            timeout=timeout,
            verify=verify,
            max_attempts=max_attempts,
            backoff_initial=backoff_initial,
            limiter=self.limiter,
            on_exchange=on_exchange,
            http_client=http_client,
            sleep=sleep,
        )

    # ========================================================================================
    # Connection
    # ========================================================================================
    def check_connection(self) -> dict[str, Any]:
        """One cheap real call (the first debtor); raises :class:`AuthError` in plain words."""
        rows = self._list("/settings/get/debtors", {"limit": 1, "offset": 0})
        return {
            "ok": True,
            "system": SYSTEM,
            "base_url": self.transport.base_url,
            "debtors_visible": bool(rows),
        }

    # ========================================================================================
    # Debtors
    # ========================================================================================
    def list_debtors(self, *, limit: int = DEBTOR_DEFAULT_LIMIT, offset: int = 0) -> list[Debtor]:
        self._check_page("debtors", limit, offset)
        rows = self._list("/settings/get/debtors", {"limit": limit, "offset": offset})
        return self._parse_rows(rows, Debtor, "/settings/get/debtors")

    def iter_debtors(self, *, page_size: int = MAX_LIMIT["debtors"]) -> Iterator[Debtor]:
        """Every debtor, one page (``page_size``) per request, streamed."""
        yield from self._pages(
            lambda limit, offset: self.list_debtors(limit=limit, offset=offset),
            page_size,
            "debtors",
        )

    def find_debtor(self, postingaccount_number: str | int) -> Debtor | None:
        """The debtor with that account number (scans the list: there is no single get)."""
        wanted = str(postingaccount_number)
        return next((d for d in self.iter_debtors() if d.postingaccount_number == wanted), None)

    def add_debtor(self, **fields: Any) -> Debtor:
        """Create a debtor; returns it with the ``postingaccount_number`` BB assigned.

        There is no idempotency key. When the answer is lost (timeout, dropped connection,
        garbled body) the write may have been committed, so the debtor is looked up before
        anything else happens: found -> it is returned; not found -> :class:`OutcomeUnknown`
        is raised (it may still be in flight; the caller retries the whole step later and
        checks again). A lost add is never resent blindly.
        """
        body = _debtor_body(fields, require_name=True)
        try:
            answer = self._call("/settings/add/debtor", body, write=True)
        except (OutcomeUnknown, ProtocolError) as lost:
            try:
                found = self._find_added_debtor(body)
            except BBVismaError as check:
                raise OutcomeUnknown(
                    f"{lost.message} -- and re-checking the debtor list failed too "
                    f"({check.message}); not resent",
                    system=SYSTEM,
                ) from None
            if found is not None:
                _logger.info(
                    "bb: add_debtor answer lost, debtor %s found on re-check",
                    found.postingaccount_number,
                )
                return found
            raise OutcomeUnknown(
                f"{lost.message} -- re-checked the debtor list: the debtor is not there (yet); "
                "not resent",
                system=SYSTEM,
            ) from None
        number = answer.get("postingaccount_number")
        if number in (None, ""):
            raise ProtocolError(
                "bb: /settings/add/debtor answered success without a postingaccount_number",
                system=SYSTEM,
            )
        return Debtor(**{**body, "postingaccount_number": str(number)})

    def _find_added_debtor(self, body: dict[str, Any]) -> Debtor | None:
        """The debtor a lost add created, by the strongest key the request carried."""
        if body.get("postingaccount_number"):
            return self.find_debtor(body["postingaccount_number"])
        keys = ("name", "customer_number", "email", "zip", "city", "sales_tax_id")
        wanted = {k: body[k] for k in keys if body.get(k)}
        matches = [
            d
            for d in self.iter_debtors()
            if all((getattr(d, k) or "").strip() == str(v).strip() for k, v in wanted.items())
        ]
        if not matches:
            return None
        # BB numbers new debtors upwards: the newest match is the one just created
        return max(
            matches,
            key=lambda d: int(d.postingaccount_number) if d.postingaccount_number.isdigit() else -1,
        )

    def add_debtors_batch(self, debtors: list[dict[str, Any]]) -> BatchResult:
        """Create up to 50 debtors in one call (paced to one batch call per 5 s).

        A lost answer raises :class:`OutcomeUnknown` (not resent); per-item refusals come back
        in :attr:`BatchResult.errors` with the server's code and message.
        """
        if not debtors or len(debtors) > BATCH_MAX_ITEMS:
            raise ValueError(f"a debtor batch holds 1..{BATCH_MAX_ITEMS} items, not {len(debtors)}")
        items = [_debtor_body(d, require_name=True) for d in debtors]
        self._batch_limiter.acquire()
        answer = self._call("/settings/add-batch/debtors", {"debtors": items}, write=True)
        created = [str(d.get("postingaccount_number")) for d in answer.get("debtors") or []]
        errors = [self.redactor.redact(e) for e in answer.get("errors") or []]
        return BatchResult(created=created, errors=errors)

    def update_debtor(self, postingaccount_number: str | int, **fields: Any) -> None:
        """Set fields of an existing debtor (absolute values: safe to repeat)."""
        number = str(postingaccount_number).strip()
        if not number.isdigit():
            raise ValueError(f"postingaccount_number must be digits, not {postingaccount_number!r}")
        body = _debtor_body(fields, require_name=False)
        body.pop("postingaccount_number", None)
        # the swagger types this one as integer (everywhere else it is a string)
        body["postingaccount_number"] = int(number)
        self._call("/settings/update/debtor", body, write=False)

    # ========================================================================================
    # Receipts
    # ========================================================================================
    def list_receipts(
        self,
        *,
        list_direction: str,
        date_from: date | str | None = None,
        date_to: date | str | None = None,
        date_since_last_modified: datetime | date | str | None = None,
        payment_status: str | None = None,
        counterparty: str | None = None,
        invoicenumber: str | None = None,
        due_date: date | str | None = None,
        deleted: bool | None = None,
        limit: int = MAX_LIMIT["receipts"],
        offset: int = 0,
    ) -> list[Receipt]:
        """One page of receipts (``list_direction``: ``inbound`` | ``outbound``).

        ``date_since_last_modified`` is Berlin wall time: a naive ``datetime`` is taken as
        Berlin time, an aware one is converted.
        """
        if list_direction not in LIST_DIRECTIONS:
            raise ValueError(f"list_direction must be one of {LIST_DIRECTIONS}")
        if payment_status is not None and payment_status not in PAYMENT_STATUSES:
            raise ValueError(f"payment_status must be one of {PAYMENT_STATUSES}")
        self._check_page("receipts", limit, offset)
        body: dict[str, Any] = {"list_direction": list_direction, "limit": limit, "offset": offset}
        _put_date(body, "date_from", date_from)
        _put_date(body, "date_to", date_to)
        _put_date(body, "due_date", due_date)
        if date_since_last_modified is not None:
            body["date_since_last_modified"] = format_berlin_datetime(date_since_last_modified)
        for name, value in (
            ("payment_status", payment_status),
            ("counterparty", counterparty),
            ("invoicenumber", invoicenumber),
            ("deleted", deleted),
        ):
            if value is not None:
                body[name] = value
        rows = self._list("/receipts/get", body)
        return self._parse_rows(rows, Receipt, "/receipts/get")

    def iter_receipts(
        self, *, page_size: int = MAX_LIMIT["receipts"], **filters: Any
    ) -> Iterator[Receipt]:
        """Every receipt matching ``filters`` (those of :meth:`list_receipts`), page by page."""
        yield from self._pages(
            lambda limit, offset: self.list_receipts(limit=limit, offset=offset, **filters),
            page_size,
            "receipts",
        )

    def get_receipt(self, id_by_customer: str | int, *, get_file: bool = False) -> ReceiptDetail:
        """One receipt with currency, VAT, ``e_invoice_type`` and (``get_file``) its file bytes.

        An unknown id raises :class:`NotFound` (BB answers it as "invalid id_by_customer").
        """
        path = f"/receipts/get/{_checked_id(id_by_customer)}"
        answer = self._call(path, {"get_file": bool(get_file)}, write=False)
        return self._parse_object(answer, ReceiptDetail, path)

    # ========================================================================================
    # Transactions
    # ========================================================================================
    def list_transactions(
        self,
        *,
        date_from: date | str | None = None,
        date_to: date | str | None = None,
        date_since_last_modified: datetime | date | str | None = None,
        account: int | None = None,
        to_from: str | None = None,
        id_by_customer_from: int | None = None,
        id_by_customer_to: int | None = None,
        limit: int = MAX_LIMIT["transactions"],
        offset: int = 0,
    ) -> list[Transaction]:
        self._check_page("transactions", limit, offset)
        body: dict[str, Any] = {"limit": limit, "offset": offset}
        _put_date(body, "date_from", date_from)
        _put_date(body, "date_to", date_to)
        if date_since_last_modified is not None:
            body["date_since_last_modified"] = format_berlin_datetime(date_since_last_modified)
        for name, value in (
            ("account", account),
            ("to_from", to_from),
            ("id_by_customer_from", id_by_customer_from),
            ("id_by_customer_to", id_by_customer_to),
        ):
            if value is not None:
                body[name] = value
        rows = self._list("/transactions/get", body)
        return self._parse_rows(rows, Transaction, "/transactions/get")

    def iter_transactions(
        self, *, page_size: int = MAX_LIMIT["transactions"], **filters: Any
    ) -> Iterator[Transaction]:
        yield from self._pages(
            lambda limit, offset: self.list_transactions(limit=limit, offset=offset, **filters),
            page_size,
            "transactions",
        )

    def get_transaction(self, id_by_customer: str | int) -> TransactionDetail:
        path = f"/transactions/get/{_checked_id(id_by_customer)}"
        answer = self._call(path, {}, write=False)
        return self._parse_object(answer, TransactionDetail, path)

    # ========================================================================================
    # Internals
    # ========================================================================================
    def _call(self, path: str, body: dict[str, Any], *, write: bool) -> dict[str, Any]:
        """POST ``body`` (+ ``api_key``) to ``path``; the decoded success envelope."""
        payload = {"api_key": self._api_key, **body}
        response = self.transport.request(
            "POST", path, json_body=payload, auth=self._auth, idempotent=not write
        )
        # _parse_error already proved it is a JSON object with success: true
        return response.json()

    def _list(self, path: str, body: dict[str, Any]) -> list[Any]:
        answer = self._call(path, body, write=False)
        rows = answer.get("data")
        if rows is None:
            rows = []
        if not isinstance(rows, list):
            raise ProtocolError(
                f"bb: POST {path} answered 'data' as {type(rows).__name__}, not a list",
                system=SYSTEM,
            )
        return rows

    @staticmethod
    def _check_page(kind: str, limit: int, offset: int) -> None:
        if not 1 <= limit <= MAX_LIMIT[kind]:
            raise ValueError(
                f"{kind}: limit must be 1..{MAX_LIMIT[kind]} (BB refuses more), not {limit}"
            )
        if offset < 0:
            raise ValueError(f"{kind}: offset must be >= 0, not {offset}")

    def _pages(
        self, fetch: Callable[[int, int], list[ModelT]], page_size: int, kind: str
    ) -> Iterator[ModelT]:
        """Pages until a short one (``rows`` counts the page only; there is no total)."""
        self._check_page(kind, page_size, 0)
        offset = 0
        while True:
            page = fetch(page_size, offset)
            yield from page
            if len(page) < page_size:
                return
            offset += page_size

    def _parse_rows(self, rows: list[Any], model: type[ModelT], path: str) -> list[ModelT]:
        try:
            return [model.model_validate(row) for row in rows]
        except ValidationError as exc:
            raise ProtocolError(
                f"bb: POST {path} answered a record that does not follow the contract: "
                f"{self.redactor.redact_text(_first_problem(exc))}",
                system=SYSTEM,
            ) from None

    def _parse_object(self, answer: dict[str, Any], model: type[ModelT], path: str) -> ModelT:
        data = answer.get("data")
        if not isinstance(data, dict):
            raise ProtocolError(f"bb: POST {path} answered without a 'data' object", system=SYSTEM)
        return self._parse_rows([data], model, path)[0]

    # -- error classification -----------------------------------------------------------------
    def _parse_error(self, response: httpx.Response) -> BBVismaError | None:
        """The typed error for a response, or ``None`` for a documented success envelope."""
        status = response.status_code
        path = self._relative_path(response)
        body = json_or_none(response)
        if status == 200:
            if isinstance(body, dict) and body.get("success") is True:
                return None
            if not (isinstance(body, dict) and body.get("success") is False):
                snippet = response.text[:80].replace("\n", " ")
                return ProtocolError(
                    f"bb: POST {path} answered 200 without the documented JSON envelope "
                    f"(success/data): {snippet!r}",
                    system=SYSTEM,
                    status=status,
                )
        if isinstance(body, dict) and body.get("success") is False:
            return self._api_error(path, status, body, response)
        if status == 404:
            return ConfigError(
                f"BuchhaltungsButler has no endpoint POST {path} (HTTP 404, not an API answer): "
                f"check the base URL, it should end in /api/v1 (now {self.transport.base_url})",
                system=SYSTEM,
                status=status,
            )
        if status in (401, 403):
            return AuthError(
                f"BuchhaltungsButler refused access to {path} (HTTP {status})",
                system=SYSTEM,
                status=status,
            )
        return generic_status_error(
            response, SYSTEM, f"bb: POST {path} answered HTTP {status} without an API error body"
        )

    def _api_error(
        self, path: str, status: int, body: dict[str, Any], response: httpx.Response
    ) -> BBVismaError:
        code = body.get("error_code")
        message = str(body.get("message") or "").strip() or "no message"
        said = f"error {code}: {message}"
        kw = {"system": SYSTEM, "status": status, "code": code}
        spec_path = _ID_PATH.sub(r"\1/id_by_customer", path)
        if status == 429:
            return RateLimited(
                f"BuchhaltungsButler quota exceeded on {path} ({said})",
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
                **kw,
            )
        if code in _AUTH_TEXT and status in (401, 403):
            return AuthError(f"{_AUTH_TEXT[code]} ({said})", **kw)
        if code == 15 and status == 403:
            return RateLimited(f"BuchhaltungsButler temporarily restricts {path} ({said})", **kw)
        if status == 504 or code == 30:
            return RequestTimeout(f"BuchhaltungsButler timed out on {path} ({said})", **kw)
        if status >= 500 or code == 0:
            return ServerError(f"BuchhaltungsButler failed on {path} ({said})", **kw)
        if (spec_path, code) in _NOT_FOUND:
            return NotFound(f"BuchhaltungsButler: not found at {path} ({said})", **kw)
        if status in (401, 403):
            return AuthError(f"BuchhaltungsButler refused access to {path} ({said})", **kw)
        return ApiError(f"BuchhaltungsButler refused {path} (HTTP {status}, {said})", **kw)

    def _relative_path(self, response: httpx.Response) -> str:
        full = response.request.url.path
        base = httpx.URL(self.transport.base_url).path.rstrip("/")
        return full[len(base) :] if base and full.startswith(base) else full


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def _debtor_body(fields: dict[str, Any], *, require_name: bool) -> dict[str, Any]:
    """Fields in the write names, empty ones dropped (BB validates every field it is sent)."""
    fields = dict(fields)
    if "sales_tax_id_eu" in fields:
        fields.setdefault("sales_tax_id", fields.pop("sales_tax_id_eu"))
    if "additional_addressline" in fields:
        fields.setdefault("additional_address_line", fields.pop("additional_addressline"))
    unknown = set(fields) - set(DEBTOR_WRITE_FIELDS)
    if unknown:
        raise ValueError(
            f"BuchhaltungsButler debtors have no field(s) {', '.join(sorted(unknown))}"
        )
    body = {k: str(v).strip() for k, v in fields.items() if v is not None and str(v).strip()}
    if require_name and not body.get("name"):
        raise ValueError("a BuchhaltungsButler debtor needs a name")
    return body


def _put_date(body: dict[str, Any], name: str, value: date | str | None) -> None:
    if value is None:
        return
    if isinstance(value, datetime):
        value = value.date()
    text = value.isoformat() if isinstance(value, date) else str(value)
    date.fromisoformat(text)  # ValueError for a malformed date, before any request
    body[name] = text


def _checked_id(value: str | int) -> str:
    text = str(value).strip()
    if not text.isdigit():
        raise ValueError(f"id_by_customer must be digits, not {value!r}")
    return text


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error.get("loc", ()))
    return f"{where}: {error.get('msg')}"
