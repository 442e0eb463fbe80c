"""UN/CEFACT Cross Industry Invoice (CII D16B) -> :class:`bbvisma.records.Document`.

The syntax of Factur-X / ZUGFeRD 2.x (the XML inside the PDF) and of XRechnung CII. Paths follow
the EN 16931 CII binding; the BT numbers next to each read say which business term it is. Profiles
beyond EN 16931 (ZUGFeRD EXTENDED) add a few header elements that change the totals -- the
logistics service charge -- and those are read too, because leaving them out would make a correct
invoice fail the totals check.
"""

from __future__ import annotations

from bbvisma.records import (
    Address,
    AllowanceCharge,
    Characteristic,
    Classification,
    Contact,
    Document,
    DocumentLine,
    DocumentTotals,
    Party,
    PaymentMeans,
    PaymentTerms,
    PrecedingInvoice,
    TaxSubtotal,
)

from ._base import (
    CAUSE_NO_LINES,
    GTIN_SCHEME,
    AllowancePaths,
    Q,
    TotalsPaths,
    build_payment_terms,
    cii_date,
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
    to_decimal,
)

__all__ = ["GTIN_SCHEME", "parse_cii"]  # GTIN_SCHEME: re-exported, it used to live here

# --------------------------------------------------------------------------------------------
# Compiled paths (relative to the element named in the comment)
# --------------------------------------------------------------------------------------------
# root
_PROFILE = Q("rsm:ExchangedDocumentContext/ram:GuidelineSpecifiedDocumentContextParameter/ram:ID")
_DOC = Q("rsm:ExchangedDocument")
_TX = Q("rsm:SupplyChainTradeTransaction")
# rsm:ExchangedDocument
_DOC_ID = Q("ram:ID")
_DOC_TYPE = Q("ram:TypeCode")
_DOC_DATE = Q("ram:IssueDateTime/udt:DateTimeString")
_DOC_NOTES = Q("ram:IncludedNote/ram:Content")
# rsm:SupplyChainTradeTransaction
_LINES = Q("ram:IncludedSupplyChainTradeLineItem")
_AGREEMENT = Q("ram:ApplicableHeaderTradeAgreement")
_DELIVERY = Q("ram:ApplicableHeaderTradeDelivery")
_SETTLEMENT = Q("ram:ApplicableHeaderTradeSettlement")
# ram:ApplicableHeaderTradeAgreement
_BUYER_REF = Q("ram:BuyerReference")
_SELLER = Q("ram:SellerTradeParty")
_BUYER = Q("ram:BuyerTradeParty")
_ORDER_REF = Q("ram:BuyerOrderReferencedDocument/ram:IssuerAssignedID")
_SALES_ORDER_REF = Q("ram:SellerOrderReferencedDocument/ram:IssuerAssignedID")
_CONTRACT_REF = Q("ram:ContractReferencedDocument/ram:IssuerAssignedID")
_PROJECT_REF = Q("ram:SpecifiedProcuringProject/ram:ID")
# ram:ApplicableHeaderTradeDelivery
_SHIP_TO = Q("ram:ShipToTradeParty")
_DELIVERY_DATE = Q("ram:ActualDeliverySupplyChainEvent/ram:OccurrenceDateTime/udt:DateTimeString")
_DESPATCH_REF = Q("ram:DespatchAdviceReferencedDocument/ram:IssuerAssignedID")
_DELIVERY_NOTE_REF = Q("ram:DeliveryNoteReferencedDocument/ram:IssuerAssignedID")
# ram:ApplicableHeaderTradeSettlement
_CURRENCY = Q("ram:InvoiceCurrencyCode")
_TAX_CURRENCY = Q("ram:TaxCurrencyCode")
_PAYMENT_REF = Q("ram:PaymentReference")
_PAYMENT_MEANS = Q("ram:SpecifiedTradeSettlementPaymentMeans")
_TAXES = Q("ram:ApplicableTradeTax")
_DOC_ALLOWANCES = Q("ram:SpecifiedTradeAllowanceCharge")
_LOGISTICS_CHARGES = Q("ram:SpecifiedLogisticsServiceCharge")
_PAYMENT_TERMS = Q("ram:SpecifiedTradePaymentTerms")
_SUMMATION = Q("ram:SpecifiedTradeSettlementHeaderMonetarySummation")
_PRECEDING = Q("ram:InvoiceReferencedDocument")
# ram:InvoiceReferencedDocument
_PRECEDING_ID = Q("ram:IssuerAssignedID")
_PRECEDING_DATE = Q("ram:FormattedIssueDateTime/qdt:DateTimeString")
# ram:SpecifiedTradeSettlementPaymentMeans
_PM_CODE = Q("ram:TypeCode")
_PM_TEXT = Q("ram:Information")
_PM_PAYEE_IBAN = Q("ram:PayeePartyCreditorFinancialAccount/ram:IBANID")
_PM_PAYEE_ACCOUNT = Q("ram:PayeePartyCreditorFinancialAccount/ram:ProprietaryID")
_PM_PAYER_IBAN = Q("ram:PayerPartyDebtorFinancialAccount/ram:IBANID")
_PM_BIC = Q("ram:PayeeSpecifiedCreditorFinancialInstitution/ram:BICID")
# ram:SpecifiedTradePaymentTerms
_PT_DESCRIPTION = Q("ram:Description")
_PT_DUE = Q("ram:DueDateDateTime/udt:DateTimeString")
_PT_MANDATE = Q("ram:DirectDebitMandateID")
_PT_DISCOUNT = Q("ram:ApplicableTradePaymentDiscountTerms")
_PT_DISCOUNT_PERCENT = Q("ram:CalculationPercent")
_PT_DISCOUNT_PERIOD = Q("ram:BasisPeriodMeasure")
# ram:SpecifiedTradeSettlementHeaderMonetarySummation
_SUM_TAX = Q("ram:TaxTotalAmount")
_TOTALS_PATHS = TotalsPaths(
    lines=Q("ram:LineTotalAmount"),
    allowances=Q("ram:AllowanceTotalAmount"),
    charges=Q("ram:ChargeTotalAmount"),
    basis=Q("ram:TaxBasisTotalAmount"),
    grand=Q("ram:GrandTotalAmount"),
    prepaid=Q("ram:TotalPrepaidAmount"),
    rounding=Q("ram:RoundingAmount"),
    due=Q("ram:DuePayableAmount"),
)
# ram:ApplicableTradeTax (header subtotal or line tax) / ram:CategoryTradeTax
_TAX_CATEGORY = Q("ram:CategoryCode")
_TAX_RATE = Q("ram:RateApplicablePercent")
_TAX_BASIS = Q("ram:BasisAmount")
_TAX_AMOUNT = Q("ram:CalculatedAmount")
_TAX_EXEMPTION = Q("ram:ExemptionReason")
_TAX_EXEMPTION_CODE = Q("ram:ExemptionReasonCode")
# ram:SpecifiedTradeAllowanceCharge / ram:AppliedTradeAllowanceCharge
_ALLOWANCE_PATHS = AllowancePaths(
    indicator=Q("ram:ChargeIndicator/udt:Indicator"),
    amount=Q("ram:ActualAmount"),
    base=Q("ram:BasisAmount"),
    percent=Q("ram:CalculationPercent"),
    reason=Q("ram:Reason"),
    reason_code=Q("ram:ReasonCode"),
    tax=Q("ram:CategoryTradeTax"),
    tax_category=_TAX_CATEGORY,
    tax_rate=_TAX_RATE,
)
# ram:SpecifiedLogisticsServiceCharge (ZUGFeRD EXTENDED)
_LS_AMOUNT = Q("ram:AppliedAmount")
_LS_DESCRIPTION = Q("ram:Description")
_LS_TAX = Q("ram:AppliedTradeTax")
# parties (ram:*TradeParty)
_P_IDS = Q("ram:ID")
_P_GLOBAL_IDS = Q("ram:GlobalID")
_P_NAME = Q("ram:Name")
_P_LEGAL_ID = Q("ram:SpecifiedLegalOrganization/ram:ID")
_P_TRADING_NAME = Q("ram:SpecifiedLegalOrganization/ram:TradingBusinessName")
_P_CONTACT = Q("ram:DefinedTradeContact")
_P_ADDRESS = Q("ram:PostalTradeAddress")
_P_URI = Q("ram:URIUniversalCommunication/ram:URIID")
_P_TAX_REGS = Q("ram:SpecifiedTaxRegistration/ram:ID")
_C_NAME = Q("ram:PersonName")
_C_DEPARTMENT = Q("ram:DepartmentName")
_C_PHONE = Q("ram:TelephoneUniversalCommunication/ram:CompleteNumber")
_C_EMAIL = Q("ram:EmailURIUniversalCommunication/ram:URIID")
_A_LINE1 = Q("ram:LineOne")
_A_LINE2 = Q("ram:LineTwo")
_A_LINE3 = Q("ram:LineThree")
_A_POSTCODE = Q("ram:PostcodeCode")
_A_CITY = Q("ram:CityName")
_A_COUNTRY = Q("ram:CountryID")
_A_SUBDIVISION = Q("ram:CountrySubDivisionName")
# ram:IncludedSupplyChainTradeLineItem
_L_ID = Q("ram:AssociatedDocumentLineDocument/ram:LineID")
_L_NOTE = Q("ram:AssociatedDocumentLineDocument/ram:IncludedNote/ram:Content")
_L_PRODUCT = Q("ram:SpecifiedTradeProduct")
_L_AGREEMENT = Q("ram:SpecifiedLineTradeAgreement")
_L_QUANTITY = Q("ram:SpecifiedLineTradeDelivery/ram:BilledQuantity")
_L_SETTLEMENT = Q("ram:SpecifiedLineTradeSettlement")
# ram:SpecifiedTradeProduct
_PR_GLOBAL_IDS = Q("ram:GlobalID")
_PR_SELLER_ID = Q("ram:SellerAssignedID")
_PR_BUYER_ID = Q("ram:BuyerAssignedID")
_PR_NAME = Q("ram:Name")
_PR_DESCRIPTION = Q("ram:Description")
_PR_CHARACTERISTICS = Q("ram:ApplicableProductCharacteristic")
_PR_CHAR_NAME = Q("ram:Description")
_PR_CHAR_VALUE = Q("ram:Value")
_PR_CLASSIFICATIONS = Q("ram:DesignatedProductClassification")
_PR_CLASS_CODE = Q("ram:ClassCode")
_PR_CLASS_NAME = Q("ram:ClassName")
_PR_ORIGIN = Q("ram:OriginTradeCountry/ram:ID")
# ram:SpecifiedLineTradeAgreement
_LA_ORDER_LINE = Q("ram:BuyerOrderReferencedDocument/ram:LineID")
_LA_GROSS = Q("ram:GrossPriceProductTradePrice/ram:ChargeAmount")
_LA_GROSS_BASE_QTY = Q("ram:GrossPriceProductTradePrice/ram:BasisQuantity")
_LA_NET = Q("ram:NetPriceProductTradePrice/ram:ChargeAmount")
_LA_NET_BASE_QTY = Q("ram:NetPriceProductTradePrice/ram:BasisQuantity")
# ram:SpecifiedLineTradeSettlement
_LS_TAXES = Q("ram:ApplicableTradeTax")
_LS_PERIOD_START = Q("ram:BillingSpecifiedPeriod/ram:StartDateTime/udt:DateTimeString")
_LS_PERIOD_END = Q("ram:BillingSpecifiedPeriod/ram:EndDateTime/udt:DateTimeString")
_LS_ALLOWANCES = Q("ram:SpecifiedTradeAllowanceCharge")
_LS_NET_AMOUNT = Q("ram:SpecifiedTradeSettlementLineMonetarySummation/ram:LineTotalAmount")

