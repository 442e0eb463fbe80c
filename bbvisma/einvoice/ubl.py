"""OASIS UBL 2.1 Invoice / CreditNote -> :class:`bbvisma.records.Document`.

Peppol BIS 3 and XRechnung UBL. A CreditNote differs in three names (``CreditNoteTypeCode``,
``CreditNoteLine``, ``CreditedQuantity``) and keeps its due date in the payment means; the paths
below are written once with both spellings (``inv:...|cn:...``) rather than twice.

XRechnung's extension (``cac:SubInvoiceLine``, business case 04.01a) nests a breakdown under a
line. Only the top-level lines are read -- they carry the invoiced amounts -- but every level of
the breakdown is checked against its parent, so a breakdown that disagrees is not waved through.
"""

from __future__ import annotations

from decimal import Decimal

from bbvisma.records import (
    Address,
    Characteristic,
    Classification,
    Contact,
    Document,
    DocumentLine,
    DocumentTotals,
    Party,
    PaymentMeans,
    PrecedingInvoice,
    TaxSubtotal,
)

from ._base import (
    CAUSE_NO_LINES,
    CAUSE_TOTALS_MISMATCH,
    AllowancePaths,
    Q,
    TotalsPaths,
    build_payment_terms,
    cents,
    dec_sum,
    iso_date,
    item_global_ids,
    node_text,
    opt_decimal,
    opt_text,
    read_allowance,
    read_totals,
    refuse,
    req_decimal,
    required,
    skonto_from_text,
    strip_note_subject,
    to_decimal,
)

