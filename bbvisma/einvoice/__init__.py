"""The e-invoice reader: ZUGFeRD / Factur-X PDF, XRechnung / EN 16931 CII and UBL.

BuchhaltungsButler stores a receipt's e-invoice file; its lines, SKUs, buyer contact and VAT
split are what the flows need and what BB's own API does not give. :func:`read_document` turns
that file into one :class:`bbvisma.records.Document` -- read once per change and shared by every
flow -- or refuses it with :class:`~bbvisma.errors.UnsupportedDocument` and a precise ``cause``:

=================== ==========================================================================
``no_lines``        MINIMUM / BASIC WL profile or type 751: totals only, nothing to sync
``zugferd1``        legacy ZUGFeRD 1.0 (``CrossIndustryDocument``), not EN 16931
``no_xml``          a PDF without an embedded invoice XML (a plain PDF invoice)
``malformed_pdf``   starts like a PDF but cannot be read as one
``unknown_syntax``  XML, but neither CII nor UBL Invoice/CreditNote (e.g. an Order-X order)
``malformed_xml``   not well-formed XML (lxml's message and line number in the reason)
``missing_field``   a mandatory business term is absent (invoice number, a line's net amount..)
``invalid_value``   an amount, quantity or date that cannot be read
``totals_mismatch`` the lines do not reproduce the stated totals (see :mod:`.totals`)
=================== ==========================================================================

Document types 384 (corrected) and 389 (self-billed) are read like any invoice: what to do with
them is a flow decision, not a reading problem.
"""

from __future__ import annotations

import io
from pathlib import Path

from lxml import etree
from pypdf import PdfReader
from pypdf.errors import PyPdfError

from bbvisma.errors import UnsupportedDocument
from bbvisma.records import Document

from ._base import (
    CAUSE_INVALID_VALUE,
    CAUSE_MALFORMED_PDF,
    CAUSE_MALFORMED_XML,
    CAUSE_MISSING_FIELD,
    CAUSE_NO_LINES,
    CAUSE_NO_XML,
    CAUSE_TOTALS_MISMATCH,
    CAUSE_UNKNOWN_SYNTAX,
    CAUSE_ZUGFERD1,
    NS,
    XML_PARSER,
    refuse,
)
from .cii import parse_cii
from .totals import check_totals, computed_totals
from .ubl import parse_ubl

__all__ = [
    "CAUSES",
    "check_totals",
    "computed_totals",
    "extract_xml",
    "read_document",
    "read_path",
]

CAUSES = (
    CAUSE_NO_LINES,
    CAUSE_ZUGFERD1,
    CAUSE_NO_XML,
    CAUSE_MALFORMED_PDF,
    CAUSE_UNKNOWN_SYNTAX,
    CAUSE_MALFORMED_XML,
    CAUSE_MISSING_FIELD,
    CAUSE_INVALID_VALUE,
    CAUSE_TOTALS_MISMATCH,
)

_CII_ROOT = etree.QName(NS["rsm"], "CrossIndustryInvoice").text
_UBL_ROOTS = {
    etree.QName(NS["inv"], "Invoice").text,
    etree.QName(NS["cn"], "CreditNote").text,
}
_ZUGFERD1_NS = "urn:ferd:CrossIndustryDocument:invoice:1p0"


def read_document(data: bytes, filename: str | None = None) -> Document:
    """Read an e-invoice file (PDF with embedded XML, or the XML itself) into a Document.

    ``filename`` only names the file in error messages; the content decides what it is. The
    totals are checked before the document is returned (:func:`check_totals`), so a caller
    never receives lines that do not add up.
    """
    if _is_pdf(data):
        _, root = _embedded_invoice(data, filename)
    else:
        root = _parse_xml(data, filename)
    doc = _parse_root(root, filename)
    problems = check_totals(doc)
    if problems:
        raise refuse(
            f"invoice {doc.number}: the totals do not add up: " + "; ".join(problems),
            CAUSE_TOTALS_MISMATCH,
            filename,
            problems=problems,
        )
    return doc


def read_path(path: str | Path) -> Document:
    """:func:`read_document` for a file on disk (the CLI and tests)."""
    path = Path(path)
    return read_document(path.read_bytes(), path.name)


def extract_xml(pdf: bytes, filename: str | None = None) -> tuple[str, bytes]:
    """(attachment name, bytes) of the invoice XML embedded in a ZUGFeRD / Factur-X PDF."""
    name, root = _embedded_invoice(pdf, filename)
    return name, etree.tostring(root, xml_declaration=True, encoding="UTF-8")