#: Guideline ids (BT-24) of the profiles that carry no lines by design.
_LINELESS_PROFILES = ("minimum", "basicwl")


def parse_cii(root, source: str | None = None) -> Document:
    """Read a ``rsm:CrossIndustryInvoice`` element into a Document (totals not yet checked)."""
    doc_el = required(_DOC.first(root), "rsm:ExchangedDocument", source)
    tx = required(_TX.first(root), "rsm:SupplyChainTradeTransaction", source)
    agreement = required(_AGREEMENT.first(tx), "ram:ApplicableHeaderTradeAgreement", source)
    delivery = _DELIVERY.first(tx)
    settlement = required(_SETTLEMENT.first(tx), "ram:ApplicableHeaderTradeSettlement", source)

    profile = _PROFILE.text(root)
    type_code = required(_DOC_TYPE.text(doc_el), "document type code (BT-3)", source)
    line_els = _LINES.all(tx)
    _refuse_lineless(profile, type_code, len(line_els), source)

    currency = required(_CURRENCY.text(settlement), "invoice currency (BT-5)", source)
    issue_date = required(
        cii_date(_DOC_DATE.first(doc_el), "issue date (BT-2)", source), "issue date (BT-2)", source
    )
    seller_el = required(_SELLER.first(agreement), "seller (BG-4)", source)
    buyer_el = required(_BUYER.first(agreement), "buyer (BG-7)", source)
    ship_to_el = _SHIP_TO.first(delivery) if delivery is not None else None

    terms_els = _PAYMENT_TERMS.all(settlement)
    mandate = next((m for m in (_PT_MANDATE.text(t) for t in terms_els) if m), None)

    return Document(
        syntax="CII",
        profile=profile,
        type_code=type_code,
        number=required(_DOC_ID.text(doc_el), "invoice number (BT-1)", source),
        issue_date=issue_date,
        currency=currency,
        tax_currency=_TAX_CURRENCY.text(settlement),
        buyer_reference=_BUYER_REF.text(agreement),
        order_ref=_ORDER_REF.text(agreement),
        sales_order_ref=_SALES_ORDER_REF.text(agreement),
        # BT-16; ZUGFeRD EXTENDED's delivery note (Lieferschein) stands in when no despatch
        # advice is given, because it is the reference a customer quotes for the delivery.
        despatch_advice_ref=(
            opt_text(delivery, _DESPATCH_REF) or opt_text(delivery, _DELIVERY_NOTE_REF)
        ),
        contract_ref=_CONTRACT_REF.text(agreement),
        project_ref=_PROJECT_REF.text(agreement),
        payment_reference=_PAYMENT_REF.text(settlement),
        preceding_invoices=[
            PrecedingInvoice(
                number=required(_PRECEDING_ID.text(p), "preceding invoice number (BT-25)", source),
                date=cii_date(_PRECEDING_DATE.first(p), "preceding invoice date (BT-26)", source),
            )
            for p in _PRECEDING.all(settlement)
        ],
        notes=_DOC_NOTES.texts(doc_el),
        seller=_party(seller_el),
        buyer=_party(buyer_el),
        ship_to=_party(ship_to_el) if ship_to_el is not None else None,
        delivery_date=(
            cii_date(_DELIVERY_DATE.first(delivery), "delivery date (BT-72)", source)
            if delivery is not None
            else None
        ),
        payment_means=[_payment_means(pm, mandate) for pm in _PAYMENT_MEANS.all(settlement)],
        payment_terms=_payment_terms(terms_els, issue_date, source),
        lines=[_line(el, source) for el in line_els],
        allowances_charges=_document_allowances(settlement, source),
        tax_subtotals=[_tax_subtotal(t, source) for t in _TAXES.all(settlement)],
        totals=_totals(settlement, currency, source),
    )