# --------------------------------------------------------------------------------------------
# Compiled paths (relative to the root unless the comment says otherwise)
# --------------------------------------------------------------------------------------------
_PROFILE = Q("cbc:CustomizationID")
_ID = Q("cbc:ID")
_ISSUE_DATE = Q("cbc:IssueDate")
_TYPE = Q("cbc:InvoiceTypeCode|cbc:CreditNoteTypeCode")
_DUE_DATE = Q("cbc:DueDate")  # Invoice only
_PM_DUE_DATE = Q("cac:PaymentMeans/cbc:PaymentDueDate")  # CreditNote
_NOTES = Q("cbc:Note")
_CURRENCY = Q("cbc:DocumentCurrencyCode")
_TAX_CURRENCY = Q("cbc:TaxCurrencyCode")
_BUYER_REF = Q("cbc:BuyerReference")
_ORDER_REF = Q("cac:OrderReference/cbc:ID")
_SALES_ORDER_REF = Q("cac:OrderReference/cbc:SalesOrderID")
_DESPATCH_REF = Q("cac:DespatchDocumentReference/cbc:ID")
_CONTRACT_REF = Q("cac:ContractDocumentReference/cbc:ID")
_PROJECT_REF = Q("cac:ProjectReference/cbc:ID")
_PRECEDING = Q("cac:BillingReference/cac:InvoiceDocumentReference")
_SELLER = Q("cac:AccountingSupplierParty/cac:Party")
_BUYER = Q("cac:AccountingCustomerParty/cac:Party")
_DELIVERY = Q("cac:Delivery")
_PAYMENT_MEANS = Q("cac:PaymentMeans")
_PAYMENT_TERMS_NOTES = Q("cac:PaymentTerms/cbc:Note")
_DOC_ALLOWANCES = Q("cac:AllowanceCharge")
_TAX_TOTALS = Q("cac:TaxTotal")
_MONETARY = Q("cac:LegalMonetaryTotal")
_LINES = Q("cac:InvoiceLine|cac:CreditNoteLine")
# cac:BillingReference/cac:InvoiceDocumentReference
_PRECEDING_DATE = Q("cbc:IssueDate")
# cac:Delivery
_DELIVERY_DATE = Q("cbc:ActualDeliveryDate")
_DL_ID = Q("cac:DeliveryLocation/cbc:ID")
_DL_ADDRESS = Q("cac:DeliveryLocation/cac:Address")
_DL_NAME = Q("cac:DeliveryParty/cac:PartyName/cbc:Name")
# cac:PaymentMeans
_PM_CODE = Q("cbc:PaymentMeansCode")
_PM_PAYMENT_ID = Q("cbc:PaymentID")  # BT-83
_PM_ACCOUNT = Q("cac:PayeeFinancialAccount/cbc:ID")
_PM_BIC = Q("cac:PayeeFinancialAccount/cac:FinancialInstitutionBranch/cbc:ID")
_PM_MANDATE = Q("cac:PaymentMandate/cbc:ID")
_PM_PAYER_ACCOUNT = Q("cac:PaymentMandate/cac:PayerFinancialAccount/cbc:ID")
_PM_CARD = Q("cac:CardAccount/cbc:PrimaryAccountNumberID")
# cac:TaxTotal
_TT_AMOUNT = Q("cbc:TaxAmount")
_TT_SUBTOTALS = Q("cac:TaxSubtotal")
_TS_BASIS = Q("cbc:TaxableAmount")
_TS_AMOUNT = Q("cbc:TaxAmount")
_TS_CATEGORY = Q("cac:TaxCategory")
# cac:TaxCategory / cac:ClassifiedTaxCategory
_TC_ID = Q("cbc:ID")
_TC_PERCENT = Q("cbc:Percent")
_TC_EXEMPTION = Q("cbc:TaxExemptionReason")
_TC_EXEMPTION_CODE = Q("cbc:TaxExemptionReasonCode")
# cac:AllowanceCharge
_ALLOWANCE_PATHS = AllowancePaths(
    indicator=Q("cbc:ChargeIndicator"),
    amount=Q("cbc:Amount"),
    base=Q("cbc:BaseAmount"),
    percent=Q("cbc:MultiplierFactorNumeric"),
    reason=Q("cbc:AllowanceChargeReason"),
    reason_code=Q("cbc:AllowanceChargeReasonCode"),
    tax=Q("cac:TaxCategory"),
    tax_category=_TC_ID,
    tax_rate=_TC_PERCENT,
)
# cac:LegalMonetaryTotal
_TOTALS_PATHS = TotalsPaths(
    lines=Q("cbc:LineExtensionAmount"),
    allowances=Q("cbc:AllowanceTotalAmount"),
    charges=Q("cbc:ChargeTotalAmount"),
    basis=Q("cbc:TaxExclusiveAmount"),
    grand=Q("cbc:TaxInclusiveAmount"),
    prepaid=Q("cbc:PrepaidAmount"),
    rounding=Q("cbc:PayableRoundingAmount"),
    due=Q("cbc:PayableAmount"),
)
# cac:Party
_P_ENDPOINT = Q("cbc:EndpointID")
_P_IDENTIFICATIONS = Q("cac:PartyIdentification/cbc:ID")
_P_TRADING_NAME = Q("cac:PartyName/cbc:Name")
_P_REGISTRATION_NAME = Q("cac:PartyLegalEntity/cbc:RegistrationName")
_P_LEGAL_ID = Q("cac:PartyLegalEntity/cbc:CompanyID")
_P_TAX_SCHEMES = Q("cac:PartyTaxScheme")
_P_TAX_COMPANY_ID = Q("cbc:CompanyID")
_P_TAX_SCHEME_ID = Q("cac:TaxScheme/cbc:ID")
_P_ADDRESS = Q("cac:PostalAddress")
_P_CONTACT = Q("cac:Contact")
_C_NAME = Q("cbc:Name")
_C_PHONE = Q("cbc:Telephone")
_C_EMAIL = Q("cbc:ElectronicMail")
_A_STREET = Q("cbc:StreetName")
_A_ADDITIONAL = Q("cbc:AdditionalStreetName")
_A_LINE = Q("cac:AddressLine/cbc:Line")
_A_CITY = Q("cbc:CityName")
_A_POSTCODE = Q("cbc:PostalZone")
_A_SUBDIVISION = Q("cbc:CountrySubentity")
_A_COUNTRY = Q("cac:Country/cbc:IdentificationCode")
# cac:InvoiceLine / cac:CreditNoteLine
_L_ID = Q("cbc:ID")
_L_NOTE = Q("cbc:Note")
_L_QUANTITY = Q("cbc:InvoicedQuantity|cbc:CreditedQuantity")
_L_AMOUNT = Q("cbc:LineExtensionAmount")
_L_PERIOD_START = Q("cac:InvoicePeriod/cbc:StartDate")
_L_PERIOD_END = Q("cac:InvoicePeriod/cbc:EndDate")
_L_ORDER_LINE = Q("cac:OrderLineReference/cbc:LineID")
_L_ALLOWANCES = Q("cac:AllowanceCharge")
_L_ITEM = Q("cac:Item")
_L_PRICE = Q("cac:Price")
_L_SUB_LINES = Q("cac:SubInvoiceLine")
# cac:Item
_I_NAME = Q("cbc:Name")
_I_DESCRIPTION = Q("cbc:Description")
_I_BUYER_ID = Q("cac:BuyersItemIdentification/cbc:ID")
_I_SELLER_ID = Q("cac:SellersItemIdentification/cbc:ID")
_I_STANDARD_IDS = Q("cac:StandardItemIdentification/cbc:ID")
_I_ORIGIN = Q("cac:OriginCountry/cbc:IdentificationCode")
_I_CLASSIFICATIONS = Q("cac:CommodityClassification/cbc:ItemClassificationCode")
_I_TAX = Q("cac:ClassifiedTaxCategory")
_I_PROPERTIES = Q("cac:AdditionalItemProperty")
_I_PROP_NAME = Q("cbc:Name")
_I_PROP_VALUE = Q("cbc:Value")
# cac:Price
_PR_AMOUNT = Q("cbc:PriceAmount")
_PR_BASE_QTY = Q("cbc:BaseQuantity")
_PR_ALLOWANCE = Q("cac:AllowanceCharge")