#: Attachment names the standards prescribe, in the order they are tried; any other ``*.xml``
#: attachment is tried afterwards and accepted only when its root is an invoice root.
_KNOWN_ATTACHMENTS = ("factur-x.xml", "zugferd-invoice.xml", "xrechnung.xml")


def _embedded_invoice(pdf: bytes, filename: str | None):
    """The invoice XML attached to a PDF/A-3, as (attachment name, parsed root).

    This is factur-x's own lookup (``facturx.get_xml_from_pdf`` walks pypdf's
    ``attachment_list`` the same way), done here directly: importing ``facturx`` pulls in
    python-stdnum 1.19, whose data files cannot be opened once Odoo's import hook has wrapped
    its loader -- i.e. in every Odoo process and under pytest-odoo. Recognising the root
    element instead of factur-x's flavour check also lets a ZUGFeRD 1.0 file through to its
    precise refusal.
    """
    try:
        attachments = [
            (a.name or "", a.content) for a in PdfReader(io.BytesIO(pdf)).attachment_list
        ]
    except (PyPdfError, ValueError, KeyError, TypeError) as exc:
        raise refuse(f"the PDF cannot be read: {exc}", CAUSE_MALFORMED_PDF, filename)
    candidates = sorted(
        (a for a in attachments if a[0].lower().endswith(".xml") and a[1]),
        key=lambda a: (
            _KNOWN_ATTACHMENTS.index(a[0].lower()) if a[0].lower() in _KNOWN_ATTACHMENTS else 99
        ),
    )
    first_error = None
    for name, content in candidates:
        try:
            root = _parse_xml(content, filename, f"the XML attached to the PDF ({name})")
        except UnsupportedDocument as exc:
            first_error = first_error or exc
            continue
        if _is_invoice_root(root):
            return name, root
    if first_error:
        raise first_error
    found = ", ".join(a[0] for a in attachments) or "no attachments"
    raise refuse(
        f"the PDF has no embedded Factur-X/ZUGFeRD/XRechnung XML ({found}): it is a plain PDF "
        "invoice, without lines to read",
        CAUSE_NO_XML,
        filename,
    )


def _parse_xml(data: bytes, filename: str | None, what: str = "XML"):
    """Parse without entity expansion, and refuse a DTD outright.

    EN 16931 files never carry a DOCTYPE; one that declares entities is either broken or an
    attack (XXE, billion laughs), and an unexpanded ``&name;`` would end up inside a value.
    """
    try:
        root = etree.fromstring(data, XML_PARSER)
    except etree.XMLSyntaxError as exc:
        raise refuse(
            f"{what} is not well-formed: {exc.msg} (line {exc.lineno}, column {exc.offset})",
            CAUSE_MALFORMED_XML,
            filename,
            line=exc.lineno,
        )
    if root.getroottree().docinfo.internalDTD is not None:
        raise refuse(
            f"{what} carries a DOCTYPE with its own definitions; e-invoices have none and "
            "entities are not expanded",
            CAUSE_MALFORMED_XML,
            filename,
        )
    return root


def _is_pdf(data: bytes) -> bool:
    # The header may follow a few bytes of junk (the PDF spec allows it within the first 1024).
    return b"%PDF-" in data[:1024]


def _is_invoice_root(root) -> bool:
    tag = root.tag if isinstance(root.tag, str) else ""
    return tag == _CII_ROOT or tag in _UBL_ROOTS or _is_zugferd1(root)


def _is_zugferd1(root) -> bool:
    qname = etree.QName(root)
    return qname.namespace == _ZUGFERD1_NS or qname.localname == "CrossIndustryDocument"


def _parse_root(root, filename: str | None) -> Document:
    tag = root.tag if isinstance(root.tag, str) else ""
    if tag == _CII_ROOT:
        return parse_cii(root, filename)
    if tag in _UBL_ROOTS:
        return parse_ubl(root, filename)
    if _is_zugferd1(root):
        raise refuse(
            "ZUGFeRD 1.0 (CrossIndustryDocument) is a pre-EN 16931 syntax and is not read; "
            "ask the sender for ZUGFeRD 2.x / Factur-X or XRechnung",
            CAUSE_ZUGFERD1,
            filename,
        )
    qname = etree.QName(root)
    raise refuse(
        f"XML root {{{qname.namespace}}}{qname.localname} is neither a CII CrossIndustryInvoice "
        "nor a UBL Invoice/CreditNote",
        CAUSE_UNKNOWN_SYNTAX,
        filename,
        root=tag,
    )
