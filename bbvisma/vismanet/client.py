"""Visma.net ERP API client: OAuth2 client credentials, paging, 201 + Location, ETags, quotas.

What this module knows about Visma.net, so the flows do not have to:

* **Auth** -- a Visma Connect token (client credentials + ``tenant_id``) is fetched once, cached
  until shortly before it expires, and fetched again once when the API answers 401 with a
  rejected token. Licence and tenant/company mix-ups (fault codes 12027, 12002) are setup
  problems: :class:`~bbvisma.errors.AuthError` at once, never retried.
* **Bodies** -- writes wrap every field (``{"name": {"value": "ACME"}}``, see :func:`wrap_values`),
  reads are plain JSON.
* **Creates** -- ``201`` with an empty body; the new key is the last segment of ``Location``.
  Creates are not idempotent, so :meth:`VismaClient.ensure` looks a record up by its
  deterministic key before creating it and again when the answer of a create was lost.
* **Lists** -- ``pageNumber`` (1-based) + ``pageSize``; every item carries
  ``metadata {totalCount, maxPageSize}``; an oversized page size is clamped silently. Paging
  stops at an empty page, a short page or ``totalCount`` and de-duplicates by key.
* **Quota** -- a fixed hourly window per company and client, announced in ``X-RateLimit-*``:
  :class:`~bbvisma.transport.HeaderPacer` waits for the next window instead of provoking 429s;
  a 429 still waits ``Retry-After`` (the transport does that).
* **Shipments** -- ``ETag`` / ``If-Match``; a 412 re-reads the shipment and retries once.

* **Background creates** (opt-in, ``background_creates=True``) -- long creates can outlast
  any client timeout; with the ``erp-api-background`` header Visma.net answers ``202`` at
  once and the client polls ``/v1/background/{id}`` for the outcome
  (:meth:`VismaClient.wait_background`).

Every path, parameter and field used here exists in the published OpenAPI document
(``visma-net-erp-v1.openapi.json``).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import httpx

from bbvisma.client_base import ApiClientBase, json_or_none, missing_settings
from bbvisma.errors import (
    ApiError,
    AuthError,
    BBVismaError,
    ConfigError,
    Conflict,
    NotFound,
    OutcomeUnknown,
    PreconditionFailed,
    ProtocolError,
    RateLimited,
    RequestTimeout,
    ServerError,
)
from bbvisma.transport import (
    Exchange,
    HeaderPacer,
    Redactor,
    Transport,
    decode_json,
    parse_retry_after,
)

SYSTEM = "visma"
DEFAULT_BASE_URL = "https://api.finance.visma.net"
DEFAULT_TOKEN_URL = "https://connect.visma.com/connect/token"

SCOPE_READ = "vismanet_erp_service_api:read"
SCOPE_CREATE = "vismanet_erp_service_api:create"
SCOPE_UPDATE = "vismanet_erp_service_api:update"
SCOPE_DELETE = "vismanet_erp_service_api:delete"
#: what the sync needs: read master data, create records, update them and run actions.
#: Delete is deliberately not requested -- the integration never deletes in Visma.net.
DEFAULT_SCOPES: tuple[str, ...] = (SCOPE_CREATE, SCOPE_READ, SCOPE_UPDATE)

#: refresh a cached token this many seconds before it expires (clock skew, slow requests)
TOKEN_EXPIRY_MARGIN = 60.0
#: page size asked for by default; the server clamps it to its maxPageSize anyway
DEFAULT_PAGE_SIZE = 500

#: fault codes that mean "this tenant/company/licence is not set up for this client"
FAULT_NO_LICENCE = "12027"
FAULT_COMPANY_NOT_AUTHORISED = "12002"
SETUP_FAULT_CODES = frozenset({FAULT_NO_LICENCE, FAULT_COMPANY_NOT_AUTHORISED})

_SETUP_HINTS = {
    FAULT_NO_LICENCE: (
        "Visma.net reports no licence for this company (fault 12027). Most often the tenant ID "
        "is a company's tenant instead of the customer tenant that holds the licence, or the "
        "integration is not activated for this customer in the Visma App Store."
    ),
    FAULT_COMPANY_NOT_AUTHORISED: (
        "Visma.net does not let this client work in the requested company (fault 12002): "
        "check the company ID (ipp-company-id) against the tenant ID."
    ),
}


class TokenRejected(AuthError):
    """401 for the bearer token itself (expired or revoked): fetch a new token once."""

    kind = "token_rejected"


# --------------------------------------------------------------------------------------------
# Value wrapping (write bodies)
# --------------------------------------------------------------------------------------------
#: fields the spec's *UpdateDto schemas carry unwrapped (checked against the OpenAPI document:
#: line ``operation``, subaccount ``segmentId``/``segmentValue``, customer
#: ``overrideWithClassValues``)
PLAIN_KEYS = frozenset({"operation", "segmentId", "segmentValue", "overrideWithClassValues"})
#: nested objects that are not wrapped themselves although their leaves are
#: (InventoryUpdateDto.packaging / .intrastat, *.rotRutDetails)
UNWRAPPED_OBJECT_KEYS = frozenset({"packaging", "intrastat", "rotRutDetails"})


class Plain:
    """Marks a value :func:`wrap_values` must send as it is (e.g. a direct-debit line ``id``)."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value

    def __repr__(self) -> str:
        return f"Plain({self.value!r})"