def parse_ubl(root, source: str | None = None) -> Document:
    """Read a UBL ``Invoice`` or ``CreditNote`` root element into a Document."""
    profile = _PROFILE.text(root)
    type_code = required(_TYPE.text(root), "document type code (BT-3)", source)
    line_els = _LINES.all(root)
    if type_code == "751" or not line_els:
        raise refuse(
            f"no invoice lines to read (type {type_code}, {len(line_els)} lines): the file "
            "only carries document totals, not the lines the sync needs",
            CAUSE_NO_LINES,
            source,
            type_code=type_code,
            profile=profile,
        )
    currency = required(_CURRENCY.text(root), "document currency (BT-5)", source)
    issue_date = required(
        iso_date(_ISSUE_DATE.text(root), "issue date (BT-2)", source), "issue date (BT-2)", source
    )
    delivery = _DELIVERY.first(root)
    due_date = iso_date(_DUE_DATE.text(root) or _PM_DUE_DATE.text(root), "due date (BT-9)", source)
    terms_text = "\n".join(_PAYMENT_TERMS_NOTES.texts(root)) or None
    payment_means_els = _PAYMENT_MEANS.all(root)

    return Document(
        syntax="UBL",
        profile=profile,
        type_code=type_code,
        number=required(_ID.text(root), "invoice number (BT-1)", source),
        issue_date=issue_date,
        currency=currency,
        tax_currency=_TAX_CURRENCY.text(root),
        buyer_reference=_BUYER_REF.text(root),
        order_ref=_ORDER_REF.text(root),
        sales_order_ref=_SALES_ORDER_REF.text(root),
        despatch_advice_ref=_DESPATCH_REF.text(root),
        contract_ref=_CONTRACT_REF.text(root),
        project_ref=_PROJECT_REF.text(root),
        payment_reference=next(
            (t for t in (_PM_PAYMENT_ID.text(pm) for pm in payment_means_els) if t), None
        ),
        preceding_invoices=[
            PrecedingInvoice(
                number=required(_ID.text(p), "preceding invoice number (BT-25)", source),
                date=iso_date(_PRECEDING_DATE.text(p), "preceding invoice date (BT-26)", source),
            )
            for p in _PRECEDING.all(root)
        ],
        notes=[strip_note_subject(n) for n in _NOTES.texts(root)],
        seller=_party(required(_SELLER.first(root), "seller (BG-4)", source)),
        buyer=_party(required(_BUYER.first(root), "buyer (BG-7)", source)),
        ship_to=_ship_to(delivery) if delivery is not None else None,
        delivery_date=(
            iso_date(_DELIVERY_DATE.text(delivery), "delivery date (BT-72)", source)
            if delivery is not None
            else None
        ),
        payment_means=[_payment_means(pm) for pm in payment_means_els],
        payment_terms=build_payment_terms(
            terms_text, due_date, skonto_from_text(terms_text), issue_date
        ),
        lines=[_line(el, source) for el in line_els],
        allowances_charges=[
            read_allowance(el, _ALLOWANCE_PATHS, source, with_tax=True)
            for el in _DOC_ALLOWANCES.all(root)
        ],
        tax_subtotals=_tax_subtotals(root, currency, source),
        totals=_totals(root, currency, source),
    )


