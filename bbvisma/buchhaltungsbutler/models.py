"""Typed records of the BuchhaltungsButler API v1, parsed from its string-typed JSON.

BuchhaltungsButler answers almost everything as strings: amounts ``"123.45"``, booleans
``"0"``/``"1"``, dates ``"YYYY-MM-DD"``, date-times ``"YYYY-MM-DD HH:MM:SS"`` (no zone: read as
Europe/Berlin, the company's local time), and sends ``null`` or ``""`` for unset values. The
models here turn them into ``Decimal``, ``bool``, ``date`` and zone-aware ``datetime`` once, at
the edge, so no flow ever compares a string amount.

Field names follow the swagger (``buchhaltungsbutler-v1.swagger.json``) exactly, with two
documented spellings normalised: the debtor list answers ``additional_addressline`` and
``sales_tax_id_eu`` where the write endpoints take ``additional_address_line`` and
``sales_tax_id``; the models expose the write names and accept both.

What the API does *not* give: receipts carry no modification time (there is no ``modified``
field in any receipt answer); changes can only be asked for with the request filter
``date_since_last_modified``.
"""

from __future__ import annotations

import base64
import binascii
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, field_validator

BERLIN = ZoneInfo("Europe/Berlin")

RECEIPT_TYPES = ("invoice inbound", "invoice outbound", "credit inbound", "credit outbound")
LIST_DIRECTIONS = ("inbound", "outbound")
PAYMENT_STATUSES = ("paid", "unpaid")
#: e_invoice_type of a receipt: what its file is
E_INVOICE_PDF, E_INVOICE_ZUGFERD, E_INVOICE_XRECHNUNG = 0, 1, 2


# --------------------------------------------------------------------------------------------
# Converters (usable on their own, e.g. by the flows for watermarks)
# --------------------------------------------------------------------------------------------
def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() in ("", "0000-00-00"))


def parse_decimal(value: Any) -> Decimal | None:
    """``"123.45"`` / ``123.45`` -> ``Decimal("123.45")``; blank -> ``None``."""
    if _blank(value):
        return None
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool):
        raise ValueError(f"not an amount: {value!r}")
    try:
        # str() first: a float would carry its binary error into the Decimal
        return Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"not an amount: {value!r}") from None


def parse_bool(value: Any) -> bool | None:
    """``"1"``/``"0"`` (and ``1``/``0``, ``true``/``false``) -> ``bool``; blank -> ``None``."""
    if _blank(value):
        return None
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true"):
        return True
    if text in ("0", "false"):
        return False
    raise ValueError(f"not a BuchhaltungsButler boolean: {value!r}")


def parse_date(value: Any) -> date | None:
    """``"YYYY-MM-DD"`` (a trailing time part is ignored) -> ``date``; blank -> ``None``."""
    if _blank(value):
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value).strip()[:10])


def parse_berlin_datetime(value: Any) -> datetime | None:
    """``"YYYY-MM-DD HH:MM:SS"`` in Berlin local time -> aware ``datetime``; blank -> ``None``.

    A date alone means the start of that day. An aware value is converted to Berlin time.
    """
    if _blank(value):
        return None
    if isinstance(value, datetime):
        return value.astimezone(BERLIN) if value.tzinfo else value.replace(tzinfo=BERLIN)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=BERLIN)
    text = str(value).strip()
    parsed = datetime.fromisoformat(text) if "T" in text else None
    if parsed is None:
        fmt = "%Y-%m-%d %H:%M:%S" if len(text) > 10 else "%Y-%m-%d"
        parsed = datetime.strptime(text, fmt)
    return parsed.astimezone(BERLIN) if parsed.tzinfo else parsed.replace(tzinfo=BERLIN)


def format_berlin_datetime(value: datetime | date | str) -> str:
    """The ``YYYY-MM-DD HH:MM:SS`` Berlin wall time the API expects in filters.

    A naive ``datetime`` is taken as Berlin time already; an aware one is converted; a
    ``date`` becomes its midnight; a string is validated and passed through.
    """
    parsed = parse_berlin_datetime(value)
    if parsed is None:
        raise ValueError(f"not a date-time: {value!r}")
    return parsed.strftime("%Y-%m-%d %H:%M:%S")


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


Amount = Annotated[Decimal | None, BeforeValidator(parse_decimal)]
Flag = Annotated[bool | None, BeforeValidator(parse_bool)]
Day = Annotated[date | None, BeforeValidator(parse_date)]
BerlinTime = Annotated[datetime | None, BeforeValidator(parse_berlin_datetime)]
Text = Annotated[str | None, BeforeValidator(_text)]


