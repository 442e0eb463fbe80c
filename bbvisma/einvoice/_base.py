"""Shared plumbing of the CII and UBL readers: namespaces, compiled XPath, value conversion.

Everything that turns XML text into a Python value lives here, so both syntaxes fail the same
way: a value that cannot be read raises :class:`~bbvisma.errors.UnsupportedDocument` with a cause
and the business term (BT number) in the message -- a half-read invoice is worse than a refused one.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from lxml import etree

from bbvisma.errors import UnsupportedDocument
from bbvisma.records import AllowanceCharge, DocumentTotals, PaymentTerms

# --------------------------------------------------------------------------------------------
# Causes (stable keys for UnsupportedDocument.cause; the flows and the CLI group by them)
# --------------------------------------------------------------------------------------------
CAUSE_NO_LINES = "no_lines"  # MINIMUM / BASIC WL / type 751: invoice information only
CAUSE_ZUGFERD1 = "zugferd1"  # legacy ZUGFeRD 1.0 CrossIndustryDocument
CAUSE_NO_XML = "no_xml"  # a PDF without an embedded invoice XML
CAUSE_MALFORMED_PDF = "malformed_pdf"  # starts like a PDF, but the PDF cannot be read
CAUSE_UNKNOWN_SYNTAX = "unknown_syntax"  # XML that is neither CII nor UBL Invoice/CreditNote
CAUSE_MALFORMED_XML = "malformed_xml"  # not well-formed XML (lxml's message and line)
CAUSE_TOTALS_MISMATCH = "totals_mismatch"  # the lines do not add up to the stated totals
CAUSE_MISSING_FIELD = "missing_field"  # a mandatory business term is absent
CAUSE_INVALID_VALUE = "invalid_value"  # an amount, quantity or date that cannot be read

NS = {
    # UN/CEFACT CII D16B (EN 16931, Factur-X / ZUGFeRD 2.x, XRechnung CII)
    "rsm": "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100",
    "ram": "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100",
    "udt": "urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100",
    "qdt": "urn:un:unece:uncefact:data:standard:QualifiedDataType:100",
    # OASIS UBL 2.1
    "inv": "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2",
    "cn": "urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2",
    "cac": "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2",
    "cbc": "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2",
}

#: GS1 GTIN in ISO/IEC 6523 (the scheme EN 16931 names for BT-157).
GTIN_SCHEME = "0160"

#: Secure and tolerant of big files: no entity expansion (billion laughs, XXE), no network, but
#: ``huge_tree`` so that a base64 attachment above libxml2's 10 MB text-node limit still parses.
XML_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True, remove_comments=True
)


class Q:
    """One XPath, compiled once at import time, with the reads the parsers need.

    ``text`` gives the stripped text of the first match (``None`` when absent or blank), so an
    empty element never masquerades as a value.
    """

    __slots__ = ("_xp", "path")

    def __init__(self, path: str):
        self.path = path
        self._xp = etree.XPath(path, namespaces=NS, smart_strings=False)

    def all(self, el) -> list:
        return self._xp(el)

    def first(self, el):
        found = self._xp(el)
        return found[0] if found else None

    def text(self, el) -> str | None:
        return node_text(self.first(el))

    def texts(self, el) -> list[str]:
        return [t for t in (node_text(n) for n in self._xp(el)) if t]


def node_text(node) -> str | None:
    """Stripped text of an element (comments skipped), or ``None`` when absent or blank."""
    if node is None:
        return None
    value = node if isinstance(node, str) else "".join(node.itertext())
    value = value.strip()
    return value or None


# --------------------------------------------------------------------------------------------
# Value conversion
# --------------------------------------------------------------------------------------------
def refuse(message: str, cause: str, source: str | None, **details) -> UnsupportedDocument:
    """Build the exception with the file name in front, so a log line says which file it was."""
    prefix = f"{source}: " if source else ""
    return UnsupportedDocument(
        prefix + message, cause=cause, details={"file": source, **details} if source else details
    )


def to_decimal(raw: str | None, what: str, source: str | None) -> Decimal | None:
    """A decimal from XML text; ``None`` when absent, a refusal when present but unreadable."""
    if raw is None:
        return None
    try:
        value = Decimal(raw.strip())
    except InvalidOperation:
        raise refuse(f"{what} is not a number: {raw!r}", CAUSE_INVALID_VALUE, source)
    if not value.is_finite():
        raise refuse(f"{what} is not a finite number: {raw!r}", CAUSE_INVALID_VALUE, source)
    return value


def req_decimal(raw: str | None, what: str, source: str | None) -> Decimal:
    """A mandatory decimal: refused when absent or unreadable."""
    return required(to_decimal(raw, what, source), what, source)


def decimal_or_zero(raw: str | None, what: str, source: str | None) -> Decimal:
    """An optional amount whose absence means zero (allowance/charge totals, prepaid, rounding)."""
    value = to_decimal(raw, what, source)
    return Decimal("0") if value is None else value


def required(value, what: str, source: str | None):
    """Refuse the document when a mandatory business term is missing."""
    if value is None:
        raise refuse(f"{what} is missing", CAUSE_MISSING_FIELD, source)
    return value


def cii_date(node, what: str, source: str | None) -> dt.date | None:
    """A CII ``udt:DateTimeString`` (format 102 = CCYYMMDD, the only format EN 16931 allows)."""
    raw = node_text(node)
    if raw is None:
        return None
    fmt = node.get("format") if not isinstance(node, str) else None
    if fmt not in (None, "102") or not re.fullmatch(r"\d{8}", raw):
        raise refuse(
            f"{what} {raw!r} (format {fmt}) is not a CCYYMMDD date", CAUSE_INVALID_VALUE, source
        )
    try:
        return dt.date(int(raw[:4]), int(raw[4:6]), int(raw[6:]))
    except ValueError:
        raise refuse(f"{what} {raw!r} is not a valid date", CAUSE_INVALID_VALUE, source)


def iso_date(raw: str | None, what: str, source: str | None) -> dt.date | None:
    """A UBL ``xsd:date`` (CCYY-MM-DD, optionally followed by a time zone)."""
    if raw is None:
        return None
    match = re.fullmatch(r"(\d{4}-\d{2}-\d{2})(Z|[+-]\d{2}:\d{2})?", raw)
    try:
        if not match:
            raise ValueError(raw)
        return dt.date.fromisoformat(match.group(1))
    except ValueError:
        raise refuse(f"{what} {raw!r} is not a CCYY-MM-DD date", CAUSE_INVALID_VALUE, source)


def charge_indicator(raw: str | None, source: str | None) -> bool:
    """ChargeIndicator (false = allowance, true = charge) is an ``xsd:boolean``: 1/0 count."""
    value = (raw or "").strip().lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise refuse(
        f"allowance/charge indicator {raw!r} is not an xsd:boolean", CAUSE_INVALID_VALUE, source
    )


def cents(value: Decimal) -> Decimal:
    """Round half up to the cent: the precision at which EN 16931 totals must agree."""
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def dec_sum(values: Iterable[Decimal]) -> Decimal:
    total = Decimal("0")
    for value in values:
        total += value
    return total


def opt_text(el, q: Q) -> str | None:
    """``q``'s text under an optional element (``None`` when the element is absent)."""
    return q.text(el) if el is not None else None