# --------------------------------------------------------------------------------------------
# Header parts
# --------------------------------------------------------------------------------------------
def _refuse_lineless(profile: str | None, type_code: str, n_lines: int, source: str | None):
    """MINIMUM / BASIC WL files and type 751 are booking aids, not invoices with lines."""
    lowered = (profile or "").lower()
    lineless_profile = next((p for p in _LINELESS_PROFILES if lowered.endswith(p)), None)
    if type_code == "751" or lineless_profile or n_lines == 0:
        what = []
        if type_code == "751":
            what.append('type 751 "invoice information"')
        if lineless_profile:
            what.append(f"profile {profile}")
        what.append(f"{n_lines} lines")
        raise refuse(
            "no invoice lines to read (" + ", ".join(what) + "): the file only carries "
            "document totals, not the lines the sync needs",
            CAUSE_NO_LINES,
            source,
            type_code=type_code,
            profile=profile,
        )


def _party(el) -> Party:
    """BG-4 / BG-7 / BG-13: any CII trade party."""
    vat_id = tax_number = None
    for reg in _P_TAX_REGS.all(el):
        scheme, value = reg.get("schemeID"), node_text(reg)
        if scheme == "VA" and vat_id is None:
            vat_id = value
        elif scheme == "FC" and tax_number is None:
            tax_number = value
    uri = _P_URI.first(el)
    contact_el = _P_CONTACT.first(el)
    address_el = _P_ADDRESS.first(el)
    return Party(
        name=_P_NAME.text(el),
        trading_name=_P_TRADING_NAME.text(el),
        ids=_P_IDS.texts(el),
        global_ids=[
            (g.get("schemeID") or "", node_text(g)) for g in _P_GLOBAL_IDS.all(el) if node_text(g)
        ],
        vat_id=vat_id,
        tax_number=tax_number,
        legal_id=_P_LEGAL_ID.text(el),
        electronic_address=node_text(uri),
        electronic_address_scheme=uri.get("schemeID") if uri is not None else None,
        address=_address(address_el) if address_el is not None else None,
        contact=_contact(contact_el) if contact_el is not None else None,
    )