class BBModel(BaseModel):
    """Immutable, ignores fields it does not know (the API may add some)."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


# --------------------------------------------------------------------------------------------
# Debtors (/settings/get/debtors, /settings/add/debtor, /settings/update/debtor)
# --------------------------------------------------------------------------------------------
#: the fields /settings/add/debtor and /settings/update/debtor accept (besides api_key)
DEBTOR_WRITE_FIELDS = (
    "name",
    "postingaccount_number",
    "contact_person_name",
    "street",
    "additional_address_line",
    "customer_number",
    "zip",
    "city",
    "country",
    "sales_tax_id",
    "email",
    "iban",
    "bic",
)


class Debtor(BBModel):
    """A debtor account (customer) of the company; ``postingaccount_number`` is its key."""

    postingaccount_number: str
    name: str
    type: Text = None
    contact_person_name: Text = None
    street: Text = None
    additional_address_line: Text = Field(
        None, validation_alias=AliasChoices("additional_address_line", "additional_addressline")
    )
    zip: Text = None
    city: Text = None
    #: ISO 3166 alpha-2 or the German country name, as the company entered it
    country: Text = None
    #: not in the swagger's list answer, but returned by the live API (reference README)
    customer_number: Text = None
    sales_tax_id: Text = Field(
        None, validation_alias=AliasChoices("sales_tax_id", "sales_tax_id_eu")
    )
    uid_ch: Text = None
    email: Text = None
    iban: Text = None
    bic: Text = None
    import_pending: Flag = None

    @field_validator("postingaccount_number", mode="before")
    @classmethod
    def _account_as_text(cls, value: Any) -> str:
        if _blank(value):
            raise ValueError("a debtor without postingaccount_number")
        return str(value).strip()

    def write_fields(self) -> dict[str, str]:
        """The non-empty fields in the names /settings/add/debtor takes."""
        data = self.model_dump()
        return {k: data[k] for k in DEBTOR_WRITE_FIELDS if data.get(k) not in (None, "")}


class BatchResult(BBModel):
    """Answer of /settings/add-batch/debtors: created accounts and per-item refusals."""

    created: list[str] = Field(default_factory=list)
    errors: list[dict[str, Any]] = Field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Receipts (/receipts/get, /receipts/get/<id_by_customer>)
# --------------------------------------------------------------------------------------------
class Receipt(BBModel):
    """One row of /receipts/get (the list answer has no currency, VAT or file)."""

    id_by_customer: str
    type: Text = None
    filename: Text = None
    date: Day = None
    date_delivery: Day = None
    date_uploaded: Day = None
    counterparty: Text = None
    invoicenumber: Text = None
    amount: Amount = None
    payment_date: Day = None
    due_date: Day = None
    account: Text = None
    link_to_receipt_id_by_customer: Text = None
    deleted: Flag = None

    @field_validator("id_by_customer", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> str:
        if _blank(value):
            raise ValueError("a receipt without id_by_customer")
        return str(value).strip()

    @property
    def is_outbound(self) -> bool:
        return bool(self.type) and self.type.endswith("outbound")

    @property
    def is_credit(self) -> bool:
        return bool(self.type) and self.type.startswith("credit")

    @property
    def is_paid(self) -> bool:
        """BuchhaltungsButler marks payment only through ``payment_date``."""
        return self.payment_date is not None


class ReceiptDetail(Receipt):
    """/receipts/get/<id_by_customer>: the list fields plus currency, VAT, e-invoice and file."""

    amount_original: Amount = None
    currency: Text = None
    currency_original: Text = None
    exchangerate: Amount = None
    #: the receipt's VAT rate in percent (``19.00``); ``None`` for none or several rates
    vat: Amount = None
    #: 0 plain PDF, 1 ZUGFeRD/Factur-X PDF, 2 XRechnung XML
    e_invoice_type: int | None = None
    list_direction: Text = None
    payment_reference: Text = None
    file_type: Text = None
    date_payment_due: Day = None
    #: the decoded ``file_content`` (only with ``get_file=True`` and when a file exists)
    file: bytes | None = Field(None, validation_alias=AliasChoices("file", "file_content"))

    @field_validator("e_invoice_type", mode="before")
    @classmethod
    def _e_invoice_type(cls, value: Any) -> int | None:
        if _blank(value):
            return None
        number = int(str(value).strip())
        if number not in (E_INVOICE_PDF, E_INVOICE_ZUGFERD, E_INVOICE_XRECHNUNG):
            raise ValueError(f"unknown e_invoice_type {value!r}")
        return number

    @field_validator("file", mode="before")
    @classmethod
    def _decode_file(cls, value: Any) -> bytes | None:
        if _blank(value):
            return None
        if isinstance(value, bytes):
            return value
        try:
            return base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("file_content is not valid base64") from None

    @property
    def is_e_invoice(self) -> bool:
        return self.e_invoice_type in (E_INVOICE_ZUGFERD, E_INVOICE_XRECHNUNG)


# --------------------------------------------------------------------------------------------
# Transactions (/transactions/get, /transactions/get/<id_by_customer>)
# --------------------------------------------------------------------------------------------
class Transaction(BBModel):
    """A payment on a bank/cash account (positive = incoming)."""

    id_by_customer: str
    to_from: Text = None
    amount: Amount = None
    booking_date: BerlinTime = None
    value_date: BerlinTime = None
    purpose: Text = None

    @field_validator("id_by_customer", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> str:
        if _blank(value):
            raise ValueError("a transaction without id_by_customer")
        return str(value).strip()


class TransactionDetail(Transaction):
    account: Text = None
    currency: Text = None
    account_number: Text = None
    bank_code: Text = None
    bank_name: Text = None
    type: Text = None
    booking_text: Text = None
