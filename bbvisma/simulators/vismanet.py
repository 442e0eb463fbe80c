"""A stateful Visma.net ERP simulator (WSGI), held to the published OpenAPI document.

It serves the endpoints the sync uses -- with the spec's paths, methods, field names, status
codes and headers -- plus the Visma Connect token endpoint at ``/connect/token`` on the same
app, so one loopback port serves both (the client's ``token_url`` is configurable).

What it simulates, and how (choices where the spec is silent are marked *chosen*):

* **Auth.** ``POST /connect/token`` (form: ``grant_type=client_credentials``, ``client_id``,
  ``client_secret``, ``scope``, ``tenant_id``; HTTP Basic client auth accepted too). A wrong
  secret answers OAuth's ``400 {"error": "invalid_client"}``; a missing tenant ``invalid_request``
  (*chosen*); scopes beyond the client's ``invalid_scope``. Tokens are opaque, live
  ``token_lifetime`` seconds on the simulator's clock. An API call with a missing, unknown or
  expired token answers 401 with the Visma error body and ``WWW-Authenticate: Bearer
  error="invalid_token"``; a token of a tenant without a licence answers 401 with fault code
  12027 ("No license for this company."), an ``ipp-company-id`` outside the tenant 401 with fault
  code 12002 (the header is accepted, never required). A call outside the token's scopes: 403.
* **Quota.** A fixed window of ``quota_per_hour`` requests per clock hour per (tenant, client),
  announced on every API answer in ``X-RateLimit-Limit / -Remaining / -Reset`` (seconds until
  the window ends) / ``-Policy`` (``"<limit>;w=3600"``, *chosen*); beyond it 429 with
  ``Retry-After`` (seconds until the window ends).
* **Errors.** ``{"ExceptionType", "ExceptionMessage", "ExceptionFaultCode",
  "ExceptionMessageID", "ExceptionDetails"}``. ``ExceptionType`` is ``"IPPException"`` (as in
  Visma's published examples); fault codes are only set where Visma documents one (12027,
  12002), else ``""`` (*chosen*: the real codes for validation errors are not published).
* **Validation.** Every JSON request body is validated against the operation's request schema
  in the spec (jsonschema, ``$ref`` resolved; compiled lazily once per operation and cached).
  Two readings of the spec: a schema with ``properties`` but no ``type`` is an object (the spec
  omits ``type`` on many field wrappers, so an unwrapped value would otherwise slip through),
  and ``null`` values count as "not sent" (the .NET service ignores them). A violation answers
  400 naming the field, e.g. ``invoiceLines[0].quantity.value: 'x' is not of type 'number'``.
* **Business rules of a real tenant.** Unknown customer, item, warehouse, branch, VAT category,
  credit terms, payment method, carrier, currency, unit, class or attribute value referenced by
  a record answer 400 naming field and value. Document totals are computed from the lines
  (line amount = quantity x unit price - discount, rounded to cents; VAT per VAT category from
  its VAT's rate; ``amount = detailTotal + vatTotal``). No currency conversion (*chosen*:
  exchange rate 1).
* **Stock.** ``/v1/inventorysummary/{item}`` is computed from released inventory adjustments
  and confirmed shipments (``onHand``), open sales order lines not yet on a shipment
  (``soBooked``) and open shipments (``soShipped``); ``available = onHand - soBooked -
  soShipped``, ``availableForShipment = onHand - soShipped``; allocations are not simulated.
* **Shipments.** ``action/createShipment`` copies the order's open lines of the requested
  warehouse (``CreateShipmentActionDto`` has no per-line quantities; lower ``shippedQty`` with a
  PUT). Every shipment has an ``ETag`` that changes with every update and action; a PUT with a
  stale ``If-Match`` answers 412 (``If-Match`` is optional). ``confirmShipment`` moves stock and
  reduces the order's open quantities.
* **Lists.** ``pageNumber`` (1-based) + ``pageSize``; a size above ``max_page_size`` is clamped
  silently; every item carries ``metadata {totalCount, maxPageSize}``. ``lastModifiedDateTime``
  + ``lastModifiedDateTimeCondition`` (``>``, ``<``, ``>=``, ``<=``) filter on the record's
  modification time, kept per record on the injectable clock, in UTC (*chosen*); the two
  document lists (customer invoices, credit notes) take ``createdDateTime`` +
  ``createdDateTimeCondition`` alike (the spec's only wording: "Creation date and time"; the
  formats and conditions of ``lastModifiedDateTime`` are *chosen*). Sales order lists have no
  creation filter in the spec.
* **Creates** answer 201 with an empty body and ``Location``; updates 204.

* **Background API.** A call carrying ``erp-api-background`` (any value: a webhook URL,
  ``none``, ``subscription...``; no webhook is ever posted) is processed at once but answered
  ``202 {"id", "stateLocation"}``; ``GET /v1/background/{id}`` reports ``Started`` until
  ``background_seconds`` (default 2) have passed on the clock, then ``Finished`` with the
  call's ``statusCode`` and ``responseHeaders`` (``Location``); ``.../content`` returns its
  body (404 when it had none). Another client or tenant gets 403; after 24 hours 410.

Not simulated: subaccounts, accounts, projects, price calculation from ``customerSalesPrice``.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import math
import re
import secrets
import threading
import uuid
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jsonschema

from bbvisma.simulators.common import (
    Clock,
    Faults,
    SimRequest,
    SimResponse,
    SimulatorBase,
    json_response,
)

SPEC_FILE = "visma-net-erp-v1.openapi.json"
SEED_FILE = Path(__file__).resolve().parent / "seed" / "visma_default.json"
TOKEN_PATH = "/connect/token"

SCOPE_PREFIX = "vismanet_erp_service_api:"
STOCK_TYPES = frozenset({"FinishedGoodItem", "ComponentPartItem", "SubassemblyItem"})
OPEN_ORDER_STATUSES = frozenset({"Open", "Shipping", "BackOrder"})
FAULT_NO_LICENCE = "12027"
FAULT_COMPANY = "12002"


# --------------------------------------------------------------------------------------------
# The reference spec: loaded once, validators compiled lazily per operation
# --------------------------------------------------------------------------------------------
class VismaSpec:
    """The Visma.net OpenAPI document with cached request/response validators.

    Used by the simulator (requests) and by the contract tests (responses). The document is
    large (383 paths, 1666 schemas): it is read on first use and validators are built once
    per schema.
    """

    _shared: VismaSpec | None = None
    _shared_lock = threading.Lock()

    def __init__(self, path: Path | str | None = None):
        if path is None:
            from bbvisma.reference import reference_dir

            path = reference_dir() / SPEC_FILE
        self.path = Path(path)
        with self.path.open(encoding="utf-8") as fh:
            document = json.load(fh)
        self.paths: dict[str, dict[str, Any]] = document["paths"]
        components = copy.deepcopy(document["components"])
        for schema in components.get("schemas", {}).values():
            _objects_typed(schema)
        self._root = {"components": components}
        self._validators: dict[str, jsonschema.protocols.Validator] = {}
        self._lock = threading.Lock()

    @classmethod
    def shared(cls) -> VismaSpec:
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def operation(self, method: str, template: str) -> dict[str, Any]:
        try:
            return self.paths[template][method.lower()]
        except KeyError:
            raise KeyError(f"{method.upper()} {template} is not in the Visma.net spec") from None

    def request_schema(self, method: str, template: str) -> dict[str, Any] | None:
        body = self.operation(method, template).get("requestBody") or {}
        return (body.get("content") or {}).get("application/json", {}).get("schema")

    def response_schema(self, method: str, template: str, status: int) -> dict[str, Any] | None:
        """The JSON schema of answer ``status``; ``KeyError`` if the spec lists no such answer."""
        responses = self.operation(method, template).get("responses", {})
        if str(status) not in responses:
            raise KeyError(f"{method.upper()} {template} has no {status} answer in the spec")
        content = responses[str(status)].get("content") or {}
        return (content.get("application/json") or {}).get("schema")

    def _validator(self, schema: dict[str, Any]) -> jsonschema.protocols.Validator:
        key = json.dumps(schema, sort_keys=True)
        with self._lock:
            validator = self._validators.get(key)
            if validator is None:
                validator = jsonschema.Draft4Validator({**self._root, **schema})
                self._validators[key] = validator
            return validator

    def errors(self, schema: dict[str, Any] | None, value: Any) -> list[str]:
        """Violations of ``schema`` by ``value``, each naming the field path."""
        if schema is None:
            return []
        found = sorted(
            self._validator(schema).iter_errors(value), key=lambda e: list(e.absolute_path)
        )
        return [f"{_field_path(e.absolute_path) or '(body)'}: {e.message}" for e in found]

    def request_errors(self, method: str, template: str, body: Any) -> list[str]:
        return self.errors(self.request_schema(method, template), drop_nulls(body))

    def response_errors(self, method: str, template: str, status: int, body: Any) -> list[str]:
        return self.errors(self.response_schema(method, template, status), body)


def _objects_typed(schema: Any) -> None:
    """Give ``type: object`` to every schema that has ``properties`` but no ``type``."""
    if isinstance(schema, dict):
        if "properties" in schema and "type" not in schema:
            schema["type"] = "object"
        for value in schema.values():
            _objects_typed(value)
    elif isinstance(schema, list):
        for value in schema:
            _objects_typed(value)


def _field_path(parts) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def drop_nulls(value: Any) -> Any:
    """Remove ``null`` values, and ``{"value": null}`` wrappers, at every level."""
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if not _is_null(v)}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


def _is_null(value: Any) -> bool:
    return value is None or (
        isinstance(value, dict) and set(value) == {"value"} and value["value"] is None
    )


def unwrap(value: Any) -> Any:
    """Visma write shape -> plain: ``{"value": x}`` becomes ``x`` at every level."""
    if isinstance(value, dict):
        if set(value) == {"value"}:
            return unwrap(value["value"])
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


def default_seed() -> dict[str, Any]:
    """The ``vismanet`` section of the bundled demo seed (``seed/visma_default.json``)."""
    with SEED_FILE.open(encoding="utf-8") as fh:
        return json.load(fh)["vismanet"]


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------
class Reject(Exception):
    """Answer with a Visma error (raised anywhere inside a handler)."""

    def __init__(self, status: int, message: str, *, fault: str = "", headers: list | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.fault = fault
        self.headers = headers or []


def visma_error(
    status: int, message: str, *, fault: str = "", headers: list | None = None
) -> SimResponse:
    ident = str(uuid.uuid4())
    body = {
        "ExceptionType": "IPPException",
        "ExceptionMessage": message,
        "ExceptionFaultCode": fault,
        "ExceptionMessageID": f"{fault}_{ident}" if fault else ident,
        "ExceptionDetails": "",
    }
    return json_response(status, body, headers or [])


def _money(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def _dec(value: Any, default: str = "0") -> Decimal:
    if value is None:
        return Decimal(default)
    return Decimal(str(value))


def _num(value: Decimal | float | int) -> float:
    return float(value)


def _clean(value: Any) -> Any:
    """Output copy: no ``None`` (the spec has no nullable fields), no private keys."""
    if isinstance(value, dict):
        return {
            k: _clean(v) for k, v in value.items() if v is not None and not str(k).startswith("_")
        }
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _parse_filter_time(text: str) -> dt.datetime:
    """``yyyy-MM-dd``, ``yyyy-MM-dd HH:mm:ss[.FFF]``, ``yyyy-MM-ddTHH:mm:ss[.FFF]`` (spec)."""
    value = text.strip()
    for fmt in (
        "%Y-%m-%d",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M:%S.%f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M:%S.%f",
        "%Y-%m-%d %H:%M",
    ):
        try:
            return dt.datetime.strptime(value, fmt)
        except ValueError:
            continue
    raise ValueError(text)


def _parse_date(value: Any) -> dt.date:
    if isinstance(value, str):
        text = value.strip()
        try:
            return dt.date.fromisoformat(text[:10])
        except ValueError:
            pass
    raise ValueError(value)


CONDITIONS: dict[str, Callable[[dt.datetime, dt.datetime], bool]] = {
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
}


class Route:
    def __init__(self, method: str, template: str, handler: str, scope: str, validate=True):
        self.method = method
        self.template = template
        self.handler = handler
        self.scope = scope
        self.validate = validate
        pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
        self.regex = re.compile(f"^{pattern}/?$", re.IGNORECASE)
        self.params = template.count("{")


# (method, spec path template, handler, scope)
ROUTES = [
    Route("GET", "/v1/customer", "list_customers", "read"),
    Route("POST", "/v1/customer", "create_customer", "create"),
    Route("GET", "/v1/customer/customerClass", "list_customer_classes", "read"),
    Route("GET", "/v1/customer/customerClass/{customerClassId}", "get_customer_class", "read"),
    Route("GET", "/v1/customer/{customerCd}", "get_customer", "read"),
    Route("PUT", "/v1/customer/{customerCd}", "update_customer", "update"),
    Route("GET", "/v1/customer/{customerCd}/salesorder", "list_customer_orders", "read"),
    Route("GET", "/v1/inventory", "list_inventory", "read"),
    Route("POST", "/v1/inventory", "create_inventory", "create"),
    Route("GET", "/v1/inventory/itemClass", "list_item_classes", "read"),
    Route("GET", "/v1/inventory/itemclass/{itemClassNumber}", "get_item_class", "read"),
    Route("GET", "/v1/inventory/{inventoryNumber}", "get_inventory", "read"),
    Route("PUT", "/v1/inventory/{inventoryNumber}", "update_inventory", "update"),
    Route("GET", "/v1/inventory/{inventoryNumber}/crossReferences", "list_xrefs", "read"),
    Route("POST", "/v1/inventory/{inventoryNumber}/crossReferences", "create_xref", "create"),
    Route(
        "POST",
        "/v1/inventory/{inventoryNumber}/attachment",
        "create_attachment",
        "create",
        validate=False,
    ),
    Route("GET", "/v1/attribute", "list_attributes", "read"),
    Route("POST", "/v1/attribute", "create_attribute", "create"),
    Route("GET", "/v1/attribute/{attributeId}", "get_attribute", "read"),
    Route("GET", "/v1/salescategory", "list_sales_categories", "read"),
    Route("GET", "/v1/inventorysummary/{inventoryNumber}", "inventory_summary", "read"),
    Route("GET", "/v1/inventoryadjustment", "list_adjustments", "read"),
    Route("POST", "/v1/inventoryadjustment", "create_adjustment", "create"),
    Route(
        "GET",
        "/v1/inventoryadjustment/{inventoryAdjustmentNumber}",
        "get_adjustment",
        "read",
    ),
    Route(
        "POST",
        "/v1/inventoryadjustment/{adjRefNumber}/action/release",
        "release_adjustment",
        "update",
    ),
    Route("POST", "/v2/salesorder", "create_order", "create"),
    Route("GET", "/v2/salesorder", "list_orders", "read"),
    Route("GET", "/v2/salesorder/{orderNbr}", "get_order", "read"),
    Route("GET", "/v1/salesorder", "list_orders", "read"),
    Route("GET", "/v1/salesorder/{orderNbr}", "get_order", "read"),
    Route("GET", "/v1/salesorder/{orderType}/{orderNbr}", "get_order", "read"),
    Route(
        "POST",
        "/v1/salesorder/{saleOrderNumber}/action/createShipment",
        "create_shipment",
        "update",
    ),
    Route("GET", "/v1/shipment/{shipmentNbr}", "get_shipment", "read"),
    Route("PUT", "/v1/shipment/{shipmentNbr}", "update_shipment", "update"),
    Route(
        "POST",
        "/v1/shipment/{shipmentNumber}/action/confirmShipment",
        "confirm_shipment",
        "update",
    ),
    Route("POST", "/v2/customerinvoice", "create_invoice", "create"),
    Route("GET", "/v1/customerinvoice", "list_invoices", "read"),
    Route("GET", "/v1/customerinvoice/{invoiceNumber}", "get_invoice", "read"),
    Route(
        "POST",
        "/v1/customerinvoice/{invoiceNumber}/action/release",
        "release_invoice",
        "update",
    ),
    Route("POST", "/v2/customerCreditNote", "create_credit_note", "create"),
    Route("GET", "/v1/customerCreditNote", "list_credit_notes", "read"),
    Route("GET", "/v1/customerCreditNote/{creditNoteNumber}", "get_credit_note", "read"),
    Route(
        "POST",
        "/v1/customerCreditNote/{creditNoteNumber}/action/release",
        "release_credit_note",
        "update",
    ),
    Route("GET", "/v1/paymentmethod", "list_payment_methods", "read"),
    Route("GET", "/v1/paymentmethod/{paymentMethodNumber}", "get_payment_method", "read"),
    Route("GET", "/v1/creditTerm", "list_credit_terms", "read"),
    Route("GET", "/v1/salesordertype", "list_sales_order_types", "read"),
    Route("GET", "/v1/carrier", "list_carriers", "read"),
    Route("GET", "/v1/carrier/{carrierName}", "get_carrier", "read"),
    Route("GET", "/v1/branch", "list_branches", "read"),
    Route("GET", "/v1/branch/{branchNumber}", "get_branch", "read"),
    Route("GET", "/v1/warehouse", "list_warehouses", "read"),
    Route("GET", "/v1/warehouse/{warehouseID}", "get_warehouse", "read"),
    Route("GET", "/v1/vat", "list_vats", "read"),
    Route("GET", "/v1/vatCategory", "list_vat_categories", "read"),
    Route("GET", "/v1/customerSalesPrice", "list_sales_prices", "read"),
    Route("GET", "/v1/background/{requestId}", "background_state", "read"),
    Route("GET", "/v1/background/{requestId}/content", "background_content", "read"),
]
# literal segments win over parameters ("/v1/customer/customerClass" before "{customerCd}")
ROUTES.sort(key=lambda r: (r.params, -len(r.template)))


class Ctx:
    """Who is calling: resolved from the bearer token."""

    def __init__(self, tenant: str, client_id: str, scopes: set[str], base_url: str):
        self.tenant = tenant
        self.client_id = client_id
        self.scopes = scopes
        self.base_url = base_url


# --------------------------------------------------------------------------------------------
# The simulator
# --------------------------------------------------------------------------------------------
class VismaSimulator(SimulatorBase):
    """Visma.net ERP + Visma Connect token endpoint, as one WSGI app.

    :param quota_per_hour: requests per clock hour per (tenant, client) (default: seed, 15000).
    :param max_page_size: the clamp for ``pageSize`` (default: seed, 1000).
    :param token_lifetime: seconds a token lives (default: seed, 3600).
    :param background_seconds: how long a background operation reports ``Started`` (default 2).
    :param spec: a :class:`VismaSpec` (default: the shared one from the reference dir).
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        faults: Faults | None = None,
        spec: VismaSpec | None = None,
        quota_per_hour: int | None = None,
        max_page_size: int | None = None,
        token_lifetime: float | None = None,
        background_seconds: float | None = None,
    ):
        super().__init__(clock=clock, faults=faults)
        limits = {
            "quota_per_hour": quota_per_hour,
            "max_page_size": max_page_size,
            "token_lifetime": token_lifetime,
            "background_seconds": background_seconds,
        }
        self._limit_overrides = {k: v for k, v in limits.items() if v is not None}
        self._spec = spec
        self.reset_state()

    @classmethod
    def demo(cls, **kw: Any) -> VismaSimulator:
        """A simulator loaded with the bundled German demo company."""
        sim = cls(**kw)
        sim.load_seed(default_seed())
        return sim

    @property
    def spec(self) -> VismaSpec:
        if self._spec is None:
            self._spec = VismaSpec.shared()
        return self._spec

    # -- state --------------------------------------------------------------------------------
    def reset_state(self) -> None:
        self.quota_per_hour = int(self._limit_overrides.get("quota_per_hour", 15000))
        self.max_page_size = int(self._limit_overrides.get("max_page_size", 1000))
        self.token_lifetime = float(self._limit_overrides.get("token_lifetime", 3600))
        self.background_seconds = float(self._limit_overrides.get("background_seconds", 2.0))
        self.clients: dict[str, dict[str, Any]] = {}
        self.tenants: dict[str, dict[str, Any]] = {}
        self.tokens: dict[str, dict[str, Any]] = {}
        self.quota: dict[tuple[str, str], list[int]] = {}
        self.defaults: dict[str, Any] = {}
        self.currencies: set[str] = set()
        self.countries: dict[str, str] = {}
        self.units: set[str] = set()
        self.order_types: set[str] = set()
        self.vat_zones: dict[str, dict] = {}
        self.price_classes: dict[str, dict] = {}
        self.branches: dict[str, dict] = {}
        self.warehouses: dict[str, dict] = {}
        self.credit_terms: dict[str, dict] = {}
        self.payment_methods: dict[str, dict] = {}
        self.carriers: dict[str, dict] = {}
        self.item_classes: dict[str, dict] = {}
        self.sales_categories: list[dict] = []
        self.vats: dict[str, dict] = {}
        self.vat_categories: dict[str, dict] = {}
        self.customer_classes: dict[str, dict] = {}
        self.sales_prices: list[dict] = []
        self.attributes: dict[str, dict] = {}
        self.customers: dict[str, dict] = {}
        self.inventory: dict[str, dict] = {}
        self.adjustments: dict[str, dict] = {}
        self.orders: dict[tuple[str, str], dict] = {}
        self.shipments: dict[str, dict] = {}
        self.invoices: dict[str, dict] = {}
        self.credit_notes: dict[str, dict] = {}
        self.attachments: dict[str, dict] = {}
        self.background_jobs: dict[str, dict] = {}
        self._seq: dict[str, int] = {}

    def load_seed(self, section: dict[str, Any]) -> None:
        """Load master data, credentials and limits (``{"vismanet": ...}`` is unwrapped)."""
        if "vismanet" in section and "credentials" not in section:
            section = section["vismanet"]
        self.remember_seed(section)
        with self.lock:
            limits = {**(section.get("limits") or {}), **self._limit_overrides}
            self.quota_per_hour = int(limits.get("quota_per_hour", self.quota_per_hour))
            self.max_page_size = int(limits.get("max_page_size", self.max_page_size))
            self.token_lifetime = float(limits.get("token_lifetime", self.token_lifetime))
            creds = section.get("credentials") or {}
            for client in creds.get("clients", []):
                self.clients[client["client_id"]] = {
                    "client_secret": client["client_secret"],
                    "scopes": list(client.get("scopes") or []),
                }
            for tenant in creds.get("tenants", []):
                self.tenants[tenant["tenant_id"]] = {
                    "licensed": bool(tenant.get("licensed", True)),
                    "companies": [str(c) for c in tenant.get("companies", [])],
                }
            self.defaults.update(section.get("defaults") or {})
            self.currencies.update(section.get("currencies") or [])
            self.countries.update(section.get("countries") or {})
            self.units.update(section.get("units") or [])
            self.order_types.update(section.get("orderTypes") or [])
            stamp = self._stamp()

            def table(name: str, key: str) -> dict[str, dict]:
                return {str(r[key]): dict(r) for r in section.get(name) or []}

            self.vat_zones.update(table("vatZones", "id"))
            self.price_classes.update(table("priceClasses", "id"))
            self.branches.update(table("branches", "number"))
            self.warehouses.update(table("warehouses", "warehouseID"))
            self.credit_terms.update(table("creditTerms", "termsId"))
            self.payment_methods.update(table("paymentMethods", "paymentMethodID"))
            self.carriers.update(table("carriers", "carrierId"))
            self.item_classes.update(table("itemClasses", "id"))
            self.vats.update(table("vats", "vatId"))
            self.vat_categories.update(table("vatCategories", "vatCategoryId"))
            self.customer_classes.update(table("customerClasses", "id"))
            self.sales_categories.extend(section.get("salesCategories") or [])
            self.sales_prices.extend(dict(p) for p in section.get("customerSalesPrices") or [])
            for record in (
                *self.branches.values(),
                *self.credit_terms.values(),
                *self.carriers.values(),
                *self.vats.values(),
                *self.vat_categories.values(),
                *self.sales_prices,
            ):
                record.setdefault("lastModifiedDateTime", stamp)
            for attribute in section.get("attributes") or []:
                record = dict(attribute)
                record.setdefault("createdDateTime", stamp)
                record.setdefault("lastModifiedDateTime", stamp)
                self.attributes[record["attributeID"]] = record
            for item in section.get("inventory") or []:
                self._insert_inventory(dict(item))
            for customer in section.get("customers") or []:
                self._insert_customer(dict(customer))

    def dump_state(self) -> dict[str, Any]:
        return {
            "limits": {
                "quota_per_hour": self.quota_per_hour,
                "max_page_size": self.max_page_size,
                "token_lifetime": self.token_lifetime,
            },
            "quota": [
                {"tenant": t, "client": c, "window": w, "used": n}
                for (t, c), (w, n) in sorted(self.quota.items())
            ],
            "tokens_issued": len(self.tokens),
            "customers": _clean(list(self.customers.values())),
            "inventory": _clean(list(self.inventory.values())),
            "attributes": _clean(list(self.attributes.values())),
            "inventoryAdjustments": _clean(list(self.adjustments.values())),
            "salesOrders": _clean(list(self.orders.values())),
            "shipments": [{**_clean(s), "etag": self._etag(s)} for s in self.shipments.values()],
            "customerInvoices": _clean(list(self.invoices.values())),
            "customerCreditNotes": _clean(list(self.credit_notes.values())),
        }

    # -- time ---------------------------------------------------------------------------------
    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock.now(), dt.timezone.utc).replace(tzinfo=None)

    def _write_time(self) -> dt.datetime:
        """The server time a write is stamped with: the clock's (a hook for benchmarks)."""
        return self._now()

    def _stamp(self) -> str:
        now = self._write_time()
        return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}"

    def _today(self) -> str:
        return self._now().strftime("%Y-%m-%dT00:00:00")

    def _next(self, series: str, start: int = 1, width: int = 6) -> str:
        self._seq[series] = self._seq.get(series, start - 1) + 1
        return f"{self._seq[series]:0{width}d}"

    # -- hooks of SimulatorBase ---------------------------------------------------------------
    def fault_status_response(self, status: int, body: Any = None) -> SimResponse:
        if body is None:
            return visma_error(status, f"Simulated failure ({status}).")
        return super().fault_status_response(status, body)

    def rate_limit_response(self, retry_after: float | None) -> SimResponse:
        seconds = int(math.ceil(retry_after if retry_after is not None else 60))
        return visma_error(
            429,
            "API rate limit exceeded. Try again later.",
            headers=[("Retry-After", str(seconds))],
        )

    def internal_error_response(self, exc: Exception) -> SimResponse:
        return visma_error(500, f"An error has occurred ({type(exc).__name__}: {exc}).")

    def handle_sim(self, request: SimRequest, name: str) -> SimResponse | None:
        if name == "expire_tokens" and request.method == "POST":
            count = len(self.tokens)
            for token in self.tokens.values():
                token["expires_at"] = 0.0
            return json_response(200, {"expired": count})
        return None

    def log_extra(self, request: SimRequest) -> dict[str, Any]:
        company = request.headers.get("ipp-company-id")
        return {"company": company} if company else {}

    # -- dispatch -----------------------------------------------------------------------------
    def handle(self, request: SimRequest) -> SimResponse:
        if request.path.rstrip("/").lower() == TOKEN_PATH:
            if request.method != "POST":
                return json_response(405, {"error": "invalid_request"})
            return self._token_endpoint(request)
        route, params, allowed = self._route(request)
        if route is None:
            if allowed:
                return visma_error(
                    405, f"The requested resource does not support http method '{request.method}'."
                )
            return visma_error(404, f"No HTTP resource was found that matches {request.path}.")
        try:
            ctx = self._authenticate(request, route)
        except Reject as rej:
            return visma_error(rej.status, rej.message, fault=rej.fault, headers=rej.headers)
        quota_headers, over = self._count(ctx)
        if over is not None:
            return visma_error(
                429,
                "API rate limit exceeded for this company and client. Try again later.",
                headers=[*quota_headers, ("Retry-After", str(over))],
            )
        response = self._run(request, route, ctx, params)
        background = request.headers.get("erp-api-background")
        if background is not None and not route.template.startswith("/v1/background"):
            response = self._to_background(request, route, ctx, response, background)
        response.headers.extend(quota_headers)
        return response

    def _run(self, request: SimRequest, route: Route, ctx: Ctx, params: dict) -> SimResponse:
        try:
            body = self._body(request, route)
            return getattr(self, "h_" + route.handler)(request, ctx, body, **params)
        except Reject as rej:
            return visma_error(rej.status, rej.message, fault=rej.fault, headers=rej.headers)

    def _route(self, request: SimRequest):
        allowed = False
        for route in ROUTES:
            match = route.regex.match(request.path)
            if not match:
                continue
            if route.method != request.method:
                allowed = True
                continue
            return route, match.groupdict(), True
        return None, {}, allowed

    def _authenticate(self, request: SimRequest, route: Route) -> Ctx:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        info = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if info is None or info["expires_at"] <= self.clock.now():
            raise Reject(
                401,
                "Authorization has been denied for this request.",
                headers=[("WWW-Authenticate", 'Bearer error="invalid_token"')],
            )
        tenant = self.tenants.get(info["tenant_id"])
        if tenant is None or not tenant["licensed"]:
            raise Reject(401, "No license for this company.", fault=FAULT_NO_LICENCE)
        company = request.headers.get("ipp-company-id")
        if company and company not in tenant["companies"]:
            raise Reject(
                401,
                f"The user is not authorised for company '{company}' in this tenant.",
                fault=FAULT_COMPANY,
            )
        if SCOPE_PREFIX + route.scope not in info["scopes"]:
            raise Reject(403, f"The access token lacks the scope {SCOPE_PREFIX + route.scope}.")
        host = request.headers.get("host") or request.environ.get("SERVER_NAME", "127.0.0.1")
        scheme = request.environ.get("wsgi.url_scheme", "http")
        return Ctx(info["tenant_id"], info["client_id"], info["scopes"], f"{scheme}://{host}")

    def _count(self, ctx: Ctx) -> tuple[list[tuple[str, str]], int | None]:
        now = self.clock.now()
        window = int(now // 3600)
        reset = max(1, int(math.ceil((window + 1) * 3600 - now)))
        entry = self.quota.setdefault((ctx.tenant, ctx.client_id), [window, 0])
        if entry[0] != window:
            entry[0], entry[1] = window, 0
        limit = self.quota_per_hour
        over = None
        if entry[1] >= limit:
            over = reset
        else:
            entry[1] += 1
        headers = [
            ("X-RateLimit-Limit", str(limit)),
            ("X-RateLimit-Remaining", str(max(0, limit - entry[1]))),
            ("X-RateLimit-Reset", str(reset)),
            ("X-RateLimit-Policy", f"{limit};w=3600"),
        ]
        return headers, over

    def _body(self, request: SimRequest, route: Route) -> Any:
        if request.method not in ("POST", "PUT") or not route.validate:
            return None
        if not request.body:
            body: Any = {}
        else:
            try:
                body = request.json()
            except (ValueError, UnicodeDecodeError) as exc:
                raise Reject(400, f"The request body is not valid JSON: {exc}") from None
        try:
            errors = self.spec.request_errors(route.method, route.template, body)
        except KeyError:
            errors = []
        if errors:
            raise Reject(400, "The request is invalid: " + "; ".join(errors[:5]))
        return unwrap(drop_nulls(body)) if isinstance(body, dict) else body

    # -- token endpoint -----------------------------------------------------------------------
    def _token_endpoint(self, request: SimRequest) -> SimResponse:
        form = {k: v[0] for k, v in parse_qs(request.body.decode("utf-8", "replace")).items()}
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            try:
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                form.setdefault("client_id", user)
                form.setdefault("client_secret", password)
            except (ValueError, UnicodeDecodeError):
                return self._oauth_error(400, "invalid_client")
        if form.get("grant_type") != "client_credentials":
            return self._oauth_error(400, "unsupported_grant_type")
        client = self.clients.get(form.get("client_id", ""))
        if client is None or not secrets.compare_digest(
            client["client_secret"], form.get("client_secret", "")
        ):
            return self._oauth_error(400, "invalid_client")
        tenant_id = form.get("tenant_id")
        if not tenant_id:
            return self._oauth_error(400, "invalid_request", "tenant_id is missing")
        requested = form.get("scope", "").split()
        allowed = set(client["scopes"])
        if requested and not set(requested) <= allowed:
            return self._oauth_error(400, "invalid_scope")
        granted = requested or sorted(allowed)
        token = "sim_" + secrets.token_urlsafe(32)
        self.tokens[token] = {
            "client_id": form["client_id"],
            "tenant_id": tenant_id,
            "scopes": set(granted),
            "expires_at": self.clock.now() + self.token_lifetime,
        }
        body = {
            "access_token": token,
            "expires_in": int(self.token_lifetime),
            "token_type": "Bearer",
            "scope": " ".join(granted),
        }
        return json_response(200, body, [("Cache-Control", "no-store")])

    @staticmethod
    def _oauth_error(status: int, code: str, description: str | None = None) -> SimResponse:
        body = {"error": code}
        if description:
            body["error_description"] = description
        return json_response(status, body, [("Cache-Control", "no-store")])

    # -- generic list/paging ------------------------------------------------------------------
    def _q(self, request: SimRequest, name: str) -> str | None:
        for key, values in request.query.items():
            if key.lower() == name.lower() and values:
                return values[0]
        return None

    def _qlist(self, request: SimRequest, name: str) -> list[str]:
        for key, values in request.query.items():
            if key.lower() in (name.lower(), name.lower() + "[]"):
                return [v for value in values for v in value.split(",") if v]
        return []

    def _int_param(self, request: SimRequest, name: str, default: int) -> int:
        raw = self._q(request, name)
        if raw in (None, ""):
            return default
        try:
            value = int(raw)
        except ValueError:
            raise Reject(400, f"{name}: '{raw}' is not a valid integer.") from None
        if value < 1:
            raise Reject(400, f"{name}: must be 1 or greater (got {value}).")
        return value

    def _modified_filter(self, request: SimRequest, records: list[dict], prefix="lastModified"):
        value = self._q(request, f"{prefix}DateTime")
        condition = self._q(request, f"{prefix}DateTimeCondition")
        if value is None and condition is None:
            return records
        if value is None or condition is None:
            raise Reject(
                400,
                f"{prefix}DateTime and {prefix}DateTimeCondition are mutually inclusive: "
                "send both or neither.",
            )
        compare = CONDITIONS.get(condition.strip())
        if compare is None:
            raise Reject(
                400, f"{prefix}DateTimeCondition: '{condition}' is not one of >, <, >=, <=."
            )
        try:
            since = _parse_filter_time(value)
        except ValueError:
            raise Reject(400, f"{prefix}DateTime: '{value}' is not an accepted format.") from None
        field = f"{prefix}DateTime"
        return [
            r
            for r in records
            if r.get(field) and compare(dt.datetime.fromisoformat(r[field]), since)
        ]

    def _page(self, request: SimRequest, records: list[dict]) -> SimResponse:
        page_number = self._int_param(request, "pageNumber", 1)
        page_size = min(
            self._int_param(request, "pageSize", self.max_page_size), self.max_page_size
        )
        chunk = records[(page_number - 1) * page_size : page_number * page_size]
        meta = {"totalCount": len(records), "maxPageSize": self.max_page_size}
        return json_response(200, [{**_clean(r), "metadata": dict(meta)} for r in chunk])

    @staticmethod
    def _plain_list(records) -> SimResponse:
        return json_response(200, [_clean(r) for r in records])

    @staticmethod
    def _one(record: dict | None, what: str, key: str) -> SimResponse:
        if record is None:
            raise Reject(404, f"{what} '{key}' not found.")
        return json_response(200, _clean(record))

    def _created(self, ctx: Ctx, path: str) -> SimResponse:
        return SimResponse(201, b"", [("Location", ctx.base_url + path)])

    @staticmethod
    def _no_content() -> SimResponse:
        return SimResponse(204, b"", [])

    @staticmethod
    def _action_done(extra: dict | None = None) -> SimResponse:
        return json_response(
            200, {**(extra or {}), "actionId": str(uuid.uuid4()), "actionResult": "Done"}
        )

    # -- reference checks ---------------------------------------------------------------------
    def _need(self, table: dict, value: Any, field: str, what: str) -> dict:
        record = table.get(str(value))
        if record is None:
            raise Reject(400, f"{field}: {what} '{value}' cannot be found in the system.")
        return record

    def _check_currency(self, value: Any, field: str) -> str:
        if value not in self.currencies:
            raise Reject(400, f"{field}: Currency '{value}' cannot be found in the system.")
        return value

    def _check_unit(self, value: Any, field: str) -> str:
        if self.units and value not in self.units:
            raise Reject(400, f"{field}: Unit of measure '{value}' cannot be found in the system.")
        return value

    def _branch_ref(self, value: Any, field: str) -> dict:
        number = value or self.defaults.get("branch")
        branch = self._need(self.branches, number, field, "Branch")
        return {"number": branch["number"], "name": branch.get("name")}

    def _warehouse_ref(self, value: Any, field: str) -> dict:
        warehouse = self._need(self.warehouses, value, field, "Warehouse")
        return {"id": warehouse["warehouseID"], "description": warehouse.get("description")}

    def _vat_category(self, value: Any, field: str) -> dict:
        category = self._need(self.vat_categories, value, field, "VAT category")
        return category

    def _vat_rate(self, category_id: str | None) -> tuple[Decimal, str | None]:
        """(rate in %, VAT id) of a VAT category; no category means no VAT."""
        if not category_id:
            return Decimal(0), None
        category = self.vat_categories[category_id]
        rate = Decimal(0)
        vat_id = None
        for line in category.get("vatCategoryLines") or []:
            vat = self.vats.get(line.get("vatId"))
            if vat is None:
                continue
            vat_id = vat_id or vat["vatId"]
            schedules = vat.get("schedules") or []
            if schedules:
                rate += _dec(schedules[-1].get("vatRate"))
        return rate, vat_id

    def _address(self, plain: dict | None, field: str, current: dict | None = None) -> dict:
        out = dict(current or {})
        if not plain:
            return out
        for key in ("addressLine1", "addressLine2", "addressLine3", "postalCode", "city"):
            if key in plain:
                out[key] = plain[key]
        if "overrideAddress" in plain:
            out["overrideAddress"] = plain["overrideAddress"]
        if plain.get("countryId") is not None:
            code = str(plain["countryId"]).upper()
            if code not in self.countries:
                raise Reject(
                    400, f"{field}.countryId: Country '{code}' cannot be found in the system."
                )
            out["country"] = {"id": code, "name": self.countries[code]}
        if plain.get("county") is not None:
            out["county"] = {"id": plain["county"], "name": plain["county"]}
        out.setdefault("addressId", int(self._next("address")))
        return out

    def _contact(self, plain: dict | None, current: dict | None = None) -> dict:
        out = dict(current or {})
        if not plain:
            return out
        for key in (
            "name",
            "attention",
            "email",
            "web",
            "phone1",
            "phone2",
            "fax",
            "overrideContact",
        ):
            if key in plain:
                out[key] = plain[key]
        out.setdefault("contactId", int(self._next("contact")))
        return out

    def _attribute_lines(self, lines: list[dict] | None, field: str) -> list[dict]:
        out = []
        for index, line in enumerate(lines or []):
            attr_id = line.get("attributeId")
            attribute = self._need(
                self.attributes, attr_id, f"{field}[{index}].attributeId", "Attribute"
            )
            value = line.get("attributeValue")
            details = [d for d in attribute.get("details") or [] if not d.get("disabled")]
            if attribute.get("controlType") in ("Combo", "MultiSelectCombo") and details:
                allowed = {d["valueId"] for d in details}
                values = str(value or "").split(",") if value else []
                bad = [v for v in values if v not in allowed]
                if bad:
                    raise Reject(
                        400,
                        f"{field}[{index}].attributeValue: '{bad[0]}' is not a value of "
                        f"attribute '{attr_id}' (allowed: {', '.join(sorted(allowed))}).",
                    )
            out.append({"id": attr_id, "value": value, "description": attribute.get("description")})
        return out

    # ========================================================================================
    # Customers
    # ========================================================================================
    CUSTOMER_SCALARS = (
        "name",
        "status",
        "accountReference",
        "currencyId",
        "creditVerification",
        "creditLimit",
        "creditDaysPastDue",
        "printInvoices",
        "acceptAutoInvoices",
        "sendInvoicesByEmail",
        "sendDunningLettersViaEMail",
        "printDunningLetters",
        "printStatements",
        "sendStatementsByEmail",
        "printMultiCurrencyStatements",
        "statementType",
        "vatRegistrationId",
        "corporateId",
        "gln",
        "invoiceToDefaultLocation",
        "numberOfEmployees",
        "excludeDebtCollection",
    )

    def _apply_customer(self, record: dict, p: dict, creating: bool) -> dict:
        for key in self.CUSTOMER_SCALARS:
            if key in p:
                record[key] = p[key]
        if creating:
            if not record.get("name"):
                raise Reject(400, "name: 'Customer name' cannot be empty.")
            record.setdefault("status", "Active")
            record.setdefault("currencyId", self.defaults.get("baseCurrency", "EUR"))
            record.setdefault("creditVerification", "Disabled")
            record.setdefault("statementType", "OpenItem")
        if "currencyId" in p:
            self._check_currency(p["currencyId"], "currencyId")
        class_id = p.get("customerClassId") or (
            self.defaults.get("customerClass") if creating else None
        )
        if class_id:
            cls = self._need(self.customer_classes, class_id, "customerClassId", "Customer class")
            record["customerClass"] = {"id": cls["id"], "description": cls.get("description")}
            if creating and cls.get("taxZoneId") and "vatZoneId" not in p:
                zone = self.vat_zones.get(cls["taxZoneId"], {"id": cls["taxZoneId"]})
                record["vatZone"] = {"id": zone["id"], "description": zone.get("description")}
            if creating and cls.get("paymentMethodId") and "defaultPaymentMethod" not in p:
                record["defaultPaymentMethodId"] = cls["paymentMethodId"]
                record["paymentMethods"] = [
                    {"paymentMethodId": cls["paymentMethodId"], "isDefault": True}
                ]
        if p.get("creditTermsId"):
            terms = self._need(self.credit_terms, p["creditTermsId"], "creditTermsId", "Terms")
            record["creditTerms"] = {"id": terms["termsId"], "description": terms["description"]}
        if p.get("priceClassId"):
            price = self._need(self.price_classes, p["priceClassId"], "priceClassId", "Price class")
            record["priceClass"] = {"id": price["id"], "description": price.get("description")}
        if p.get("vatZoneId"):
            zone = self._need(self.vat_zones, p["vatZoneId"], "vatZoneId", "VAT zone")
            record["vatZone"] = {"id": zone["id"], "description": zone.get("description")}
        method = (p.get("defaultPaymentMethod") or {}).get("paymentMethodId")
        if method:
            self._need(
                self.payment_methods,
                method,
                "defaultPaymentMethod.paymentMethodId",
                "Payment method",
            )
            record["defaultPaymentMethodId"] = method
            others = [m for m in record.get("paymentMethods", []) if m["paymentMethodId"] != method]
            record["paymentMethods"] = [
                {"paymentMethodId": method, "isDefault": True},
                *({**m, "isDefault": False} for m in others),
            ]
        for kind in ("main", "invoice", "delivery"):
            if f"{kind}Address" in p:
                record[f"{kind}Address"] = self._address(
                    p[f"{kind}Address"], f"{kind}Address", record.get(f"{kind}Address")
                )
            if f"{kind}Contact" in p:
                record[f"{kind}Contact"] = self._contact(
                    p[f"{kind}Contact"], record.get(f"{kind}Contact")
                )
        if creating:
            for kind in ("invoice", "delivery"):
                record.setdefault(f"{kind}Address", dict(record.get("mainAddress") or {}))
                record.setdefault(f"{kind}Contact", dict(record.get("mainContact") or {}))
        if "attributeLines" in p:
            record["attributes"] = self._attribute_lines(p["attributeLines"], "attributeLines")
        stamp = self._stamp()
        if creating:
            record["createdDateTime"] = stamp
        record["lastModifiedDateTime"] = stamp
        return record

    def _insert_customer(self, p: dict) -> dict:
        number = str(p.get("number") or self._next("customer", start=10001, width=5))
        if number in self.customers:
            raise Reject(400, f"number: A customer with the ID '{number}' already exists.")
        record: dict[str, Any] = {
            "internalId": int(self._next("customer_internal")),
            "number": number,
        }
        self._apply_customer(record, p, creating=True)
        self.customers[number] = record
        return record

    def h_list_customers(self, req, ctx, body):
        records = list(self.customers.values())
        for param, getter in (
            ("name", lambda c: c.get("name")),
            ("status", lambda c: c.get("status")),
            ("corporateId", lambda c: c.get("corporateId")),
            ("vatRegistrationId", lambda c: c.get("vatRegistrationId")),
            ("phone", lambda c: (c.get("mainContact") or {}).get("phone1")),
        ):
            value = self._q(req, param)
            if value is not None:
                records = [c for c in records if getter(c) == value]
        email = self._q(req, "email")
        if email is not None:
            records = [
                c
                for c in records
                if ((c.get("mainContact") or {}).get("email") or "").lower() == email.lower()
            ]
        records = self._modified_filter(req, records)
        records = self._modified_filter(req, records, prefix="created")
        return self._page(req, records)

    def h_create_customer(self, req, ctx, body):
        record = self._insert_customer(body)
        return self._created(ctx, f"/v1/customer/{record['number']}")

    def h_get_customer(self, req, ctx, body, customerCd):
        return self._one(self.customers.get(customerCd), "Customer", customerCd)

    def h_update_customer(self, req, ctx, body, customerCd):
        record = self.customers.get(customerCd)
        if record is None:
            raise Reject(404, f"Customer '{customerCd}' not found.")
        updated = copy.deepcopy(record)
        self._apply_customer(updated, body, creating=False)
        self.customers[customerCd] = updated
        return self._no_content()

    def h_list_customer_classes(self, req, ctx, body):
        return self._plain_list(self.customer_classes.values())

    def h_get_customer_class(self, req, ctx, body, customerClassId):
        return self._one(
            self.customer_classes.get(customerClassId), "Customer class", customerClassId
        )

    # ========================================================================================
    # Inventory, attributes, classes
    # ========================================================================================
    def _apply_inventory(self, record: dict, p: dict, creating: bool) -> dict:
        for key in ("status", "description", "body", "note", "kitItem"):
            if key in p:
                record[key] = p[key]
        if "defaultPrice" in p:
            record["defaultPrice"] = p["defaultPrice"]
        class_id = p.get("itemClass") or (self.defaults.get("itemClass") if creating else None)
        if class_id:
            cls = self._need(self.item_classes, class_id, "itemClass", "Item class")
            record["itemClass"] = {
                "id": cls["id"],
                "description": cls.get("description"),
                "type": cls.get("type"),
            }
            if creating and "type" not in p:
                record["type"] = cls.get("type")
        if "type" in p:
            record["type"] = p["type"]
        if p.get("vatCode"):
            cat = self._vat_category(p["vatCode"], "vatCode")
            record["vatCode"] = {"id": cat["vatCategoryId"], "description": cat.get("description")}
        if p.get("postingClass"):
            record["postingClass"] = {"id": p["postingClass"]}
        for key in ("baseUnit", "salesUnit", "purchaseUnit"):
            if p.get(key):
                record[key] = self._check_unit(p[key], key)
        for key in ("defaultWarehouse", "defaultIssueFrom", "defaultReceiptTo"):
            if p.get(key):
                record[key] = self._warehouse_ref(p[key], key)
        if "packaging" in p and isinstance(p["packaging"], dict):
            record["packaging"] = {**(record.get("packaging") or {}), **p["packaging"]}
        if "attributeLines" in p:
            record["attributes"] = self._attribute_lines(p["attributeLines"], "attributeLines")
        if creating:
            if not record.get("description"):
                raise Reject(400, "description: 'Description' cannot be empty.")
            record.setdefault("status", "Active")
            unit = self.defaults.get("unit", "STK")
            record.setdefault("baseUnit", unit)
            record.setdefault("salesUnit", record["baseUnit"])
            record.setdefault("purchaseUnit", record["baseUnit"])
            record.setdefault("defaultPrice", 0.0)
            record.setdefault("crossReferences", [])
            record.setdefault("attachments", [])
            record.setdefault("attributes", [])
            record.setdefault("salesCategories", [])
            if record.get("type") in STOCK_TYPES and "defaultWarehouse" not in record:
                default = self.defaults.get("warehouse")
                if default in self.warehouses:
                    record["defaultWarehouse"] = self._warehouse_ref(default, "defaultWarehouse")
        record["stockItem"] = record.get("type") in STOCK_TYPES
        self._touch_inventory(record)
        return record

    def _touch_inventory(self, record: dict) -> None:
        record["lastModifiedDateTime"] = self._stamp()
        record["timestamp"] = self._next("inventory_ts", width=1)

    def _insert_inventory(self, p: dict) -> dict:
        number = p.get("inventoryNumber")
        if not number:
            raise Reject(400, "inventoryNumber: 'Item ID' cannot be empty.")
        if number in self.inventory:
            raise Reject(400, f"inventoryNumber: An item with the ID '{number}' already exists.")
        record: dict[str, Any] = {
            "inventoryId": int(self._next("inventory_internal")),
            "inventoryNumber": number,
        }
        self._apply_inventory(record, p, creating=True)
        self.inventory[number] = record
        return record

    def _item(self, number: str) -> dict:
        record = self.inventory.get(number)
        if record is None:
            raise Reject(404, f"Inventory item '{number}' not found.")
        return record

    def h_list_inventory(self, req, ctx, body):
        records = list(self.inventory.values())
        for param, field in (
            ("inventoryNumber", "inventoryNumber"),
            ("status", "status"),
            ("description", "description"),
        ):
            value = self._q(req, param)
            if value is not None:
                records = [r for r in records if r.get(field) == value]
        types = self._qlist(req, "inventoryTypes")
        if types:
            records = [r for r in records if r.get("type") in types]
        category = self._q(req, "salesCategory")
        if category is not None:
            records = [
                r
                for r in records
                if any(str(c.get("categoryId")) == category for c in r.get("salesCategories", []))
            ]
        alternate = self._q(req, "alternateID")
        if alternate is not None:
            records = [
                r
                for r in records
                if any(x.get("alternateID") == alternate for x in r.get("crossReferences", []))
            ]
        records = self._modified_filter(req, records)
        return self._page(req, records)

    def h_create_inventory(self, req, ctx, body):
        record = self._insert_inventory(body)
        return self._created(ctx, f"/v1/inventory/{record['inventoryNumber']}")

    def h_get_inventory(self, req, ctx, body, inventoryNumber):
        return self._one(self.inventory.get(inventoryNumber), "Inventory item", inventoryNumber)

    def h_update_inventory(self, req, ctx, body, inventoryNumber):
        record = copy.deepcopy(self._item(inventoryNumber))
        body = dict(body)
        if body.get("inventoryNumber") not in (None, inventoryNumber):
            raise Reject(400, "inventoryNumber: the item ID cannot be changed with PUT.")
        body.pop("inventoryNumber", None)
        self._apply_inventory(record, body, creating=False)
        self.inventory[inventoryNumber] = record
        return self._no_content()

    def h_list_xrefs(self, req, ctx, body, inventoryNumber):
        return self._plain_list(self._item(inventoryNumber).get("crossReferences", []))

    def h_create_xref(self, req, ctx, body, inventoryNumber):
        item = self._item(inventoryNumber)
        kind = body.get("alternateType")
        alternate = body.get("alternateID")
        if not kind:
            raise Reject(400, "alternateType: 'Alternate type' cannot be empty.")
        if not alternate:
            raise Reject(400, "alternateID: 'Alternate ID' cannot be empty.")
        refs = item.setdefault("crossReferences", [])
        if any(r["alternateType"] == kind and r["alternateID"] == alternate for r in refs):
            raise Reject(
                400,
                f"alternateID: the cross-reference {kind} '{alternate}' already exists for "
                f"item '{inventoryNumber}'.",
            )
        ref: dict[str, Any] = {"alternateType": kind, "alternateID": alternate}
        if body.get("description") is not None:
            ref["description"] = body["description"]
        if body.get("uom"):
            ref["uom"] = self._check_unit(body["uom"], "uom")
        if body.get("bAccount"):
            ref["bAccount"] = {"number": body["bAccount"]}
        self._touch_inventory(item)
        ref["timestamp"] = item["timestamp"]
        refs.append(ref)
        return SimResponse(200, b"", [])

    def h_create_attachment(self, req, ctx, body, inventoryNumber):
        item = self._item(inventoryNumber)
        content_type = req.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            raise Reject(400, "The request must be multipart/form-data with a file.")
        message = BytesParser(policy=HTTP).parsebytes(
            b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + req.body
        )
        files = (
            [part for part in message.iter_parts() if part.get_filename()]
            if message.is_multipart()
            else []
        )
        if not files:
            raise Reject(400, "No file found in the request.")
        part = files[0]
        name = part.get_filename()
        data = part.get_payload(decode=True) or b""
        attachments = item.setdefault("attachments", [])
        existing = next((a for a in attachments if a["name"] == name), None)
        if existing is not None:
            existing["revision"] += 1  # "If the file already exists, a new revision is created."
            attachment = existing
        else:
            attachment = {"name": name, "id": str(uuid.uuid4()), "revision": 1}
            attachments.append(attachment)
        self.attachments[attachment["id"]] = {
            **attachment,
            "size": len(data),
            "contentType": part.get_content_type(),
        }
        self._touch_inventory(item)
        return self._created(ctx, f"/v1/attachment/{attachment['id']}")

    def h_list_attributes(self, req, ctx, body):
        records = list(self.attributes.values())
        for param in ("attributeID", "controlType"):
            value = self._q(req, param)
            if value is not None:
                records = [r for r in records if r.get(param) == value]
        records = self._modified_filter(req, records)
        return self._page(req, records)

    def h_create_attribute(self, req, ctx, body):
        attr_id = body.get("attributeID")
        if not attr_id:
            raise Reject(400, "attributeID: 'Attribute ID' cannot be empty.")
        if attr_id in self.attributes:
            raise Reject(400, f"attributeID: the attribute '{attr_id}' already exists.")
        stamp = self._stamp()
        record = {
            "attributeID": attr_id,
            "description": body.get("description") or attr_id,
            "controlType": body.get("controlType") or "Text",
            "internal": bool(body.get("internal", False)),
            "entryMask": body.get("entryMask"),
            "regExp": body.get("regExp"),
            "details": [
                {
                    "valueId": d.get("valueId"),
                    "description": d.get("description"),
                    "sortOrder": d.get("sortOrder", index + 1),
                    "disabled": bool(d.get("disabled", False)),
                }
                for index, d in enumerate(body.get("details") or [])
                if d.get("operation", "Insert") != "Delete"
            ],
            "createdDateTime": stamp,
            "lastModifiedDateTime": stamp,
        }
        self.attributes[attr_id] = record
        return self._created(ctx, f"/v1/attribute/{attr_id}")

    def h_get_attribute(self, req, ctx, body, attributeId):
        return self._one(self.attributes.get(attributeId), "Attribute", attributeId)

    def h_list_item_classes(self, req, ctx, body):
        return self._plain_list(self.item_classes.values())

    def h_get_item_class(self, req, ctx, body, itemClassNumber):
        return self._one(self.item_classes.get(itemClassNumber), "Item class", itemClassNumber)

    def h_list_sales_categories(self, req, ctx, body):
        return self._plain_list(self.sales_categories)

    # ========================================================================================
    # Stock
    # ========================================================================================
    def _movements(self, number: str) -> dict[str, dict[str, Decimal]]:
        per: dict[str, dict[str, Decimal]] = {}

        def bucket(warehouse: str) -> dict[str, Decimal]:
            return per.setdefault(
                warehouse, {"onHand": Decimal(0), "soBooked": Decimal(0), "soShipped": Decimal(0)}
            )

        for adjustment in self.adjustments.values():
            if adjustment.get("status") != "Released":
                continue
            for line in adjustment.get("adjusmentLines", []):
                if line["inventoryItem"]["number"] == number:
                    bucket(line["warehouse"]["id"])["onHand"] += _dec(line.get("quantity"))
        for shipment in self.shipments.values():
            for line in shipment.get("shipmentDetailLines", []):
                if line.get("inventoryNumber") != number:
                    continue
                qty = _dec(line.get("shippedQty"))
                warehouse = line["warehouse"]["id"]
                if shipment["status"] == "Confirmed":
                    bucket(warehouse)["onHand"] -= qty
                elif shipment["status"] in ("Open", "Hold"):
                    bucket(warehouse)["soShipped"] += qty
        for order in self.orders.values():
            if order.get("status") not in OPEN_ORDER_STATUSES:
                continue
            for line in order.get("lines", []):
                if (line.get("inventory") or {}).get("number") != number:
                    continue
                booked = _dec(line.get("openQty")) - _dec(line.get("qtyOnShipments"))
                if booked > 0:
                    bucket(line["warehouse"]["id"])["soBooked"] += booked
        return per

    def h_inventory_summary(self, req, ctx, body, inventoryNumber):
        item = self._item(inventoryNumber)
        if not item.get("stockItem"):
            return json_response(200, [])
        per = self._movements(inventoryNumber)
        if not per:
            default = (item.get("defaultWarehouse") or {}).get("id") or self.defaults.get(
                "warehouse"
            )
            if default:
                per[default] = {
                    "onHand": Decimal(0),
                    "soBooked": Decimal(0),
                    "soShipped": Decimal(0),
                }
        wanted = self._q(req, "warehouse")
        rows = []
        for warehouse_id in sorted(per):
            if wanted and warehouse_id != wanted:
                continue
            q = per[warehouse_id]
            warehouse = self.warehouses.get(warehouse_id, {})
            rows.append(
                {
                    "inventory": {
                        "number": item["inventoryNumber"],
                        "description": item.get("description"),
                    },
                    "warehouse": {"id": warehouse_id, "description": warehouse.get("description")},
                    "onHand": _num(q["onHand"]),
                    "soBooked": _num(q["soBooked"]),
                    "soShipped": _num(q["soShipped"]),
                    "soAllocated": 0.0,
                    "available": _num(q["onHand"] - q["soBooked"] - q["soShipped"]),
                    "availableForShipment": _num(q["onHand"] - q["soShipped"]),
                    "notAvailable": 0.0,
                    "baseUnit": item.get("baseUnit"),
                }
            )
        meta = {"totalCount": len(rows), "maxPageSize": self.max_page_size}
        return json_response(200, [{**r, "metadata": dict(meta)} for r in _clean(rows)])

    def h_list_adjustments(self, req, ctx, body):
        records = list(self.adjustments.values())
        status = self._q(req, "status")
        if status is not None:
            records = [r for r in records if r.get("status") == status]
        records = self._modified_filter(req, records)
        return self._page(req, records)

    def h_create_adjustment(self, req, ctx, body):
        lines = []
        for index, line in enumerate(body.get("adjustmentLines") or []):
            field = f"adjustmentLines[{index}]"
            if line.get("operation", "Insert") != "Insert":
                raise Reject(400, f"{field}.operation: only Insert is possible on a new document.")
            number = line.get("inventoryNumber")
            item = self._need(self.inventory, number, f"{field}.inventoryNumber", "Inventory item")
            if not item.get("stockItem"):
                raise Reject(400, f"{field}.inventoryNumber: Item '{number}' is not a stock item.")
            warehouse = (
                line.get("warehouseId")
                or (item.get("defaultWarehouse") or {}).get("id")
                or self.defaults.get("warehouse")
            )
            if line.get("quantity") is None:
                raise Reject(400, f"{field}.quantity: 'Quantity' cannot be empty.")
            quantity = _dec(line["quantity"])
            unit_cost = _dec(line.get("unitCost"))
            record_line = {
                "lineNumber": line.get("lineNumber") or index + 1,
                "inventoryItem": {"number": number, "description": item.get("description")},
                "warehouse": self._warehouse_ref(warehouse, f"{field}.warehouseId"),
                "quantity": _num(quantity),
                "uom": self._check_unit(line.get("uom") or item.get("baseUnit"), f"{field}.uom"),
                "unitCost": _num(unit_cost),
                "extCost": _num(
                    _dec(line["extCost"])
                    if line.get("extCost") is not None
                    else _money(quantity * unit_cost)
                ),
                "description": line.get("description"),
            }
            if line.get("locationId"):
                record_line["location"] = {"id": line["locationId"]}
            if line.get("reasonCode"):
                record_line["reasonCode"] = {"id": line["reasonCode"]}
            if line.get("branchNumber"):
                record_line["branchNumber"] = self._branch_ref(
                    line["branchNumber"], f"{field}.branchNumber"
                )
            lines.append(record_line)
        if not lines:
            raise Reject(400, "adjustmentLines: the document has no lines.")
        reference = body.get("referenceNumber") or self._next("adjustment")
        if reference in self.adjustments:
            raise Reject(400, f"referenceNumber: the document '{reference}' already exists.")
        hold = bool(body.get("hold", False))
        date = body.get("date") or self._today()
        stamp = self._stamp()
        self.adjustments[reference] = {
            "referenceNumber": reference,
            "status": "Hold" if hold else "Balanced",
            "hold": hold,
            "date": date,
            "postPeriod": body.get("postPeriod") or _period(date),
            "externalReference": body.get("externalReference"),
            "description": body.get("description"),
            "totalQuantity": _num(sum(_dec(x["quantity"]) for x in lines)),
            "controlQuantity": body.get("controlQuantity"),
            "totalCost": _num(sum(_dec(x["extCost"]) for x in lines)),
            "controlCost": body.get("controlCost"),
            "branchNumber": self._branch_ref(body.get("branchNumber"), "branchNumber"),
            "adjusmentLines": lines,  # sic: the spec's InventoryAdjustmentDto spells it so
            "lastModifiedDateTime": stamp,
            "timestamp": self._next("adjustment_ts", width=1),
        }
        return self._created(ctx, f"/v1/inventoryadjustment/{reference}")

    def h_get_adjustment(self, req, ctx, body, inventoryAdjustmentNumber):
        return self._one(
            self.adjustments.get(inventoryAdjustmentNumber),
            "Inventory adjustment",
            inventoryAdjustmentNumber,
        )

    def h_release_adjustment(self, req, ctx, body, adjRefNumber):
        record = self.adjustments.get(adjRefNumber)
        if record is None:
            raise Reject(404, f"Inventory adjustment '{adjRefNumber}' not found.")
        if record["status"] == "Released":
            raise Reject(400, f"The document '{adjRefNumber}' is already released.")
        if record["status"] == "Hold":
            raise Reject(400, f"The document '{adjRefNumber}' is on hold and cannot be released.")
        record["status"] = "Released"
        record["lastModifiedDateTime"] = self._stamp()
        return self._action_done()

    # ========================================================================================
    # Sales orders and shipments
    # ========================================================================================
    def _order_line(self, line: dict, index: int, order: dict, field: str) -> dict:
        if line.get("operation", "Insert") != "Insert":
            raise Reject(400, f"{field}.operation: only Insert is possible on a new order.")
        number = line.get("inventoryNumber")
        item = self._need(self.inventory, number, f"{field}.inventoryNumber", "Inventory item")
        if item.get("status") in ("Inactive", "NoSales", "MarkedForDeletion"):
            raise Reject(
                400, f"{field}.inventoryNumber: Item '{number}' cannot be sold ({item['status']})."
            )
        warehouse = (
            line.get("warehouse")
            or (order.get("preferredWarehouse") or {}).get("id")
            or (item.get("defaultWarehouse") or {}).get("id")
            or self.defaults.get("warehouse")
        )
        quantity = _dec(line.get("quantity"), "1")
        price = _dec(
            line.get("unitPrice") if line.get("unitPrice") is not None else item.get("defaultPrice")
        )
        gross = _money(quantity * price)
        if line.get("discountAmount") is not None:
            discount = _money(_dec(line["discountAmount"]))
        else:
            discount = _money(gross * _dec(line.get("discountPercent")) / 100)
        category = line.get("taxCategory") or (item.get("vatCode") or {}).get("id")
        if category:
            self._vat_category(category, f"{field}.taxCategory")
        record = {
            "lineNbr": line.get("lineNbr") or index + 1,
            "sortOrder": index + 1,
            "inventory": {"number": number, "description": item.get("description")},
            "warehouse": self._warehouse_ref(warehouse, f"{field}.warehouse"),
            "uom": self._check_unit(line.get("uom") or item.get("salesUnit"), f"{field}.uom"),
            "quantity": _num(quantity),
            "qtyOnShipments": 0.0,
            "openQty": _num(quantity),
            "unitPrice": _num(price),
            "unitPriceInBaseCurrency": _num(price),
            "discountPercent": _num(_dec(line.get("discountPercent"))),
            "discountAmount": _num(discount),
            "manualDiscount": bool(line.get("manualDiscount", False)),
            "extPrice": _num(gross - discount),
            "unbilledAmount": _num(gross - discount),
            "lineDescription": line.get("lineDescription") or item.get("description"),
            "taxCategory": category,
            "operation": "Issue",
            "requestedOn": line.get("requestedOn") or order.get("requestOn"),
            "shipOn": line.get("shipOn") or order.get("requestOn"),
            "note": line.get("note"),
            "alternateID": line.get("alternateID"),
        }
        if line.get("branchNumber"):
            record["branchNumber"] = self._branch_ref(line["branchNumber"], f"{field}.branchNumber")
        return record

    def h_create_order(self, req, ctx, body):
        order_type = body.get("orderType")
        if self.order_types and order_type not in self.order_types:
            raise Reject(
                400, f"orderType: Order type '{order_type}' cannot be found in the system."
            )
        customer_id = body.get("customer")
        if not customer_id:
            raise Reject(400, "customer: 'Customer' cannot be empty.")
        customer = self._need(self.customers, customer_id, "customer", "Customer")
        number = body.get("orderNumber") or self._next("order")
        if (order_type, number) in self.orders:
            raise Reject(400, f"orderNumber: the order {order_type} '{number}' already exists.")
        hold = bool(body.get("hold", False))
        date = body.get("date") or self._today()
        order: dict[str, Any] = {
            "orderType": order_type,
            "orderNo": number,
            "status": "Hold" if hold else "Open",
            "hold": hold,
            "date": date,
            "requestOn": body.get("requestOn") or date,
            "customerOrder": body.get("customerOrder"),
            "customerRefNo": body.get("customerRefNo"),
            "customer": {
                "internalId": customer.get("internalId"),
                "number": customer["number"],
                "name": customer.get("name"),
            },
            "currency": self._check_currency(
                body.get("currency") or customer.get("currencyId"), "currency"
            ),
            "description": body.get("description"),
            "note": body.get("note"),
            "exchangeRate": 1.0,
            "branchNumber": self._branch_ref(body.get("branchNumber"), "branchNumber"),
            "shipComplete": body.get("shipComplete") or "BackOrderAllowed",
            "shipments": [],
        }
        terms = body.get("terms") or (customer.get("creditTerms") or {}).get("id")
        if terms:
            t = self._need(self.credit_terms, terms, "terms", "Terms")
            order["terms"] = {"id": t["termsId"], "description": t.get("description")}
        method = body.get("paymentMethod") or customer.get("defaultPaymentMethodId")
        if method:
            m = self._need(self.payment_methods, method, "paymentMethod", "Payment method")
            order["paymentMethod"] = {"id": m["paymentMethodID"], "description": m["description"]}
        if body.get("shipVia"):
            c = self._need(self.carriers, body["shipVia"], "shipVia", "Carrier")
            order["shipVia"] = {"id": c["carrierId"], "description": c.get("carrierDescription")}
        if body.get("preferredWarehouse"):
            order["preferredWarehouse"] = self._warehouse_ref(
                body["preferredWarehouse"], "preferredWarehouse"
            )
        order["soBillingAddress"] = self._address(
            body.get("soBillingAddress"), "soBillingAddress", customer.get("invoiceAddress")
        )
        order["soShippingAddress"] = self._address(
            body.get("soShippingAddress"), "soShippingAddress", customer.get("deliveryAddress")
        )
        order["soBillingContact"] = self._contact(
            body.get("soBillingContact"), customer.get("invoiceContact")
        )
        order["soShippingContact"] = self._contact(
            body.get("soShippingContact"), customer.get("deliveryContact")
        )
        lines = [
            self._order_line(line, index, order, f"lines[{index}]")
            for index, line in enumerate(body.get("lines") or [])
        ]
        order["lines"] = lines
        self._order_totals(order)
        order["lastModifiedDateTime"] = self._stamp()
        self.orders[(order_type, number)] = order
        return self._created(ctx, f"/v2/salesorder/{number}")

    def _order_totals(self, order: dict) -> None:
        net_by_category: dict[str | None, Decimal] = {}
        discount = Decimal(0)
        for line in order["lines"]:
            key = line.get("taxCategory")
            net_by_category[key] = net_by_category.get(key, Decimal(0)) + _dec(line["extPrice"])
            discount += _dec(line["discountAmount"])
        tax = taxable = exempt = Decimal(0)
        for category, net in net_by_category.items():
            rate, _ = self._vat_rate(category)
            if rate > 0:
                taxable += net
                tax += _money(net * rate / 100)
            else:
                exempt += net
        total = taxable + exempt + tax
        order.update(
            {
                "orderTotal": _num(total),
                "orderTotalInBaseCurrency": _num(total),
                "vatTaxableTotal": _num(taxable),
                "vatTaxableTotalInBaseCurrency": _num(taxable),
                "vatExemptTotal": _num(exempt),
                "vatExemptTotalInBaseCurrency": _num(exempt),
                "taxTotal": _num(tax),
                "taxTotalInBaseCurrency": _num(tax),
                "discountTotal": _num(discount),
                "discountTotalInBaseCurrency": _num(discount),
            }
        )

    def _find_order(self, number: str, order_type: str | None = None) -> dict:
        for (kind, nbr), order in self.orders.items():
            if nbr == number and (order_type is None or kind == order_type):
                return order
        raise Reject(404, f"Sales order '{number}' not found.")

    def _filter_orders(self, req, records: list[dict]) -> SimResponse:
        for param, field in (("orderType", "orderType"), ("status", "status")):
            value = self._q(req, param)
            if value is not None:
                records = [r for r in records if r.get(field) == value]
        greater = self._q(req, "greaterThanValue")
        if greater:
            records = [r for r in records if r["orderNo"] > greater]
        records = self._modified_filter(req, records)
        return self._page(req, records)

    def h_list_orders(self, req, ctx, body):
        return self._filter_orders(req, list(self.orders.values()))

    def h_list_customer_orders(self, req, ctx, body, customerCd):
        if customerCd not in self.customers:
            raise Reject(404, f"Customer '{customerCd}' not found.")
        records = [o for o in self.orders.values() if o["customer"]["number"] == customerCd]
        return self._filter_orders(req, records)

    def h_get_order(self, req, ctx, body, orderNbr, orderType=None):
        return json_response(200, _clean(self._find_order(orderNbr, orderType)))

    def _etag(self, shipment: dict) -> str:
        return f'"{shipment["_version"]}"'

    def _touch_shipment(self, shipment: dict) -> None:
        shipment["_version"] = shipment.get("_version", 0) + 1
        shipment["timeStamp"] = base64.b64encode(shipment["_version"].to_bytes(8, "big")).decode(
            "ascii"
        )
        shipment["lastModifiedDateTime"] = self._stamp()

    def h_create_shipment(self, req, ctx, body, saleOrderNumber):
        order = self._find_order(saleOrderNumber, body.get("orderType"))
        if order["status"] in ("Hold", "CreditHold", "PendingApproval"):
            raise Reject(400, f"The order '{saleOrderNumber}' is on hold and cannot be shipped.")
        if order["status"] not in OPEN_ORDER_STATUSES:
            raise Reject(
                400, f"The order '{saleOrderNumber}' has status {order['status']}: nothing to ship."
            )
        warehouse = self._warehouse_ref(body.get("shipmentWarehouse"), "shipmentWarehouse")
        try:
            date = _parse_date(body.get("shipmentDate")).isoformat() + "T00:00:00"
        except ValueError:
            raise Reject(400, "shipmentDate: not a valid date.") from None
        number = self._next("shipment")
        lines = []
        for line in order["lines"]:
            if line["warehouse"]["id"] != warehouse["id"]:
                continue
            remaining = _dec(line["openQty"]) - _dec(line["qtyOnShipments"])
            if remaining <= 0:
                continue
            lines.append(
                {
                    "lineNumber": len(lines) + 1,
                    "orderType": order["orderType"],
                    "orderNbr": order["orderNo"],
                    "orderLineNbr": line["lineNbr"],
                    "inventoryNumber": line["inventory"]["number"],
                    "warehouse": dict(warehouse),
                    "uom": line.get("uom"),
                    "shippedQty": _num(remaining),
                    "orderedQty": line["quantity"],
                    "openQty": _num(remaining),
                    "description": line.get("lineDescription"),
                }
            )
        if not lines:
            raise Reject(
                400,
                f"The order '{saleOrderNumber}' has no open lines to ship from warehouse "
                f"'{warehouse['id']}'.",
            )
        customer = order["customer"]
        shipment: dict[str, Any] = {
            "shipmentNumber": number,
            "shipmentType": "Issue",
            "status": "Open",
            "hold": False,
            "operation": "Receipt" if body.get("operation") == "R" else "Issue",
            "shipmentDate": date,
            "customer": dict(customer),
            "fromWarehouse": dict(warehouse),
            "currencyId": order.get("currency"),
            "shipVia": order.get("shipVia"),
            "deliveryAddress": order.get("soShippingAddress"),
            "deliveryContact": order.get("soShippingContact"),
            "shipmentDetailLines": lines,
            "shipmentOrderLines": [
                {
                    "orderType": order["orderType"],
                    "orderNbr": order["orderNo"],
                    "shippedQty": _num(sum(_dec(x["shippedQty"]) for x in lines)),
                }
            ],
            "shipmentPackageLines": [],
            "packages": 0,
        }
        self._shipment_totals(shipment)
        self._touch_shipment(shipment)
        self.shipments[number] = shipment
        self._sync_order_from_shipments(order)
        order["shipments"].append({"shipmentNo": number, "shipmentType": "Issue"})
        return self._action_done({"referenceNumber": number, "shipmentDto": _clean(shipment)})

    def _shipment_totals(self, shipment: dict) -> None:
        shipment["shippedQuantity"] = _num(
            sum(_dec(x["shippedQty"]) for x in shipment["shipmentDetailLines"])
        )
        packages = shipment["shipmentPackageLines"]
        shipment["packages"] = len(packages)
        shipment["packagesWeight"] = _num(sum(_dec(p.get("weight")) for p in packages))

    def _sync_order_from_shipments(self, order: dict) -> None:
        """Recompute an order's line quantities and status from its shipments."""
        on_open: dict[int, Decimal] = {}
        confirmed: dict[int, Decimal] = {}
        for shipment in self.shipments.values():
            for line in shipment["shipmentDetailLines"]:
                if line["orderNbr"] != order["orderNo"] or line["orderType"] != order["orderType"]:
                    continue
                target = confirmed if shipment["status"] == "Confirmed" else on_open
                target[line["orderLineNbr"]] = target.get(line["orderLineNbr"], Decimal(0)) + _dec(
                    line["shippedQty"]
                )
        all_shipped = True
        for line in order["lines"]:
            shipped = confirmed.get(line["lineNbr"], Decimal(0))
            line["openQty"] = _num(max(Decimal(0), _dec(line["quantity"]) - shipped))
            line["qtyOnShipments"] = _num(on_open.get(line["lineNbr"], Decimal(0)))
            if _dec(line["openQty"]) > 0:
                all_shipped = False
        if order["status"] in OPEN_ORDER_STATUSES:
            if all_shipped:
                order["status"] = "Completed"
            elif on_open:
                order["status"] = "Shipping"
            elif confirmed:
                order["status"] = "BackOrder"
            else:
                order["status"] = "Open"
        order["lastModifiedDateTime"] = self._stamp()

    def _shipment(self, number: str) -> dict:
        shipment = self.shipments.get(number)
        if shipment is None:
            raise Reject(404, f"Shipment '{number}' not found.")
        return shipment

    def h_get_shipment(self, req, ctx, body, shipmentNbr):
        shipment = self._shipment(shipmentNbr)
        return json_response(200, _clean(shipment), [("ETag", self._etag(shipment))])

    def h_update_shipment(self, req, ctx, body, shipmentNbr):
        shipment = self._shipment(shipmentNbr)
        if_match = req.headers.get("if-match")
        if if_match and if_match.strip() not in ("*", self._etag(shipment)):
            raise Reject(412, "Shipment version does not match with If-Match header.")
        if shipment["status"] != "Open" and not (
            shipment["status"] == "Hold" and set(body) <= {"hold"}
        ):
            raise Reject(
                400,
                f"Shipment '{shipmentNbr}' has status {shipment['status']}: it cannot be changed.",
            )
        updated = copy.deepcopy(shipment)
        if "hold" in body:
            updated["hold"] = bool(body["hold"])
            updated["status"] = "Hold" if updated["hold"] else "Open"
        if body.get("shipVia"):
            c = self._need(self.carriers, body["shipVia"], "shipVia", "Carrier")
            updated["shipVia"] = {"id": c["carrierId"], "description": c.get("carrierDescription")}
        if body.get("shipmentDate"):
            try:
                updated["shipmentDate"] = (
                    _parse_date(body["shipmentDate"]).isoformat() + "T00:00:00"
                )
            except ValueError:
                raise Reject(400, "shipmentDate: not a valid date.") from None
        for key in ("note", "controlQuantity", "freightAmt", "freightCost"):
            if key in body:
                updated[key] = body[key]
        for index, line in enumerate(body.get("shipmentDetailLines") or []):
            self._shipment_line_change(updated, line, f"shipmentDetailLines[{index}]")
        for index, line in enumerate(body.get("shipmentPackageLines") or []):
            self._package_change(updated, line, f"shipmentPackageLines[{index}]")
        self._shipment_totals(updated)
        self._touch_shipment(updated)
        self.shipments[shipmentNbr] = updated
        for order in self._orders_of(updated):
            self._sync_order_from_shipments(order)
        return self._no_content()

    def _orders_of(self, shipment: dict) -> list[dict]:
        keys = {(x["orderType"], x["orderNbr"]) for x in shipment["shipmentDetailLines"]}
        keys |= {(x["orderType"], x["orderNbr"]) for x in shipment.get("shipmentOrderLines", [])}
        return [self.orders[k] for k in keys if k in self.orders]

    def _shipment_line_change(self, shipment: dict, change: dict, field: str) -> None:
        operation = change.get("operation", "Update")
        number = change.get("lineNumber")
        lines = shipment["shipmentDetailLines"]
        if operation == "Insert":
            raise Reject(
                400, f"{field}.operation: add order lines with action/addSOLine, not with PUT."
            )
        line = next((x for x in lines if x["lineNumber"] == number), None)
        if line is None:
            raise Reject(400, f"{field}.lineNumber: the shipment has no line {number}.")
        if operation == "Delete":
            lines.remove(line)
            return
        if "shippedQty" in change:
            qty = _dec(change["shippedQty"])
            if qty < 0 or qty > _dec(line["openQty"]):
                raise Reject(
                    400,
                    f"{field}.shippedQty: {qty} is outside 0..{line['openQty']} (open quantity).",
                )
            line["shippedQty"] = _num(qty)
        for key in ("description", "note", "lotSerialNbr", "reasonCode"):
            if key in change:
                line[key] = change[key]
        if change.get("warehouse"):
            line["warehouse"] = self._warehouse_ref(change["warehouse"], f"{field}.warehouse")
        if change.get("uom"):
            line["uom"] = self._check_unit(change["uom"], f"{field}.uom")

    def _package_change(self, shipment: dict, change: dict, field: str) -> None:
        operation = change.get("operation", "Insert")
        packages = shipment["shipmentPackageLines"]
        fields = {
            "boxId": "boxId",
            "description": "description",
            "weight": "weight",
            "volume": "volume",
            "declaredValue": "declaredValue",
            "codAmount": "coDAmount",
            "trackingNumber": "trackingNumber",
            "customRefNbr1": "customRefNbr1",
            "customRefNbr2": "customRefNbr2",
            "confirmed": "confirmed",
        }
        if operation == "Insert":
            package: dict[str, Any] = {
                "lineNumber": max((p["lineNumber"] for p in packages), default=0) + 1,
                "type": "Manual",
                "confirmed": False,
            }
            packages.append(package)
        else:
            number = change.get("lineNumber")
            package = next((p for p in packages if p["lineNumber"] == number), None)
            if package is None:
                raise Reject(400, f"{field}.lineNumber: the shipment has no package line {number}.")
            if operation == "Delete":
                packages.remove(package)
                return
        for source, target in fields.items():
            if source in change:
                package[target] = change[source]
        if not package.get("boxId"):
            raise Reject(400, f"{field}.boxId: 'Box ID' cannot be empty.")

    def h_confirm_shipment(self, req, ctx, body, shipmentNumber):
        shipment = self._shipment(shipmentNumber)
        if shipment["status"] == "Confirmed":
            raise Reject(400, f"Shipment '{shipmentNumber}' is already confirmed.")
        if shipment["status"] == "Hold":
            raise Reject(400, f"Shipment '{shipmentNumber}' is on hold and cannot be confirmed.")
        if not any(_dec(x["shippedQty"]) > 0 for x in shipment["shipmentDetailLines"]):
            raise Reject(400, f"Shipment '{shipmentNumber}' has no shipped quantity.")
        shipment["status"] = "Confirmed"
        for package in shipment["shipmentPackageLines"]:
            package["confirmed"] = True
        self._touch_shipment(shipment)
        for order in self._orders_of(shipment):
            self._sync_order_from_shipments(order)
        return self._action_done()

    # ========================================================================================
    # Customer invoices and credit notes
    # ========================================================================================
    def _document(self, body: dict, doc_type: str, lines_key: str, table: dict) -> dict:
        customer_id = body.get("customerNumber")
        if not customer_id:
            raise Reject(400, "customerNumber: 'Customer' cannot be empty.")
        customer = self._need(self.customers, customer_id, "customerNumber", "Customer")
        reference = body.get("referenceNumber") or self._next(doc_type)
        if reference in table:
            raise Reject(400, f"referenceNumber: the document '{reference}' already exists.")
        try:
            doc_date = _parse_date(body.get("documentDate") or self._today())
        except ValueError:
            raise Reject(400, "documentDate: not a valid date.") from None
        hold = bool(body.get("hold", False))
        doc: dict[str, Any] = {
            "documentType": doc_type,
            "referenceNumber": reference,
            "status": "Hold" if hold else "Balanced",
            "hold": hold,
            "customer": {"number": customer["number"], "name": customer.get("name")},
            "documentDate": doc_date.isoformat() + "T00:00:00",
            "origInvoiceDate": body.get("origInvoiceDate"),
            "financialPeriod": body.get("financialPeriod") or doc_date.strftime("%Y%m"),
            "postPeriod": body.get("postPeriod") or doc_date.strftime("%m%Y"),
            "currencyId": self._check_currency(
                body.get("currencyId") or customer.get("currencyId"), "currencyId"
            ),
            "exchangeRate": 1.0,
            "externalReference": body.get("externalReference"),
            "customerRefNumber": body.get("customerRefNumber"),
            "paymentReference": body.get("paymentReference"),
            "invoiceText": body.get("invoiceText"),
            "note": body.get("note"),
            "branchNumber": self._branch_ref(body.get("branchNumber"), "branchNumber"),
            "dontPrint": bool(body.get("dontPrint", False)),
            "dontEmail": bool(body.get("dontEmail", False)),
            "sendToAutoInvoice": bool(body.get("sendToAutoInvoice", False)),
            "revoked": False,
            "startDate": body.get("startDate"),
            "endDate": body.get("endDate"),
        }
        terms_id = body.get("creditTermsId") or (customer.get("creditTerms") or {}).get("id")
        terms = None
        if terms_id:
            terms = self._need(self.credit_terms, terms_id, "creditTermsId", "Terms")
            doc["creditTerms"] = {"id": terms["termsId"], "description": terms.get("description")}
        method = body.get("paymentMethodId") or customer.get("defaultPaymentMethodId")
        if method:
            m = self._need(self.payment_methods, method, "paymentMethodId", "Payment method")
            doc["paymentMethod"] = {"id": m["paymentMethodID"], "description": m["description"]}
        address = body.get("billingAddress") or body.get("invoiceAddress")
        doc["invoiceAddress"] = self._address(
            address, "billingAddress", customer.get("invoiceAddress")
        )
        doc["invoiceContact"] = self._contact(
            body.get("invoiceContact"), customer.get("invoiceContact")
        )
        lines = [
            self._document_line(line, index, f"{lines_key}[{index}]")
            for index, line in enumerate(body.get(lines_key) or [])
        ]
        doc[lines_key] = lines
        self._document_totals(doc, lines, body.get("taxDetailLines") or body.get("taxDetails"))
        due = body.get("documentDueDate")
        discount_date = body.get("cashDiscountDate")
        if terms is not None:
            due = due or (doc_date + dt.timedelta(days=int(terms.get("dueDay1") or 0))).isoformat()
            if terms.get("discountDay") and _dec(terms.get("discountPercent")) > 0:
                discount_date = (
                    discount_date
                    or (doc_date + dt.timedelta(days=int(terms["discountDay"]))).isoformat()
                )
                cash = _money(_dec(doc["amount"]) * _dec(terms["discountPercent"]) / 100)
                doc["cashDiscount"] = doc["cashDiscountInCurrency"] = _num(cash)
        doc["documentDueDate"] = _as_datetime(due or doc_date.isoformat())
        doc["cashDiscountDate"] = _as_datetime(discount_date or doc["documentDueDate"])
        stamp = self._stamp()
        doc["createdDateTime"] = stamp
        doc["lastModifiedDateTime"] = stamp
        return doc

    def _document_line(self, line: dict, index: int, field: str) -> dict:
        if line.get("operation", "Insert") != "Insert":
            raise Reject(400, f"{field}.operation: only Insert is possible on a new document.")
        item = None
        number = line.get("inventoryNumber")
        if number:
            item = self._need(self.inventory, number, f"{field}.inventoryNumber", "Inventory item")
        category = line.get("vatCodeId") or ((item or {}).get("vatCode") or {}).get("id")
        vat = self._vat_category(category, f"{field}.vatCodeId") if category else None
        quantity = _dec(line.get("quantity"), "1")
        price = _dec(
            line["unitPriceInCurrency"]
            if line.get("unitPriceInCurrency") is not None
            else (item or {}).get("defaultPrice")
        )
        gross = _money(quantity * price)
        if line.get("discountAmountInCurrency") is not None:
            discount = _money(_dec(line["discountAmountInCurrency"]))
        else:
            discount = _money(gross * _dec(line.get("discountPercent")) / 100)
        manual = line.get("manualAmountInCurrency")
        amount = _money(_dec(manual)) if manual is not None else gross - discount
        description = line.get("description") or (item or {}).get("description")
        if not description and not number:
            raise Reject(400, f"{field}: a line needs an inventoryNumber or a description.")
        record = {
            "lineNumber": line.get("lineNumber") or index + 1,
            "inventoryNumber": number,
            "description": description,
            "quantity": _num(quantity),
            "unitPrice": _num(price),
            "unitPriceInCurrency": _num(price),
            "manualAmount": _num(amount) if manual is not None else None,
            "manualAmountInCurrency": _num(amount) if manual is not None else None,
            "amount": _num(amount),
            "amountInCurrency": _num(amount),
            "discountPercent": _num(_dec(line.get("discountPercent"))),
            "discountAmount": _num(discount),
            "discountAmountInCurrency": _num(discount),
            "manualDiscount": bool(line.get("manualDiscount", False)),
            "uom": self._check_unit(line["uom"], f"{field}.uom")
            if line.get("uom")
            else (item or {}).get("salesUnit"),
            "note": line.get("note"),
            "lineType": "GI" if item else "GN",
        }
        if vat is not None:
            record["vatCode"] = {"id": vat["vatCategoryId"], "description": vat.get("description")}
        if line.get("accountNumber"):
            record["account"] = {"number": line["accountNumber"]}
        if line.get("branchNumber"):
            record["branchNumber"] = self._branch_ref(line["branchNumber"], f"{field}.branchNumber")
        return record

    def _document_totals(
        self, doc: dict, lines: list[dict], tax_details: list[dict] | None = None
    ) -> None:
        """Totals from the lines. ``tax_details`` (``taxDetailLines`` of an invoice,
        ``taxDetails`` of a credit note: ``TaxDetailUpdateDto``) set the VAT amount of a VAT of
        the document instead of the computed one -- how a document whose own rounding differs
        (a HUF invoice rounds its VAT to whole forints) is booked as issued (*chosen*: the
        given amount is taken as it is; a VAT id not on any line of the document is refused).
        """
        given: dict[str, Decimal] = {}
        for index, detail in enumerate(tax_details or []):
            tax_id = detail.get("taxId")
            if not tax_id or detail.get("vatAmount") is None:
                raise Reject(
                    400, f"taxDetailLines[{index}]: 'Tax ID' and 'VAT amount' cannot be empty."
                )
            given[str(tax_id)] = _money(_dec(detail["vatAmount"]))
        net_by_category: dict[str | None, Decimal] = {}
        discount = Decimal(0)
        for line in lines:
            key = (line.get("vatCode") or {}).get("id")
            net_by_category[key] = net_by_category.get(key, Decimal(0)) + _dec(line["amount"])
            discount += _dec(line["discountAmount"])
        details = []
        detail = tax = taxable = exempt = Decimal(0)
        applied: set[str] = set()
        for category, net in net_by_category.items():
            detail += net
            rate, vat_id = self._vat_rate(category)
            vat_amount = _money(net * rate / 100)
            if vat_id in given:
                vat_amount = given[vat_id]
                applied.add(vat_id)
            tax += vat_amount
            if rate > 0:
                taxable += net
            else:
                exempt += net
            if vat_id:
                vat = self.vats[vat_id]
                details.append(
                    {
                        "taxId": vat_id,
                        "recordId": len(details) + 1,
                        "vatId": {"number": vat_id, "description": vat.get("description")},
                        "vatRate": _num(rate),
                        "taxableAmount": _num(net),
                        "vatAmount": _num(vat_amount),
                    }
                )
        unknown = sorted(set(given) - applied)
        if unknown:
            raise Reject(
                400,
                f"taxDetailLines: VAT '{unknown[0]}' does not apply to any line of the document.",
            )
        amount = detail + tax
        doc.update(
            {
                "taxDetails": details,
                "detailTotal": _num(detail),
                "detailTotalInCurrency": _num(detail),
                "vatTaxableTotal": _num(taxable),
                "vatTaxableTotalInCurrency": _num(taxable),
                "vatExemptTotal": _num(exempt),
                "vatExemptTotalInCurrency": _num(exempt),
                "vatTotal": _num(tax),
                "vatTotalInCurrency": _num(tax),
                "discountTotal": _num(discount),
                "discountTotalInCurrency": _num(discount),
                "amount": _num(amount),
                "amountInCurrency": _num(amount),
                "balance": _num(amount),
                "balanceInCurrency": _num(amount),
                "cashDiscount": 0.0,
                "cashDiscountInCurrency": 0.0,
                "roundingDiff": 0.0,
            }
        )

    def _filter_documents(self, req, records: list[dict]) -> SimResponse:
        for param in ("externalReference", "customerRefNumber", "paymentReference", "status"):
            value = self._q(req, param)
            if value is not None:
                records = [r for r in records if r.get(param) == value]
        customer = self._q(req, "customer")
        if customer is not None:
            records = [r for r in records if r["customer"]["number"] == customer]
        branch = self._q(req, "branch")
        if branch is not None:
            records = [r for r in records if r["branchNumber"]["number"] == branch]
        released = self._q(req, "released")
        if released is not None:
            want = released.strip() == "1"
            records = [r for r in records if (r["status"] not in ("Hold", "Balanced")) == want]
        records = self._modified_filter(req, records)
        records = self._modified_filter(req, records, prefix="created")
        return self._page(req, records)

    def _release(self, table: dict, reference: str, what: str) -> SimResponse:
        doc = table.get(reference)
        if doc is None:
            raise Reject(404, f"{what} '{reference}' not found.")
        if doc["status"] == "Hold":
            raise Reject(400, f"{what} '{reference}' is on hold and cannot be released.")
        if doc["status"] != "Balanced":
            raise Reject(400, f"{what} '{reference}' is already released ({doc['status']}).")
        doc["status"] = "Open"
        doc["lastModifiedDateTime"] = self._stamp()
        return self._action_done()

    def h_create_invoice(self, req, ctx, body):
        doc = self._document(body, "Invoice", "invoiceLines", self.invoices)
        self.invoices[doc["referenceNumber"]] = doc
        return self._created(ctx, f"/v1/customerinvoice/{doc['referenceNumber']}")

    def h_list_invoices(self, req, ctx, body):
        return self._filter_documents(req, list(self.invoices.values()))

    def h_get_invoice(self, req, ctx, body, invoiceNumber):
        return self._one(self.invoices.get(invoiceNumber), "Invoice", invoiceNumber)

    def h_release_invoice(self, req, ctx, body, invoiceNumber):
        return self._release(self.invoices, invoiceNumber, "Invoice")

    def h_create_credit_note(self, req, ctx, body):
        doc = self._document(body, "CreditNote", "lines", self.credit_notes)
        self.credit_notes[doc["referenceNumber"]] = doc
        return self._created(ctx, f"/v1/customerCreditNote/{doc['referenceNumber']}")

    def h_list_credit_notes(self, req, ctx, body):
        return self._filter_documents(req, list(self.credit_notes.values()))

    def h_get_credit_note(self, req, ctx, body, creditNoteNumber):
        return self._one(self.credit_notes.get(creditNoteNumber), "Credit note", creditNoteNumber)

    def h_release_credit_note(self, req, ctx, body, creditNoteNumber):
        return self._release(self.credit_notes, creditNoteNumber, "Credit note")

    # ========================================================================================
    # Master data (read only)
    # ========================================================================================
    def h_list_payment_methods(self, req, ctx, body):
        return self._plain_list(self.payment_methods.values())

    def h_get_payment_method(self, req, ctx, body, paymentMethodNumber):
        return self._one(
            self.payment_methods.get(paymentMethodNumber), "Payment method", paymentMethodNumber
        )

    def h_list_credit_terms(self, req, ctx, body):
        records = list(self.credit_terms.values())
        terms = self._q(req, "termsId")
        if terms is not None:
            records = [r for r in records if r["termsId"] == terms]
        records = self._modified_filter(req, records)
        page_number = self._int_param(req, "pageNumber", 1)
        page_size = min(self._int_param(req, "pageSize", self.max_page_size), self.max_page_size)
        chunk = records[(page_number - 1) * page_size : page_number * page_size]
        return json_response(
            200,
            {
                "pageNumber": page_number,
                "pageSize": page_size,
                "totalCount": len(records),
                "records": _clean(chunk),
            },
        )

    def h_list_sales_order_types(self, req, ctx, body):
        # the seed names the types only (orderTypes); SalesOrderTypeDto has no other required field
        return self._plain_list(
            {"orderType": order_type, "active": True} for order_type in sorted(self.order_types)
        )

    def h_list_carriers(self, req, ctx, body):
        return self._plain_list(self._modified_filter(req, list(self.carriers.values())))

    def h_get_carrier(self, req, ctx, body, carrierName):
        return self._one(self.carriers.get(carrierName), "Carrier", carrierName)

    def h_list_branches(self, req, ctx, body):
        return self._plain_list(self._modified_filter(req, list(self.branches.values())))

    def h_get_branch(self, req, ctx, body, branchNumber):
        return self._one(self.branches.get(branchNumber), "Branch", branchNumber)

    def h_list_warehouses(self, req, ctx, body):
        records = list(self.warehouses.values())
        branch = self._q(req, "branch")
        if branch is not None:
            records = [w for w in records if (w.get("branch") or {}).get("number") == branch]
        return self._plain_list(records)

    def h_get_warehouse(self, req, ctx, body, warehouseID):
        return self._one(self.warehouses.get(warehouseID), "Warehouse", warehouseID)

    def h_list_vats(self, req, ctx, body):
        return self._plain_list(self._modified_filter(req, list(self.vats.values())))

    def h_list_vat_categories(self, req, ctx, body):
        return self._plain_list(self._modified_filter(req, list(self.vat_categories.values())))

    def h_list_sales_prices(self, req, ctx, body):
        records = list(self.sales_prices)
        for param in ("priceType", "priceCode", "inventoryId"):
            value = self._q(req, param)
            if value is not None and not (param == "priceType" and value == "All"):
                records = [r for r in records if r.get(param) == value]
        records = self._modified_filter(req, records)
        return self._page(req, records)

    # ========================================================================================
    # Background API
    # ========================================================================================
    def _to_background(
        self, request: SimRequest, route: Route, ctx: Ctx, response: SimResponse, hook: str
    ) -> SimResponse:
        """Answer 202 and keep the (already processed) answer for the state/content calls."""
        job_id = str(uuid.uuid4())
        now = self.clock.now()
        query = request.environ.get("QUERY_STRING", "")
        self.background_jobs[job_id] = {
            "id": job_id,
            "_owner": (ctx.tenant, ctx.client_id),
            "_received": now,
            "_response": response,
            "webhookAddress": hook or "none",
            "originalUri": ctx.base_url + request.path + (f"?{query}" if query else ""),
            "hasRequestContent": bool(request.body),
        }
        state = f"{ctx.base_url}/v1/background/{job_id}"
        return json_response(202, {"id": job_id, "stateLocation": state})

    def _job(self, ctx: Ctx, request_id: str) -> dict:
        job = self.background_jobs.get(request_id)
        if job is None:
            raise Reject(404, "No background operation state was found.")
        if job["_owner"] != (ctx.tenant, ctx.client_id):
            raise Reject(
                403,
                "State request was not done by same company/user as for the background "
                "operation request.",
            )
        if self.clock.now() - job["_received"] > 24 * 3600:
            raise Reject(410, "State for background operation has been removed after 24 hours.")
        return job

    def _utc(self, epoch: float) -> str:
        moment = dt.datetime.fromtimestamp(epoch, dt.timezone.utc)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"

    def h_background_state(self, req, ctx, body, requestId):
        job = self._job(ctx, requestId)
        response: SimResponse = job["_response"]
        done = self.clock.now() >= job["_received"] + self.background_seconds
        state = {
            "id": job["id"],
            "status": "Finished" if done else "Started",
            "statusCode": response.status if done else 0,
            "receivedUtc": self._utc(job["_received"]),
            "startedUtc": self._utc(job["_received"]),
            "webhookAddress": job["webhookAddress"],
            "originalUri": job["originalUri"],
            "hasRequestContent": job["hasRequestContent"],
            "hasResponseContent": bool(response.body) if done else False,
        }
        if done:
            state["finishedUtc"] = self._utc(job["_received"] + self.background_seconds)
            state["contentLocation"] = f"{ctx.base_url}/v1/background/{requestId}/content"
            state["responseHeaders"] = {
                k: v
                for k, v in response.headers
                if k.lower() in ("location", "etag", "content-type")
            }
            if response.status >= 400:
                state["errorMessage"] = f"The operation answered {response.status}."
        return json_response(200, state)

    def h_background_content(self, req, ctx, body, requestId):
        job = self._job(ctx, requestId)
        response: SimResponse = job["_response"]
        done = self.clock.now() >= job["_received"] + self.background_seconds
        if not done or not response.body:
            raise Reject(404, "No background operation response content was found.")
        return SimResponse(200, response.body, [("Content-Type", "application/json")])


def _period(date: str) -> str:
    try:
        return _parse_date(date).strftime("%m%Y")
    except ValueError:
        return ""


def _as_datetime(value: str) -> str:
    text = str(value)
    return text if "T" in text else text[:10] + "T00:00:00"


# --------------------------------------------------------------------------------------------
# Contract guard (tests, benchmarks): check every answer against the spec
# --------------------------------------------------------------------------------------------
ERROR_KEYS = (
    "ExceptionType",
    "ExceptionMessage",
    "ExceptionFaultCode",
    "ExceptionMessageID",
    "ExceptionDetails",
)
QUOTA_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


class ContractGuard:
    """WSGI middleware around a :class:`VismaSimulator` that checks every exchange.

    For each API answer: the operation exists in the spec with that status; a JSON body
    validates against the spec's response schema; 201 has an empty body and ``Location``; 204
    is empty; an error has exactly the Visma error shape; quota headers are present once the
    caller is authenticated. For each request: every query parameter exists in the spec for the
    operation (a client must not invent one). Violations are collected in :attr:`violations`;
    :attr:`checked` counts the answers checked. Answers the contract cannot describe are skipped
    on purpose, and only those: bodies made malformed by an injected fault and injected
    ``status`` faults carrying a custom body.
    """

    def __init__(self, sim: VismaSimulator, spec: VismaSpec | None = None):
        self.sim = sim
        self.spec = spec or sim.spec
        self.checked = 0
        self.violations: list[str] = []
        self.statuses: dict[tuple[str, str, int], int] = {}

    def __getattr__(self, name: str) -> Any:  # faults, requests, clock, ... of the simulator
        return getattr(self.sim, name)

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> list[bytes]:
        captured: dict[str, Any] = {}

        def capture(status, headers, exc_info=None):
            captured["status"] = int(status.split(" ", 1)[0])
            captured["headers"] = list(headers)
            return start_response(status, headers, exc_info)

        result = self.sim(environ, capture)  # DroppedConnection / timeouts propagate
        body = b"".join(result)
        request = SimRequest(
            method=environ.get("REQUEST_METHOD", "GET").upper(),
            path=environ.get("PATH_INFO") or "/",
            query=parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True),
            headers={},
            body=b"",
            environ=environ,
        )
        self._check(request, captured["status"], captured["headers"], body)
        return [body]

    def _fail(self, where: str, problem: str) -> None:
        self.violations.append(f"{where}: {problem}")

    def _check(self, request: SimRequest, status: int, headers: list, body: bytes) -> None:
        path = request.path
        if path.startswith(SimulatorBase.SIM_PREFIX):
            return
        self.checked += 1
        where = f"{request.method} {path} -> {status}"
        last = self.sim.requests.entries[-1] if len(self.sim.requests) else {}
        fault = last.get("fault") if last.get("path") == path else None
        header = {k.lower(): v for k, v in headers}
        if fault == "malformed" or (
            fault == "status" and "json" not in header.get("content-type", "")
        ):
            return
        try:
            payload = json.loads(body) if body else None
        except ValueError:
            self._fail(where, f"body is not JSON: {body[:80]!r}")
            return
        if path.rstrip("/").lower() == TOKEN_PATH:
            self._check_token(where, status, payload)
            return
        route = next(
            (r for r in ROUTES if r.method == request.method and r.regex.match(path)), None
        )
        if status >= 400:
            self._check_error(where, payload)
            authenticated = route is not None and status not in (401, 403) and fault is None
            if authenticated and "x-ratelimit-limit" not in header:
                self._fail(where, "no X-RateLimit-* headers on an authenticated answer")
            return
        if route is None:
            self._fail(where, "a success for a path the simulator does not route")
            return
        key = (route.method, route.template, status)
        self.statuses[key] = self.statuses.get(key, 0) + 1
        for name in QUOTA_HEADERS:
            if name.lower() not in header:
                self._fail(where, f"header {name} missing")
        self._check_query(where, route, request)
        try:
            schema = self.spec.response_schema(route.method, route.template, status)
        except KeyError as exc:
            self._fail(where, str(exc))
            return
        if status == 201:
            if body:
                self._fail(where, "201 Created must have an empty body")
            if "location" not in header:
                self._fail(where, "201 Created without Location")
            return
        if status == 204:
            if body:
                self._fail(where, "204 No Content with a body")
            return
        if payload is None:
            if schema and schema.get("properties"):
                self._fail(where, "empty body where the spec describes one")
            return
        for problem in self.spec.errors(schema, payload)[:5]:
            self._fail(where, problem)

    def _check_query(self, where: str, route: Route, request: SimRequest) -> None:
        operation = self.spec.operation(route.method, route.template)
        known = {
            p["name"].lower()
            for p in [
                *self.spec.paths[route.template].get("parameters", []),
                *operation.get("parameters", []),
            ]
            if p.get("in") == "query"
        }
        for name in request.query:
            if name.lower().rstrip("[]") not in known:
                self._fail(where, f"query parameter {name!r} is not in the spec")

    def _check_error(self, where: str, payload: Any) -> None:
        if not isinstance(payload, dict) or set(payload) != set(ERROR_KEYS):
            self._fail(where, f"not the Visma error shape: {payload!r}"[:200])
            return
        for key in ERROR_KEYS:
            if not isinstance(payload[key], str):
                self._fail(where, f"{key} is not a string")

    def _check_token(self, where: str, status: int, payload: Any) -> None:
        if status == 200:
            ok = (
                isinstance(payload, dict)
                and isinstance(payload.get("access_token"), str)
                and isinstance(payload.get("expires_in"), int)
                and payload.get("token_type") == "Bearer"
            )
            if not ok:
                self._fail(where, "token answer lacks access_token/expires_in/token_type")
        elif not (isinstance(payload, dict) and isinstance(payload.get("error"), str)):
            self._fail(where, f"OAuth error without 'error': {payload!r}"[:200])