def opt_decimal(el, q: Q, what: str, source: str | None) -> Decimal | None:
    """``q``'s decimal under an optional element (``None`` when the element is absent)."""
    return to_decimal(q.text(el), what, source) if el is not None else None


# --------------------------------------------------------------------------------------------
# Business groups that read the same in both syntaxes, given each syntax's paths
# --------------------------------------------------------------------------------------------
def item_global_ids(nodes) -> tuple[str | None, str | None, str | None]:
    """BT-157 identifiers of an item: ``(gtin, global_id, global_id_scheme)``.

    The first identifier in the GTIN scheme is the GTIN; the first one in any other scheme is
    kept with its scheme, so a product can still be matched by it. Blank ones are skipped.
    """
    gtin = global_id = global_scheme = None
    for node in nodes:
        scheme, value = node.get("schemeID"), node_text(node)
        if not value:
            continue
        if scheme == GTIN_SCHEME and gtin is None:
            gtin = value
        elif global_id is None:
            global_id, global_scheme = value, scheme
    return gtin, global_id, global_scheme


@dataclass(frozen=True)
class AllowancePaths:
    """One syntax's paths of an allowance/charge (BG-20/21/27/28) and of its VAT category."""

    indicator: Q
    amount: Q
    base: Q
    percent: Q
    reason: Q
    reason_code: Q
    tax: Q  # the VAT category element under the allowance/charge
    tax_category: Q  # under ``tax``
    tax_rate: Q  # under ``tax``