def _scalar(value: Any) -> Any:
    """JSON-able form of a leaf value (decimals as numbers, dates as ISO strings)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _is_wrapped(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and "value" in value


def wrap_values(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Turn a plain nested dict into Visma.net's write shape.

    * a leaf becomes ``{"value": leaf}``;
    * a nested object becomes ``{"value": {...its leaves wrapped...}}`` (``mainAddress``,
      ``billingAddress``, ...), except :data:`UNWRAPPED_OBJECT_KEYS`, whose leaves are wrapped
      but which are not wrapped themselves;
    * a list stays a list; each of its objects has its fields wrapped (invoice lines, attribute
      lines), except :data:`PLAIN_KEYS` such as a line's ``operation``;
    * ``None`` is left out: Visma.net treats a missing field as "keep the current value";
    * a value that is already ``{"value": ...}`` and a :class:`Plain` value pass unchanged.

    >>> wrap_values({"name": "ACME", "mainAddress": {"city": "Köln"},
    ...              "lines": [{"operation": "Insert", "quantity": 2}]})
    {'name': {'value': 'ACME'}, 'mainAddress': {'value': {'city': {'value': 'Köln'}}}, \
'lines': [{'operation': 'Insert', 'quantity': {'value': 2}}]}
    """
    out: dict[str, Any] = {}
    for key, value in payload.items():
        if value is None:
            continue
        out[key] = _wrap_field(key, value)
    return out


def _wrap_field(key: str, value: Any) -> Any:
    if isinstance(value, Plain):
        return _plain(value.value)
    if key in PLAIN_KEYS:
        return _plain(value)
    if _is_wrapped(value):
        inner = value["value"]
        return {"value": wrap_values(inner) if isinstance(inner, dict) else _scalar(inner)}
    if isinstance(value, (list, tuple)):
        return [wrap_values(item) if isinstance(item, Mapping) else _scalar(item) for item in value]
    if isinstance(value, Mapping):
        inner = wrap_values(value)
        return inner if key in UNWRAPPED_OBJECT_KEYS else {"value": inner}
    return {"value": _scalar(value)}


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return _scalar(value)


# --------------------------------------------------------------------------------------------
# Error parsing
# --------------------------------------------------------------------------------------------
def parse_visma_error(response: httpx.Response) -> BBVismaError | None:
    """Turn a Visma.net error answer into a typed error (``None`` for a success).

    The body is ``{"ExceptionType", "ExceptionMessage", "ExceptionFaultCode",
    "ExceptionMessageID", "ExceptionDetails"}``; some endpoints answer ``{"message": ...}``
    instead, and proxies answer HTML -- all three are handled.
    """
    status = response.status_code
    if status < 400:
        return None
    body = json_or_none(response)
    fault = message = None
    details = None
    if isinstance(body, dict):
        fault = body.get("ExceptionFaultCode")
        message = body.get("ExceptionMessage") or body.get("message") or body.get("Message")
        details = {k: body.get(k) for k in ("ExceptionType", "ExceptionMessageID") if k in body}
        if body.get("ExceptionDetails"):
            details["ExceptionDetails"] = body["ExceptionDetails"]
    fault = str(fault) if fault not in (None, "") else None
    if not message:
        message = response.text[:200].strip() or response.reason_phrase
    request = response.request
    where = f"{request.method} {request.url.path}"
    text = f"Visma.net {status} on {where}: {message}"
    kw = {"system": SYSTEM, "status": status, "code": fault, "details": details or None}
    if fault in SETUP_FAULT_CODES:
        return AuthError(f"{_SETUP_HINTS[fault]} ({text})", **kw)
    if status == 401:
        return TokenRejected(text, **kw)
    if status == 403:
        return AuthError(f"{text} -- the client lacks a permission or scope for this call", **kw)
    if status == 404:
        return NotFound(text, **kw)
    if status == 409:
        return Conflict(text, **kw)
    if status == 412:
        return PreconditionFailed(text, **kw)
    if status == 429:
        return RateLimited(
            text, retry_after=parse_retry_after(response.headers.get("Retry-After")), **kw
        )
    if status == 504:
        return RequestTimeout(text, **kw)
    if status >= 500:
        return ServerError(text, **kw)
    return ApiError(text, **kw)


_OAUTH_HINTS = {
    "invalid_client": "Visma Connect does not accept the client ID / client secret",
    "invalid_scope": "Visma Connect refused the requested scopes for this client",
    "unauthorized_client": "this client may not use the client-credentials grant",
    "unsupported_grant_type": "Visma Connect does not support this grant type",
    "invalid_request": "Visma Connect rejected the token request",
    "invalid_grant": "Visma Connect rejected the grant",
}


def parse_token_error(response: httpx.Response) -> BBVismaError | None:
    """Errors of the Visma Connect token endpoint (OAuth2 ``{"error", "error_description"}``)."""
    status = response.status_code
    if status < 400:
        return None
    body = json_or_none(response)
    if status in (400, 401, 403) and isinstance(body, dict) and body.get("error"):
        code = str(body["error"])
        hint = _OAUTH_HINTS.get(code, "Visma Connect refused the token request")
        desc = body.get("error_description")
        text = f"{hint} ({code}{': ' + str(desc) if desc else ''})."
        return AuthError(text, system=SYSTEM, status=status, code=code)
    text = f"Visma Connect token endpoint answered {status}: {response.text[:200].strip()}"
    if status == 429:
        return RateLimited(
            text,
            system=SYSTEM,
            status=status,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )
    if status >= 500:
        return ServerError(text, system=SYSTEM, status=status)
    return AuthError(text, system=SYSTEM, status=status)


def key_from_location(location: str | None) -> str:
    """The key of a created record: the last path segment of ``Location``, URL-decoded."""
    if not location:
        raise ProtocolError(
            "Visma.net answered 201 Created without a Location header", system=SYSTEM
        )
    path = urlsplit(location).path.rstrip("/")
    key = unquote(path.rsplit("/", 1)[-1])
    if not key:
        raise ProtocolError(f"cannot read a key from Location {location!r}", system=SYSTEM)
    return key