# --------------------------------------------------------------------------------------------
# Header parts
# --------------------------------------------------------------------------------------------
def _party(el) -> Party:
    """BG-4 / BG-7. The legal name (BT-27/BT-44) is the registration name; PartyName is the
    trading name (BT-28/BT-45) and only stands in when no registration name is given."""
    vat_id = tax_number = None
    for scheme_el in _P_TAX_SCHEMES.all(el):
        company_id = _P_TAX_COMPANY_ID.text(scheme_el)
        if (_P_TAX_SCHEME_ID.text(scheme_el) or "").upper() == "VAT":
            vat_id = vat_id or company_id
        else:
            tax_number = tax_number or company_id
    ids, global_ids = [], []
    for ident in _P_IDENTIFICATIONS.all(el):
        value = node_text(ident)
        if not value:
            continue
        scheme = ident.get("schemeID")
        if scheme:
            global_ids.append((scheme, value))
        else:
            ids.append(value)
    endpoint = _P_ENDPOINT.first(el)
    address_el = _P_ADDRESS.first(el)
    contact_el = _P_CONTACT.first(el)
    trading_name = _P_TRADING_NAME.text(el)
    return Party(
        name=_P_REGISTRATION_NAME.text(el) or trading_name,
        trading_name=trading_name,
        ids=ids,
        global_ids=global_ids,
        vat_id=vat_id,
        tax_number=tax_number,
        legal_id=_P_LEGAL_ID.text(el),
        electronic_address=node_text(endpoint),
        electronic_address_scheme=endpoint.get("schemeID") if endpoint is not None else None,
        address=_address(address_el) if address_el is not None else None,
        contact=(
            Contact(
                name=_C_NAME.text(contact_el),
                phone=_C_PHONE.text(contact_el),
                email=_C_EMAIL.text(contact_el),
            )
            if contact_el is not None
            else None
        ),
    )


def _address(el) -> Address:
    return Address(
        line1=_A_STREET.text(el),
        line2=_A_ADDITIONAL.text(el),
        line3=_A_LINE.text(el),
        postal_code=_A_POSTCODE.text(el),
        city=_A_CITY.text(el),
        country_code=_A_COUNTRY.text(el),
        subdivision=_A_SUBDIVISION.text(el),
    )


def _ship_to(delivery) -> Party | None:
    """BG-13: the deliver-to party, or ``None`` when the delivery only carries a date."""
    location_id = _DL_ID.first(delivery)
    address_el = _DL_ADDRESS.first(delivery)
    name = _DL_NAME.text(delivery)
    if location_id is None and address_el is None and name is None:
        return None
    ids, global_ids = [], []
    if node_text(location_id):
        scheme = location_id.get("schemeID")
        if scheme:
            global_ids.append((scheme, node_text(location_id)))
        else:
            ids.append(node_text(location_id))
    return Party(
        name=name,
        ids=ids,
        global_ids=global_ids,
        address=_address(address_el) if address_el is not None else None,
    )


def _payment_means(el) -> PaymentMeans:
    """BG-16; the code's ``name`` attribute is the payment means text (BT-82)."""
    code_el = _PM_CODE.first(el)
    return PaymentMeans(
        code=node_text(code_el) or "",
        text=code_el.get("name") if code_el is not None else None,
        iban=_PM_ACCOUNT.text(el) or _PM_PAYER_ACCOUNT.text(el) or _PM_CARD.text(el),
        bic=_PM_BIC.text(el),
        mandate_ref=_PM_MANDATE.text(el),
    )


def _doc_tax_total(root, currency: str):
    """The ``cac:TaxTotal`` in the document currency (a second one may be in BT-6's currency)."""
    for tt in _TAX_TOTALS.all(root):
        amount_el = _TT_AMOUNT.first(tt)
        if amount_el is not None and amount_el.get("currencyID") in (None, currency):
            return tt
    return None


def _tax_subtotals(root, currency: str, source) -> list[TaxSubtotal]:
    """BG-23."""
    tt = _doc_tax_total(root, currency)
    result = []
    for sub in _TT_SUBTOTALS.all(tt) if tt is not None else []:
        category = required(_TS_CATEGORY.first(sub), "VAT category (BT-118)", source)
        result.append(
            TaxSubtotal(
                category=required(_TC_ID.text(category), "VAT category (BT-118)", source),
                rate=to_decimal(_TC_PERCENT.text(category), "VAT rate (BT-119)", source),
                basis=req_decimal(_TS_BASIS.text(sub), "VAT basis (BT-116)", source),
                amount=req_decimal(_TS_AMOUNT.text(sub), "VAT amount (BT-117)", source),
                exemption_reason=_TC_EXEMPTION.text(category),
                exemption_reason_code=_TC_EXEMPTION_CODE.text(category),
            )
        )
    return result


def _totals(root, currency: str, source) -> DocumentTotals:
    """BG-22 from ``cac:LegalMonetaryTotal`` and the document-currency ``cac:TaxTotal``."""
    el = required(_MONETARY.first(root), "document totals (BG-22)", source)
    tt = _doc_tax_total(root, currency)
    tax_total = None
    if tt is not None:
        tax_total = to_decimal(_TT_AMOUNT.text(tt), "tax total (BT-110)", source)
    return read_totals(el, _TOTALS_PATHS, tax_total, source)