def read_allowance(
    el, paths: AllowancePaths, source: str | None, *, with_tax: bool
) -> AllowanceCharge:
    """An allowance or charge; ``with_tax`` for document level (line level has no VAT)."""
    is_charge = charge_indicator(paths.indicator.text(el), source)
    what = "charge" if is_charge else "allowance"
    tax = paths.tax.first(el) if with_tax else None
    return AllowanceCharge(
        is_charge=is_charge,
        amount=req_decimal(paths.amount.text(el), f"{what} amount", source),
        base_amount=to_decimal(paths.base.text(el), f"{what} base amount", source),
        percent=to_decimal(paths.percent.text(el), f"{what} percent", source),
        reason=paths.reason.text(el),
        reason_code=paths.reason_code.text(el),
        vat_category=opt_text(tax, paths.tax_category),
        vat_rate=opt_decimal(tax, paths.tax_rate, f"{what} VAT rate", source),
    )


@dataclass(frozen=True)
class TotalsPaths:
    """One syntax's paths of the document totals (BG-22), except the tax total (BT-110)."""

    lines: Q
    allowances: Q
    charges: Q
    basis: Q
    grand: Q
    prepaid: Q
    rounding: Q
    due: Q


def read_totals(
    el, paths: TotalsPaths, tax_total: Decimal | None, source: str | None
) -> DocumentTotals:
    """BG-22 from the totals element, with BT-110 as each syntax found it."""
    return DocumentTotals(
        line_total=req_decimal(paths.lines.text(el), "line total (BT-106)", source),
        # absent BT-107/108 read as zero; check_totals then flags a file that has document
        # allowances/charges but leaves their sums out (BR-CO-11/12)
        allowance_total=decimal_or_zero(
            paths.allowances.text(el), "allowance total (BT-107)", source
        ),
        charge_total=decimal_or_zero(paths.charges.text(el), "charge total (BT-108)", source),
        tax_basis_total=req_decimal(paths.basis.text(el), "tax basis total (BT-109)", source),
        # an invoice without VAT (category O) may leave BT-110 out: its tax is zero
        tax_total=tax_total if tax_total is not None else Decimal("0"),
        grand_total=req_decimal(paths.grand.text(el), "grand total (BT-112)", source),
        prepaid=decimal_or_zero(paths.prepaid.text(el), "prepaid amount (BT-113)", source),
        rounding=decimal_or_zero(paths.rounding.text(el), "rounding amount (BT-114)", source),
        due_payable=req_decimal(paths.due.text(el), "amount due (BT-115)", source),
    )


# --------------------------------------------------------------------------------------------
# Payment terms conventions shared by both syntaxes
# --------------------------------------------------------------------------------------------
#: XRechnung's structured Skonto line in BT-20, e.g. ``#SKONTO#TAGE=14#PROZENT=2.00#``
#: (optionally ``#BASISBETRAG=...#``). Several lines may follow each other; the first is the
#: shortest period (the best discount), which is what "Skonto percent + days" means.
_SKONTO = re.compile(
    r"#SKONTO#TAGE=(?P<days>\d+)#PROZENT=(?P<percent>\d+(?:\.\d+)?)#", re.IGNORECASE
)
_NOTE_SUBJECT = re.compile(r"^#[A-Z]{3}#")


def skonto_from_text(text: str | None) -> tuple[Decimal, int] | None:
    """(percent, days) of the first ``#SKONTO#`` line, or ``None``. Prose is not guessed at."""
    if not text:
        return None
    match = _SKONTO.search(text)
    if not match:
        return None
    return Decimal(match.group("percent")), int(match.group("days"))


def strip_note_subject(note: str) -> str:
    """UBL notes carry the subject code inline (``#AAI#text``); CII has it in its own element.

    Both readers give the content only, so a note reads the same whatever the syntax.
    """
    return _NOTE_SUBJECT.sub("", note, count=1).strip()


def build_payment_terms(
    description: str | None,
    due_date: dt.date | None,
    discount: tuple[Decimal, int | None] | None,
    issue_date: dt.date,
) -> PaymentTerms | None:
    """BT-20 / BT-9 plus Skonto; ``net_days`` is the due date's distance from the issue date.

    ``net_days`` is derived, not guessed: it is only set when the file states a due date on or
    after the issue date, because Visma.net terms are expressed in days.
    """
    if description is None and due_date is None and discount is None:
        return None
    net_days = (due_date - issue_date).days if due_date and due_date >= issue_date else None
    return PaymentTerms(
        description=description,
        due_date=due_date,
        discount_percent=discount[0] if discount else None,
        discount_days=discount[1] if discount else None,
        net_days=net_days,
    )