def _seg(value: Any) -> str:
    """A path segment, escaped (Visma.net keys may contain spaces and slashes)."""
    return quote(str(value), safe="")


def _visma_datetime(value: dt.datetime | dt.date | str) -> str:
    """A date-time filter value (``lastModifiedDateTime``, ``createdDateTime``) in an accepted
    format (``yyyy-MM-dd HH:mm:ss``); an aware datetime is sent in UTC."""
    if isinstance(value, str):
        return value
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return value.strftime("%Y-%m-%d")


def _since(params: dict[str, Any], since: Any, condition: str, prefix: str = "lastModified"):
    if since is not None:
        params[f"{prefix}DateTime"] = _visma_datetime(since)
        params[f"{prefix}DateTimeCondition"] = condition


# --------------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DocumentKind:
    """Where one kind of customer document lives in Visma.net.

    Invoices and credit notes are created through v2 (the v1 POSTs are deprecated) and read,
    listed, looked up and released through v1; apart from these paths they behave alike.
    """

    create_path: str
    path: str


CUSTOMER_INVOICE = DocumentKind("/v2/customerinvoice", "/v1/customerinvoice")
CUSTOMER_CREDIT_NOTE = DocumentKind("/v2/customerCreditNote", "/v1/customerCreditNote")


class VismaClient(ApiClientBase):
    """One Visma.net company, one API client. Thread-safe; close it (or use ``with``).

    :param base_url: ``https://api.finance.visma.net`` (or a loopback simulator).
    :param token_url: the Visma Connect token endpoint.
    :param tenant_id: the customer tenant holding the Visma.net licence.
    :param company_id: sent as ``ipp-company-id`` when given.
    :param branch: the branch number documents are booked in when a payload does not say.
    :param on_exchange: receives every redacted :class:`~bbvisma.transport.Exchange`.
    :param http_client: / :param token_http_client: ``httpx.Client`` objects to use (tests pass
        in-process simulator clients); the token client defaults to ``http_client``.
    :param sleep: / :param clock: injectable time (pacing, Retry-After, token expiry).
    :param background_creates: send creates with ``erp-api-background: none`` and poll the
        background state for the result (for tenants where creates outlast the timeout).
    :param background_timeout: seconds to poll a background operation before giving up with
        :class:`OutcomeUnknown`.
    """

    def __init__(
        self,
        *,
        base_url: str = DEFAULT_BASE_URL,
        token_url: str = DEFAULT_TOKEN_URL,
        client_id: str,
        client_secret: str,
        tenant_id: str,
        company_id: str | None = None,
        branch: str | None = None,
        scopes: Iterable[str] = DEFAULT_SCOPES,
        timeout: float = 30.0,
        verify: bool | str = True,
        on_exchange: Callable[[Exchange], None] | None = None,
        http_client: httpx.Client | None = None,
        token_http_client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        max_attempts: int = 4,
        background_creates: bool = False,
        background_timeout: float = 600.0,
    ):
        missing = missing_settings(
            ("client ID", client_id), ("client secret", client_secret), ("tenant ID", tenant_id)
        )
        if missing:
            raise ConfigError(f"Visma.net: the {', '.join(missing)} must be set.", system=SYSTEM)
        self.client_id = client_id
        self.tenant_id = tenant_id
        self.company_id = company_id
        self.branch = branch
        self.scopes = tuple(scopes)
        self.background_creates = background_creates
        self.background_timeout = background_timeout
        self._client_secret = client_secret
        self._clock = clock
        self._sleep = sleep
        self.redactor = Redactor([client_secret])
        self.pacer = HeaderPacer(clock=clock, sleep=sleep)
        self.transport = Transport(
            base_url,
            system=SYSTEM,
            error_parser=parse_visma_error,
            redactor=self.redactor,
            timeout=timeout,
            verify=verify,
            max_attempts=max_attempts,
            pacer=self.pacer,
            on_exchange=on_exchange,
            http_client=http_client,
            sleep=sleep,
        )
        self.token_url = token_url
        self._token_transport = Transport(
            token_url,
            system=SYSTEM,
            error_parser=parse_token_error,
            redactor=self.redactor,
            timeout=timeout,
            verify=verify,
            max_attempts=max_attempts,
            on_exchange=on_exchange,
            http_client=token_http_client or http_client,
            sleep=sleep,
        )
        self._token: str | None = None
        self._token_refresh_at = 0.0
        self._token_lock = threading.Lock()
        #: number of tokens fetched (observability: a healthy run fetches one per hour)
        self.tokens_fetched = 0

    # -- lifecycle ----------------------------------------------------------------------------
    def close(self) -> None:
        super().close()
        self._token_transport.close()

    # ``calls`` (from ApiClientBase) counts ``self.transport`` only: token requests go through
    # ``_token_transport`` and are counted in ``tokens_fetched``.

    # -- auth ---------------------------------------------------------------------------------
    def _access_token(self, *, rejected: str | None = None) -> str:
        """The cached token, or a new one when it is about to expire or was ``rejected``."""
        with self._token_lock:
            now = self._clock()
            usable = self._token is not None and self._token != rejected
            if usable and (rejected is not None or now < self._token_refresh_at):
                return self._token  # still valid, or another thread already replaced it
            form = {
                "grant_type": "client_credentials",
                "client_id": self.client_id,
                "client_secret": self._client_secret,
                "scope": " ".join(self.scopes),
                "tenant_id": self.tenant_id,
            }
            response = self._token_transport.request(
                "POST", self.token_url, form=form, idempotent=True
            )
            data = decode_json(response, SYSTEM)
            token = data.get("access_token") if isinstance(data, dict) else None
            if not token or not isinstance(token, str):
                raise ProtocolError("Visma Connect answered without an access_token", system=SYSTEM)
            self.redactor.add(token)
            try:
                lifetime = float(data.get("expires_in", 3600))
            except (TypeError, ValueError):
                lifetime = 3600.0
            self._token = token
            self._token_refresh_at = now + lifetime - min(TOKEN_EXPIRY_MARGIN, lifetime / 10)
            self.tokens_fetched += 1
            return token

    def _headers(self, token: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if self.company_id:
            headers["ipp-company-id"] = str(self.company_id)
        if extra:
            headers.update(extra)
        return headers

    def _send(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        files: Any = None,
        log_body: Any = None,
    ) -> httpx.Response:
        """One API call with a valid token; a rejected token is replaced once.

        Pacing comes first: a wait for the next quota window can be long, and a token taken
        before it could expire during it.
        """
        self.pacer.before()
        token = self._access_token()
        for attempt in (1, 2):
            try:
                return self.transport.request(
                    method,
                    path,
                    json_body=json_body,
                    params=dict(params) if params else None,
                    headers=self._headers(token, headers),
                    files=files,
                    log_body=log_body,
                )
            except TokenRejected as exc:
                if attempt == 2:
                    raise AuthError(
                        "Visma.net rejected a freshly issued access token: the client is not "
                        f"allowed to use this API for this tenant ({exc.message})",
                        system=SYSTEM,
                        status=exc.status,
                        code=exc.code,
                    ) from None
                token = self._access_token(rejected=token)
        raise AssertionError("unreachable")  # pragma: no cover

    def check_connection(self) -> dict[str, Any]:
        """Fetch a token and read the branches: proves credentials, tenant, company and licence.

        Returns ``{"ok": True, "branches": [...], "company_name", "rate_limit"}``; raises
        :class:`AuthError` with a message a user can act on.
        """
        try:
            branches = self.list_branches()
        except AuthError as exc:
            raise AuthError(
                f"Connection to Visma.net failed: {exc.message}",
                system=SYSTEM,
                status=exc.status,
                code=exc.code,
            ) from None
        main = next((b for b in branches if b.get("isMainBranch")), branches[0] if branches else {})
        return {
            "ok": True,
            "tenant_id": self.tenant_id,
            "company_id": self.company_id,
            "company_name": main.get("name"),
            "branches": [b.get("number") for b in branches],
            "rate_limit": self.pacer.limit,
        }

    # -- generic ------------------------------------------------------------------------------
    def get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """GET and decode. A body that is not JSON is re-read once, then :class:`ProtocolError`."""
        for attempt in (1, 2):
            response = self._send("GET", path, params=params)
            try:
                return decode_json(response, SYSTEM)
            except ProtocolError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def get_or_none(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        try:
            return self.get_json(path, params)
        except NotFound:
            return None

    def iter_list(
        self,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        key: Callable[[dict[str, Any]], Any] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every record of a paged list, each once.

        Stops at an empty page, at ``metadata.totalCount``, at a page shorter than the
        effective page size (the requested size clamped to ``metadata.maxPageSize``), or at a
        page that brings no new key (a server ignoring ``pageNumber`` cannot loop us forever).
        Lists answered as a pagination object (``{"records": [...], "totalCount"}``, e.g.
        ``/v1/creditTerm``) and unpaged lists are handled too.
        """
        base = dict(params or {})
        seen: set[Any] = set()
        read = 0
        page = 1
        while True:
            query = {**base, "pageNumber": page, "pageSize": page_size}
            data = self.get_json(path, query)
            total = max_size = None
            if isinstance(data, dict) and isinstance(data.get("records"), list):
                items = data["records"]
                total = data.get("totalCount")
                max_size = data.get("pageSize")
            elif isinstance(data, list):
                items = data
            else:
                raise ProtocolError(
                    f"Visma.net GET {path} answered {type(data).__name__}, not a list",
                    system=SYSTEM,
                )
            if not items:
                return
            meta = items[0].get("metadata") if isinstance(items[0], dict) else None
            if isinstance(meta, dict):
                total = meta.get("totalCount", total)
                max_size = meta.get("maxPageSize", max_size)
            new = 0
            for item in items:
                ident = key(item) if key else _identity(item)
                if ident in seen:
                    continue
                seen.add(ident)
                new += 1
                yield item
            read += len(items)
            effective = min(page_size, int(max_size)) if max_size else page_size
            if new == 0:
                return
            if total is not None and read >= int(total):
                return
            if len(items) < effective:
                return
            page += 1

    def create(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        wrap: bool = True,
        background: bool | None = None,
    ) -> str:
        """POST a new record; return its key from ``Location``.

        A lost answer raises :class:`OutcomeUnknown` -- use :meth:`ensure` to resolve it.
        With ``background`` (default: the client's ``background_creates``) the create runs as a
        Visma.net background operation and its outcome is polled.
        """
        payload = wrap_values(body) if wrap else _plain(body)
        background = self.background_creates if background is None else background
        headers = {"erp-api-background": "none"} if background else None
        response = self._send("POST", path, json_body=payload, headers=headers)
        if background and response.status_code == 202:
            accepted = decode_json(response, SYSTEM)
            state = self.wait_background(str(accepted.get("id") or ""))
            return key_from_location((state.get("responseHeaders") or {}).get("Location"))
        if response.status_code != 201:
            raise ProtocolError(
                f"Visma.net POST {path} answered {response.status_code}, expected 201 Created",
                system=SYSTEM,
                status=response.status_code,
            )
        return key_from_location(response.headers.get("Location"))

    def wait_background(self, request_id: str) -> dict[str, Any]:
        """Poll ``/v1/background/{id}`` until the operation finished; return its state.

        A finished operation that answered an error raises that error (typed as if it had
        been answered directly). ``Failed`` (the background machinery itself failed) and a
        poll that outlasts ``background_timeout`` raise :class:`OutcomeUnknown`: the write may
        or may not have happened -- look the record up before sending it again.
        """
        if not request_id:
            raise ProtocolError("Visma.net answered 202 without a background id", system=SYSTEM)
        deadline = self._clock() + self.background_timeout
        delay = 1.0
        while True:
            state = self.get_json(f"/v1/background/{_seg(request_id)}")
            status = state.get("status")
            if status == "Finished":
                break
            if status == "Failed" or self._clock() + delay > deadline:
                raise OutcomeUnknown(
                    f"Visma.net background operation {request_id} "
                    + (
                        f"failed: {state.get('errorMessage') or 'no reason given'}"
                        if status == "Failed"
                        else f"did not finish within {self.background_timeout:.0f} s"
                    ),
                    system=SYSTEM,
                    details={"background_id": request_id},
                )
            self._sleep(delay)
            delay = min(delay * 2, 30.0)
        code = int(state.get("statusCode") or 0)
        if code >= 400:
            content = b""
            if state.get("hasResponseContent"):
                content = self._send("GET", f"/v1/background/{_seg(request_id)}/content").content
            original = str(state.get("originalUri") or "/")
            fake = httpx.Response(
                code,
                content=content,
                headers={"Content-Type": "application/json"},
                request=httpx.Request("POST", original),
            )
            error = parse_visma_error(fake)
            if error is not None:
                raise error
        return state

    def update(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        etag: str | None = None,
        wrap: bool = True,
    ) -> None:
        """PUT changes (204). With ``etag`` the call carries ``If-Match`` (412 when stale)."""
        payload = wrap_values(body) if wrap else _plain(body)
        headers = {"If-Match": etag} if etag else None
        self._send("PUT", path, json_body=payload, headers=headers)

    def action(self, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """POST an ``action/...`` endpoint (plain body); return its result object."""
        response = self._send("POST", path, json_body=_plain(body) if body else None)
        if not response.content:
            return {}
        data = decode_json(response, SYSTEM)
        if isinstance(data, dict) and data.get("actionResult") == "Failed":
            raise ApiError(
                f"Visma.net action {path} failed: {data.get('errorInfo') or 'no reason given'}",
                system=SYSTEM,
                status=response.status_code,
            )
        return data if isinstance(data, dict) else {"result": data}

    def ensure(
        self,
        find: Callable[[], str | None],
        create: Callable[[], str],
    ) -> tuple[str, bool]:
        """Create a record unless it exists; survive a lost create answer without duplicates.

        ``find`` looks the record up by its deterministic key and returns its Visma.net key
        or ``None``. Returns ``(key, created)``. When the create's answer is lost
        (:class:`OutcomeUnknown`), the record is looked up again: found means the create was
        committed; not found means it was not, and it is sent once more.
        """
        existing = find()
        if existing is not None:
            return existing, False
        try:
            return create(), True
        except OutcomeUnknown:
            found = find()
            if found is not None:
                return found, True
            return create(), True

    # -- customers ----------------------------------------------------------------------------
    def list_customers(
        self,
        *,
        name: str | None = None,
        email: str | None = None,
        corporate_id: str | None = None,
        vat_registration_id: str | None = None,
        status: str | None = None,
        modified_since: dt.datetime | dt.date | str | None = None,
        condition: str = ">=",
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> Iterator[dict[str, Any]]:
        params: dict[str, Any] = {}
        for param, value in (
            ("name", name),
            ("email", email),
            ("corporateId", corporate_id),
            ("vatRegistrationId", vat_registration_id),
            ("status", status),
        ):
            if value is not None:
                params[param] = value
        _since(params, modified_since, condition)
        return self.iter_list(
            "/v1/customer", params, page_size=page_size, key=lambda c: c.get("number")
        )

    def get_customer(self, number: str) -> dict[str, Any]:
        return self.get_json(f"/v1/customer/{_seg(number)}")

    def find_customer(self, number: str) -> dict[str, Any] | None:
        return self.get_or_none(f"/v1/customer/{_seg(number)}")

    def find_customer_by_corporate_id(self, corporate_id: str) -> dict[str, Any] | None:
        return next(iter(self.list_customers(corporate_id=corporate_id)), None)

    def find_customers_by_email(self, email: str) -> list[dict[str, Any]]:
        return list(self.list_customers(email=email))

    def create_customer(self, payload: Mapping[str, Any]) -> str:
        return self.create("/v1/customer", payload)

    def update_customer(self, number: str, payload: Mapping[str, Any]) -> None:
        self.update(f"/v1/customer/{_seg(number)}", payload)

    def ensure_customer(
        self,
        payload: Mapping[str, Any],
        *,
        number: str | None = None,
        corporate_id: str | None = None,
    ) -> tuple[str, bool]:
        """Create a customer unless one with this ``number`` (or ``corporateId``) exists."""
        number = number or payload.get("number")
        if number is None and corporate_id is None:
            raise ConfigError(
                "ensure_customer needs a deterministic key (customer number or corporate ID)",
                system=SYSTEM,
            )

        def find() -> str | None:
            if number is not None:
                found = self.find_customer(str(number))
            else:
                found = self.find_customer_by_corporate_id(str(corporate_id))
            return found.get("number") if found else None

        return self.ensure(find, lambda: self.create_customer(payload))

    # -- inventory ----------------------------------------------------------------------------
    def list_inventory(
        self,
        *,
        inventory_number: str | None = None,
        status: str | None = None,
        inventory_types: Iterable[str] | None = None,
        sales_category: int | None = None,
        modified_since: dt.datetime | dt.date | str | None = None,
        condition: str = ">=",
        expand: Iterable[str] = (),
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> Iterator[dict[str, Any]]:
        """Inventory items; ``expand`` names e.g. ``"CrossReference"``, ``"Attribute"``."""
        params: dict[str, Any] = {}
        if inventory_number is not None:
            params["inventoryNumber"] = inventory_number
        if status is not None:
            params["status"] = status
        if inventory_types:
            params["inventoryTypes"] = list(inventory_types)
        if sales_category is not None:
            params["salesCategory"] = sales_category
        for name in expand:
            params[f"expand{name}"] = "true"
        _since(params, modified_since, condition)
        return self.iter_list(
            "/v1/inventory", params, page_size=page_size, key=lambda i: i.get("inventoryNumber")
        )

    def get_inventory(self, inventory_number: str) -> dict[str, Any]:
        return self.get_json(f"/v1/inventory/{_seg(inventory_number)}")

    def find_inventory(self, inventory_number: str) -> dict[str, Any] | None:
        return self.get_or_none(f"/v1/inventory/{_seg(inventory_number)}")

    def create_inventory(self, payload: Mapping[str, Any]) -> str:
        return self.create("/v1/inventory", payload)

    def update_inventory(self, inventory_number: str, payload: Mapping[str, Any]) -> None:
        self.update(f"/v1/inventory/{_seg(inventory_number)}", payload)

    def ensure_inventory(self, payload: Mapping[str, Any]) -> tuple[str, bool]:
        """Create an item unless its ``inventoryNumber`` (the SKU) exists."""
        number = payload.get("inventoryNumber")
        if isinstance(number, Mapping):
            number = number.get("value")
        if not number:
            raise ConfigError("ensure_inventory needs payload['inventoryNumber']", system=SYSTEM)

        def find() -> str | None:
            found = self.find_inventory(str(number))
            return found.get("inventoryNumber") if found else None

        return self.ensure(find, lambda: self.create_inventory(payload))

    def list_cross_references(self, inventory_number: str) -> list[dict[str, Any]]:
        return self.get_json(f"/v1/inventory/{_seg(inventory_number)}/crossReferences")

    def create_cross_reference(self, inventory_number: str, payload: Mapping[str, Any]) -> None:
        """Add a cross-reference (``alternateType`` ``Barcode`` for an EAN/GTIN)."""
        self._send(
            "POST",
            f"/v1/inventory/{_seg(inventory_number)}/crossReferences",
            json_body=wrap_values(payload),
        )

    def upload_inventory_attachment(
        self,
        inventory_number: str,
        filename: str,
        content: bytes,
        content_type: str = "application/octet-stream",
    ) -> str:
        """Attach a file (e.g. a product image); returns the attachment id.

        Visma.net keeps revisions: uploading the same file name again adds a revision, it
        does not replace -- callers should upload only when the content changed.
        """
        response = self._send(
            "POST",
            f"/v1/inventory/{_seg(inventory_number)}/attachment",
            files={"file": (filename, content, content_type)},
            log_body={"file": filename, "bytes": len(content), "content_type": content_type},
        )
        return key_from_location(response.headers.get("Location"))

    # -- attributes, classes, categories ------------------------------------------------------
    def list_attributes(self, *, page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[dict[str, Any]]:
        return self.iter_list(
            "/v1/attribute", page_size=page_size, key=lambda a: a.get("attributeID")
        )

    def get_attribute(self, attribute_id: str) -> dict[str, Any]:
        return self.get_json(f"/v1/attribute/{_seg(attribute_id)}")

    def create_attribute(self, payload: Mapping[str, Any]) -> str:
        return self.create("/v1/attribute", payload)

    def list_item_classes(self) -> list[dict[str, Any]]:
        return self.get_json("/v1/inventory/itemClass")

    def get_item_class(self, item_class: str) -> dict[str, Any]:
        return self.get_json(f"/v1/inventory/itemclass/{_seg(item_class)}")

    def list_sales_categories(self) -> list[dict[str, Any]]:
        return self.get_json("/v1/salescategory")

    def list_customer_classes(self) -> list[dict[str, Any]]:
        return self.get_json("/v1/customer/customerClass")

    # -- stock --------------------------------------------------------------------------------
    def get_inventory_summary(
        self, inventory_number: str, *, warehouse: str | None = None
    ) -> list[dict[str, Any]]:
        """Stock per warehouse: ``onHand``, ``available``, ``soBooked``, ..."""
        params = {"warehouse": warehouse} if warehouse else None
        return self.get_json(f"/v1/inventorysummary/{_seg(inventory_number)}", params)

    def create_inventory_adjustment(self, payload: Mapping[str, Any]) -> str:
        return self.create("/v1/inventoryadjustment", payload)

    def get_inventory_adjustment(self, reference: str) -> dict[str, Any]:
        return self.get_json(f"/v1/inventoryadjustment/{_seg(reference)}")

    def list_inventory_adjustments(
        self,
        *,
        status: str | None = None,
        modified_since: dt.datetime | dt.date | str | None = None,
        condition: str = ">=",
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> Iterator[dict[str, Any]]:
        params: dict[str, Any] = {}
        if status:
            params["status"] = status
        _since(params, modified_since, condition)
        return self.iter_list(
            "/v1/inventoryadjustment",
            params,
            page_size=page_size,
            key=lambda a: a.get("referenceNumber"),
        )

    def release_inventory_adjustment(self, reference: str) -> dict[str, Any]:
        return self.action(f"/v1/inventoryadjustment/{_seg(reference)}/action/release")

    # -- sales orders and shipments -----------------------------------------------------------
    def create_sales_order(self, payload: Mapping[str, Any]) -> str:
        """Create a sales order (v2 endpoint); returns the order number."""
        return self.create("/v2/salesorder", payload)

    def get_sales_order(self, order_number: str, *, order_type: str | None = None) -> dict:
        if order_type:
            return self.get_json(f"/v1/salesorder/{_seg(order_type)}/{_seg(order_number)}")
        return self.get_json(f"/v1/salesorder/{_seg(order_number)}")

    def list_sales_orders(
        self,
        *,
        order_type: str | None = None,
        status: str | None = None,
        customer: str | None = None,
        modified_since: dt.datetime | dt.date | str | None = None,
        condition: str = ">=",
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> Iterator[dict[str, Any]]:
        params: dict[str, Any] = {}
        if order_type:
            params["orderType"] = order_type
        if status:
            params["status"] = status
        _since(params, modified_since, condition)
        path = f"/v1/customer/{_seg(customer)}/salesorder" if customer else "/v1/salesorder"
        return self.iter_list(
            path,
            params,
            page_size=page_size,
            key=lambda o: (o.get("orderType"), o.get("orderNo")),
        )

    def find_sales_order_by_customer_ref(
        self, customer: str, customer_ref: str, *, order_type: str | None = None
    ) -> dict[str, Any] | None:
        """The customer's order whose ``customerRefNo`` is ``customer_ref`` (lookup-before-create).

        The order list has no reference filter, so the customer's orders are scanned.
        """
        for order in self.list_sales_orders(customer=customer, order_type=order_type):
            if order.get("customerRefNo") == customer_ref:
                return order
        return None

    def ensure_sales_order(
        self, payload: Mapping[str, Any], *, customer: str, customer_ref: str
    ) -> tuple[str, bool]:
        def find() -> str | None:
            found = self.find_sales_order_by_customer_ref(customer, customer_ref)
            return found.get("orderNo") if found else None

        return self.ensure(find, lambda: self.create_sales_order(payload))

    def create_shipment(
        self,
        order_number: str,
        *,
        order_type: str,
        shipment_date: dt.date | dt.datetime | str,
        warehouse: str,
    ) -> str:
        """Create a shipment of an order's open lines; returns the shipment number.

        (``CreateShipmentActionDto`` has no per-line quantities: to ship less, update the
        shipment's ``shippedQty`` afterwards.)
        """
        result = self.action(
            f"/v1/salesorder/{_seg(order_number)}/action/createShipment",
            {
                "orderType": order_type,
                "shipmentDate": _scalar(shipment_date),
                "shipmentWarehouse": warehouse,
            },
        )
        number = result.get("referenceNumber") or (result.get("shipmentDto") or {}).get(
            "shipmentNumber"
        )
        if not number:
            raise ProtocolError(
                f"createShipment for order {order_number} answered without a shipment number",
                system=SYSTEM,
            )
        return str(number)

    def get_shipment_with_etag(self, shipment_number: str) -> tuple[dict[str, Any], str | None]:
        response = None
        for attempt in (1, 2):
            response = self._send("GET", f"/v1/shipment/{_seg(shipment_number)}")
            try:
                return decode_json(response, SYSTEM), response.headers.get("ETag")
            except ProtocolError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def get_shipment(self, shipment_number: str) -> dict[str, Any]:
        return self.get_shipment_with_etag(shipment_number)[0]

    def update_shipment(
        self, shipment_number: str, payload: Mapping[str, Any], *, etag: str | None = None
    ) -> None:
        """Update a shipment (carrier, tracking numbers, quantities).

        With ``etag`` the update is conditional; on 412 the shipment is re-read and the update
        retried once with the fresh ETag (the change is re-applied to the current version).
        """
        path = f"/v1/shipment/{_seg(shipment_number)}"
        try:
            self.update(path, payload, etag=etag)
        except PreconditionFailed:
            _, fresh = self.get_shipment_with_etag(shipment_number)
            self.update(path, payload, etag=fresh)

    def confirm_shipment(self, shipment_number: str) -> dict[str, Any]:
        return self.action(f"/v1/shipment/{_seg(shipment_number)}/action/confirmShipment")

    # -- customer invoices and credit notes ---------------------------------------------------
    # Both kinds behave the same way and differ only in their paths (:class:`DocumentKind`);
    # the public methods name the kind, the ``_..._document`` helpers do the work once.
    def create_customer_invoice(self, payload: Mapping[str, Any]) -> str:
        """Create a customer invoice (v2; the v1 POST is deprecated); returns its number."""
        return self._create_document(CUSTOMER_INVOICE, payload)

    def get_customer_invoice(self, reference: str) -> dict[str, Any]:
        return self._get_document(CUSTOMER_INVOICE, reference)

    def list_customer_invoices(self, **filters: Any) -> Iterator[dict[str, Any]]:
        """Customer invoices; ``filters`` as in :meth:`_list_documents`."""
        return self._list_documents(CUSTOMER_INVOICE, **filters)

    def find_customer_invoice_by_external_ref(
        self, ref: str, *, field: str = "externalReference"
    ) -> dict[str, Any] | None:
        """The invoice carrying ``ref`` in ``externalReference`` (or ``customerRefNumber``)."""
        return self._find_document(CUSTOMER_INVOICE, ref, field)

    def ensure_customer_invoice(
        self, payload: Mapping[str, Any], *, external_ref: str, field: str = "externalReference"
    ) -> tuple[str, bool]:
        """Create an invoice unless one with this external reference exists."""
        return self._ensure_document(CUSTOMER_INVOICE, payload, external_ref, field)

    def release_customer_invoice(self, reference: str) -> dict[str, Any]:
        return self._release_document(CUSTOMER_INVOICE, reference)

    def create_customer_credit_note(self, payload: Mapping[str, Any]) -> str:
        return self._create_document(CUSTOMER_CREDIT_NOTE, payload)

    def get_customer_credit_note(self, reference: str) -> dict[str, Any]:
        return self._get_document(CUSTOMER_CREDIT_NOTE, reference)

    def list_customer_credit_notes(self, **filters: Any) -> Iterator[dict[str, Any]]:
        """Customer credit notes; ``filters`` as in :meth:`_list_documents`."""
        return self._list_documents(CUSTOMER_CREDIT_NOTE, **filters)

    def find_customer_credit_note_by_external_ref(
        self, ref: str, *, field: str = "externalReference"
    ) -> dict[str, Any] | None:
        return self._find_document(CUSTOMER_CREDIT_NOTE, ref, field)

    def ensure_customer_credit_note(
        self, payload: Mapping[str, Any], *, external_ref: str, field: str = "externalReference"
    ) -> tuple[str, bool]:
        return self._ensure_document(CUSTOMER_CREDIT_NOTE, payload, external_ref, field)

    def release_customer_credit_note(self, reference: str) -> dict[str, Any]:
        return self._release_document(CUSTOMER_CREDIT_NOTE, reference)

    def _create_document(self, kind: DocumentKind, payload: Mapping[str, Any]) -> str:
        return self.create(kind.create_path, payload)

    def _get_document(self, kind: DocumentKind, reference: str) -> dict[str, Any]:
        return self.get_json(f"{kind.path}/{_seg(reference)}")

    def _list_documents(
        self,
        kind: DocumentKind,
        *,
        external_reference: str | None = None,
        customer_ref_number: str | None = None,
        customer: str | None = None,
        status: str | None = None,
        modified_since: dt.datetime | dt.date | str | None = None,
        condition: str = ">=",
        created_since: dt.datetime | dt.date | str | None = None,
        created_condition: str = ">=",
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> Iterator[dict[str, Any]]:
        """Documents of ``kind``, filtered as the spec's list allows: external reference,
        customer's reference number, customer, status, ``lastModifiedDateTime`` and
        ``createdDateTime`` (each with its condition, ``>=`` by default)."""
        params: dict[str, Any] = {}
        for param, value in (
            ("externalReference", external_reference),
            ("customerRefNumber", customer_ref_number),
            ("customer", customer),
            ("status", status),
        ):
            if value is not None:
                params[param] = value
        _since(params, modified_since, condition)
        _since(params, created_since, created_condition, prefix="created")
        return self.iter_list(
            kind.path,
            params,
            page_size=page_size,
            key=lambda d: (d.get("documentType"), d.get("referenceNumber")),
        )

    def _find_document(self, kind: DocumentKind, ref: str, field: str) -> dict[str, Any] | None:
        if field not in ("externalReference", "customerRefNumber"):
            raise ValueError(f"cannot look documents up by {field!r}")
        for document in self.iter_list(kind.path, {field: ref}):
            if document.get(field) == ref:  # the filter is trusted, and checked
                return document
        return None

    def _ensure_document(
        self, kind: DocumentKind, payload: Mapping[str, Any], external_ref: str, field: str
    ) -> tuple[str, bool]:
        def find() -> str | None:
            found = self._find_document(kind, external_ref, field)
            return found.get("referenceNumber") if found else None

        return self.ensure(find, lambda: self._create_document(kind, payload))

    def _release_document(self, kind: DocumentKind, reference: str) -> dict[str, Any]:
        return self.action(f"{kind.path}/{_seg(reference)}/action/release")

    # -- master data (read only) --------------------------------------------------------------
    def list_payment_methods(self) -> list[dict[str, Any]]:
        return self.get_json("/v1/paymentmethod")

    def list_credit_terms(self) -> list[dict[str, Any]]:
        return list(self.iter_list("/v1/creditTerm", key=lambda t: t.get("termsId")))

    def list_sales_order_types(self) -> list[dict[str, Any]]:
        """``GET /v1/salesordertype``: the order types (``orderType``, ``description``, ...)."""
        return self.get_json("/v1/salesordertype")

    def list_carriers(self) -> list[dict[str, Any]]:
        return self.get_json("/v1/carrier")

    def list_branches(self) -> list[dict[str, Any]]:
        return self.get_json("/v1/branch")

    def list_warehouses(self) -> list[dict[str, Any]]:
        return self.get_json("/v1/warehouse")

    def list_vat_categories(self) -> list[dict[str, Any]]:
        return self.get_json("/v1/vatCategory")

    def list_vats(self) -> list[dict[str, Any]]:
        return self.get_json("/v1/vat")

    def list_customer_sales_prices(
        self,
        *,
        inventory_id: str | None = None,
        price_type: str | None = None,
        price_code: str | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> Iterator[dict[str, Any]]:
        """Sales prices (read only: Visma.net has no endpoint to write them)."""
        params: dict[str, Any] = {}
        for param, value in (
            ("inventoryId", inventory_id),
            ("priceType", price_type),
            ("priceCode", price_code),
        ):
            if value is not None:
                params[param] = value
        return self.iter_list(
            "/v1/customerSalesPrice", params, page_size=page_size, key=lambda p: p.get("recordId")
        )


def _identity(item: Any) -> Any:
    """Default de-duplication key: the whole record without its per-page metadata."""
    if isinstance(item, dict):
        return repr(sorted((k, repr(v)) for k, v in item.items() if k != "metadata"))
    return repr(item)