# --------------------------------------------------------------------------------------------
# Lines
# --------------------------------------------------------------------------------------------
def _line(el, source) -> DocumentLine:
    """BG-25: one ``InvoiceLine`` / ``CreditNoteLine`` (its sub-lines checked, not returned)."""
    line_id = required(_L_ID.text(el), "line id (BT-126)", source)
    where = f"line {line_id}"
    item = required(_L_ITEM.first(el), f"{where}: item (BG-31)", source)
    price = required(_L_PRICE.first(el), f"{where}: price details (BG-29)", source)
    qty_el = required(_L_QUANTITY.first(el), f"{where}: quantity (BT-129)", source)
    net_amount = req_decimal(_L_AMOUNT.text(el), f"{where}: net amount (BT-131)", source)
    _check_sub_lines(el, net_amount, where, source)

    gtin, global_id, global_scheme = item_global_ids(_I_STANDARD_IDS.all(item))

    net_price = req_decimal(_PR_AMOUNT.text(price), f"{where}: net price (BT-146)", source)
    # BT-148: the gross price is the price allowance's base amount; without one, net + discount
    gross_price = None
    price_allowance = _PR_ALLOWANCE.first(price)
    if price_allowance is not None:
        gross_price = to_decimal(
            _ALLOWANCE_PATHS.base.text(price_allowance), f"{where}: gross price (BT-148)", source
        )
        discount = to_decimal(
            _ALLOWANCE_PATHS.amount.text(price_allowance),
            f"{where}: price discount (BT-147)",
            source,
        )
        if gross_price is None and discount is not None:
            gross_price = net_price + discount
    tax = _I_TAX.first(item)
    return DocumentLine(
        line_id=line_id,
        sku=_I_SELLER_ID.text(item),
        buyer_item_id=_I_BUYER_ID.text(item),
        gtin=gtin,
        global_id=global_id,
        global_id_scheme=global_scheme,
        name=required(_I_NAME.text(item), f"{where}: item name (BT-153)", source),
        description=_I_DESCRIPTION.text(item),
        note="\n".join(_L_NOTE.texts(el)) or None,
        quantity=req_decimal(node_text(qty_el), f"{where}: quantity (BT-129)", source),
        unit_code=qty_el.get("unitCode"),
        net_price=net_price,
        gross_price=gross_price,
        price_base_quantity=to_decimal(
            _PR_BASE_QTY.text(price), f"{where}: price base quantity (BT-149)", source
        ),
        line_net_amount=net_amount,
        allowances_charges=[
            read_allowance(a, _ALLOWANCE_PATHS, source, with_tax=False)
            for a in _L_ALLOWANCES.all(el)
        ],
        vat_category=opt_text(tax, _TC_ID),
        vat_rate=opt_decimal(tax, _TC_PERCENT, f"{where}: VAT rate (BT-152)", source),
        characteristics=[
            Characteristic(name=n, value=v)
            for n, v in (
                (_I_PROP_NAME.text(p), _I_PROP_VALUE.text(p)) for p in _I_PROPERTIES.all(item)
            )
            if n and v is not None
        ],
        classifications=[
            Classification(
                code=node_text(c),
                list_id=c.get("listID"),
                list_version=c.get("listVersionID"),
                name=c.get("name"),
            )
            for c in _I_CLASSIFICATIONS.all(item)
            if node_text(c)
        ],
        origin_country=_I_ORIGIN.text(item),
        order_line_ref=_L_ORDER_LINE.text(el),
        period_start=iso_date(_L_PERIOD_START.text(el), f"{where}: period start", source),
        period_end=iso_date(_L_PERIOD_END.text(el), f"{where}: period end", source),
    )


def _check_sub_lines(el, amount: Decimal, where: str, source) -> None:
    """XRechnung extension: each level of ``SubInvoiceLine`` must add up to its parent."""
    subs = _L_SUB_LINES.all(el)
    if not subs:
        return
    amounts = []
    for sub in subs:
        sub_id = _L_ID.text(sub) or "?"
        sub_where = f"{where} / sub-line {sub_id}"
        sub_amount = req_decimal(_L_AMOUNT.text(sub), f"{sub_where}: net amount", source)
        _check_sub_lines(sub, sub_amount, sub_where, source)
        amounts.append(sub_amount)
    total = dec_sum(amounts)
    if cents(total) != cents(amount):
        raise refuse(
            f"{where}: its {len(subs)} sub-lines add up to {total}, the line says {amount}",
            CAUSE_TOTALS_MISMATCH,
            source,
        )