def _contact(el) -> Contact:
    return Contact(
        name=_C_NAME.text(el) or _C_DEPARTMENT.text(el),
        phone=_C_PHONE.text(el),
        email=_C_EMAIL.text(el),
    )


def _address(el) -> Address:
    return Address(
        line1=_A_LINE1.text(el),
        line2=_A_LINE2.text(el),
        line3=_A_LINE3.text(el),
        postal_code=_A_POSTCODE.text(el),
        city=_A_CITY.text(el),
        country_code=_A_COUNTRY.text(el),
        subdivision=_A_SUBDIVISION.text(el),
    )


def _payment_means(el, mandate: str | None) -> PaymentMeans:
    """BG-16. The direct-debit mandate (BT-89) sits in the payment terms in CII."""
    code = _PM_CODE.text(el) or ""
    return PaymentMeans(
        code=code,
        text=_PM_TEXT.text(el),
        # BT-84 payee account; for a direct debit the debited account (BT-91) is the one named
        iban=_PM_PAYEE_IBAN.text(el) or _PM_PAYEE_ACCOUNT.text(el) or _PM_PAYER_IBAN.text(el),
        bic=_PM_BIC.text(el),
        mandate_ref=mandate,
    )


def _payment_terms(terms_els, issue_date, source) -> PaymentTerms | None:
    """BT-20 / BT-9 and the Skonto terms.

    EXTENDED files may carry several terms (one per discount step); their descriptions are
    joined, the latest due date is the net due date, and a structured
    ``ApplicableTradePaymentDiscountTerms`` wins over the XRechnung ``#SKONTO#`` text line.
    """
    if not terms_els:
        return None
    descriptions: list[str] = []
    due_dates = []
    discount = None
    for t in terms_els:
        descriptions.extend(_PT_DESCRIPTION.texts(t))
        due = cii_date(_PT_DUE.first(t), "payment due date (BT-9)", source)
        if due is not None:
            due_dates.append(due)
        for d in _PT_DISCOUNT.all(t):
            percent = to_decimal(_PT_DISCOUNT_PERCENT.text(d), "Skonto percent", source)
            period = _PT_DISCOUNT_PERIOD.first(d)
            days = _days(period, source)
            if discount is None and percent is not None:
                discount = (percent, days)
    description = "\n".join(descriptions) or None
    if discount is None:
        discount = skonto_from_text(description)
    return build_payment_terms(
        description, max(due_dates) if due_dates else None, discount, issue_date
    )


def _days(period, source) -> int | None:
    """A ``BasisPeriodMeasure`` in days (unit DAY or none; weeks converted)."""
    value = to_decimal(node_text(period), "Skonto period", source)
    if value is None:
        return None
    unit = period.get("unitCode")
    factor = {None: 1, "DAY": 1, "WEE": 7}.get(unit)
    if factor is None:
        return None  # months etc. have no fixed day count; the description still says it
    return int(value * factor)


def _document_allowances(settlement, source) -> list[AllowanceCharge]:
    """BG-20 / BG-21, plus ZUGFeRD EXTENDED logistics service charges (always charges)."""
    result = [
        read_allowance(el, _ALLOWANCE_PATHS, source, with_tax=True)
        for el in _DOC_ALLOWANCES.all(settlement)
    ]
    for el in _LOGISTICS_CHARGES.all(settlement):
        tax = _LS_TAX.first(el)
        result.append(
            AllowanceCharge(
                is_charge=True,
                amount=req_decimal(_LS_AMOUNT.text(el), "logistics charge amount", source),
                reason=_LS_DESCRIPTION.text(el),
                vat_category=opt_text(tax, _TAX_CATEGORY),
                vat_rate=opt_decimal(tax, _TAX_RATE, "logistics charge VAT rate", source),
            )
        )
    return result


def _tax_subtotal(el, source) -> TaxSubtotal:
    """BG-23."""
    return TaxSubtotal(
        category=required(_TAX_CATEGORY.text(el), "VAT category (BT-118)", source),
        rate=to_decimal(_TAX_RATE.text(el), "VAT rate (BT-119)", source),
        basis=req_decimal(_TAX_BASIS.text(el), "VAT basis (BT-116)", source),
        amount=req_decimal(_TAX_AMOUNT.text(el), "VAT amount (BT-117)", source),
        exemption_reason=_TAX_EXEMPTION.text(el),
        exemption_reason_code=_TAX_EXEMPTION_CODE.text(el),
    )


def _totals(settlement, currency: str, source) -> DocumentTotals:
    """BG-22. BT-110 is the tax total in the invoice currency; BT-111 (tax currency) is not it."""
    el = required(_SUMMATION.first(settlement), "document totals (BG-22)", source)
    tax_total = None
    for t in _SUM_TAX.all(el):
        if t.get("currencyID") in (None, currency):
            tax_total = to_decimal(node_text(t), "tax total (BT-110)", source)
            break
    return read_totals(el, _TOTALS_PATHS, tax_total, source)


# --------------------------------------------------------------------------------------------
# Lines
# --------------------------------------------------------------------------------------------
def _line(el, source) -> DocumentLine:
    """BG-25: one ``IncludedSupplyChainTradeLineItem``."""
    line_id = required(_L_ID.text(el), "line id (BT-126)", source)
    where = f"line {line_id}"
    product = required(_L_PRODUCT.first(el), f"{where}: item (BG-31)", source)
    agreement = required(_L_AGREEMENT.first(el), f"{where}: price details (BG-29)", source)
    settlement = required(_L_SETTLEMENT.first(el), f"{where}: line settlement", source)
    qty_el = required(_L_QUANTITY.first(el), f"{where}: quantity (BT-129)", source)

    gtin, global_id, global_scheme = item_global_ids(_PR_GLOBAL_IDS.all(product))

    tax = _LS_TAXES.first(settlement)
    base_qty = _LA_NET_BASE_QTY.text(agreement) or _LA_GROSS_BASE_QTY.text(agreement)
    notes = _L_NOTE.texts(el)
    return DocumentLine(
        line_id=line_id,
        sku=_PR_SELLER_ID.text(product),
        buyer_item_id=_PR_BUYER_ID.text(product),
        gtin=gtin,
        global_id=global_id,
        global_id_scheme=global_scheme,
        name=required(_PR_NAME.text(product), f"{where}: item name (BT-153)", source),
        description=_PR_DESCRIPTION.text(product),
        note="\n".join(notes) or None,
        quantity=req_decimal(node_text(qty_el), f"{where}: quantity (BT-129)", source),
        unit_code=qty_el.get("unitCode"),
        net_price=req_decimal(_LA_NET.text(agreement), f"{where}: net price (BT-146)", source),
        gross_price=to_decimal(_LA_GROSS.text(agreement), f"{where}: gross price (BT-148)", source),
        price_base_quantity=to_decimal(base_qty, f"{where}: price base quantity (BT-149)", source),
        line_net_amount=req_decimal(
            _LS_NET_AMOUNT.text(settlement), f"{where}: net amount (BT-131)", source
        ),
        allowances_charges=[
            read_allowance(a, _ALLOWANCE_PATHS, source, with_tax=False)
            for a in _LS_ALLOWANCES.all(settlement)
        ],
        vat_category=opt_text(tax, _TAX_CATEGORY),
        vat_rate=opt_decimal(tax, _TAX_RATE, f"{where}: VAT rate (BT-152)", source),
        characteristics=[
            Characteristic(name=n, value=v)
            for n, v in (
                (_PR_CHAR_NAME.text(c), _PR_CHAR_VALUE.text(c))
                for c in _PR_CHARACTERISTICS.all(product)
            )
            if n and v is not None
        ],
        classifications=[
            Classification(
                code=code_el_text,
                list_id=code_el.get("listID"),
                list_version=code_el.get("listVersionID"),
                name=_PR_CLASS_NAME.text(c),
            )
            for c in _PR_CLASSIFICATIONS.all(product)
            for code_el in [_PR_CLASS_CODE.first(c)]
            if code_el is not None
            for code_el_text in [node_text(code_el)]
            if code_el_text
        ],
        origin_country=_PR_ORIGIN.text(product),
        order_line_ref=_LA_ORDER_LINE.text(agreement),
        period_start=cii_date(_LS_PERIOD_START.first(settlement), f"{where}: period start", source),
        period_end=cii_date(_LS_PERIOD_END.first(settlement), f"{where}: period end", source),
    )
