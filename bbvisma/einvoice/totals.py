"""Do the lines add up? EN 16931's calculation rules, checked to the cent.

A document whose lines do not reproduce its totals must never reach Visma.net: the lines would be
booked and the amounts would differ from what the customer was billed. The reader refuses such a
file (cause ``totals_mismatch``) with every broken rule named, and the CLI shows both the stated
and the recomputed totals so a human can see where the difference comes from.
"""

from __future__ import annotations

from decimal import Decimal

from bbvisma.records import Document

from ._base import cents, dec_sum


def computed_totals(doc: Document) -> dict[str, Decimal]:
    """The document totals recomputed from lines, document allowances/charges and VAT subtotals.

    ``tax_total`` is the sum of the VAT subtotals' amounts (BT-117); the stated prepaid amount
    and rounding (BT-113/114) are taken as given, since nothing else in the file determines them.
    """
    line_total = dec_sum(line.line_net_amount for line in doc.lines)
    allowance_total = dec_sum(a.amount for a in doc.allowances_charges if not a.is_charge)
    charge_total = dec_sum(a.amount for a in doc.allowances_charges if a.is_charge)
    tax_basis_total = line_total - allowance_total + charge_total
    tax_total = dec_sum(s.amount for s in doc.tax_subtotals)
    grand_total = tax_basis_total + tax_total
    return {
        "line_total": line_total,
        "allowance_total": allowance_total,
        "charge_total": charge_total,
        "tax_basis_total": tax_basis_total,
        "tax_subtotal_basis": dec_sum(s.basis for s in doc.tax_subtotals),
        "tax_total": tax_total,
        "grand_total": grand_total,
        "due_payable": grand_total - doc.totals.prepaid + doc.totals.rounding,
    }


def check_totals(doc: Document) -> list[str]:
    """Every broken calculation rule as a sentence with both numbers; empty when consistent.

    Rules (EN 16931 BR-CO-10 to BR-CO-16): lines -> BT-106; document allowances -> BT-107,
    charges -> BT-108; BT-106 - BT-107 + BT-108 = BT-109; VAT subtotal bases -> BT-109 and
    amounts -> BT-110; BT-109 + BT-110 = BT-112; BT-112 - BT-113 + BT-114 = BT-115.
    """
    t = doc.totals
    computed = computed_totals(doc)
    checks = [
        (
            f"sum of the {len(doc.lines)} line net amounts",
            computed["line_total"],
            "line total (BT-106)",
            t.line_total,
        ),
        (
            "sum of document allowances",
            computed["allowance_total"],
            "allowance total (BT-107)",
            t.allowance_total,
        ),
        (
            "sum of document charges",
            computed["charge_total"],
            "charge total (BT-108)",
            t.charge_total,
        ),
        (
            "line total - allowances + charges",
            t.line_total - t.allowance_total + t.charge_total,
            "tax basis total (BT-109)",
            t.tax_basis_total,
        ),
        (
            f"sum of the {len(doc.tax_subtotals)} VAT subtotal bases",
            computed["tax_subtotal_basis"],
            "tax basis total (BT-109)",
            t.tax_basis_total,
        ),
        (
            f"sum of the {len(doc.tax_subtotals)} VAT subtotal amounts",
            computed["tax_total"],
            "tax total (BT-110)",
            t.tax_total,
        ),
        (
            "tax basis + tax total",
            t.tax_basis_total + t.tax_total,
            "grand total (BT-112)",
            t.grand_total,
        ),
        (
            "grand total - prepaid + rounding",
            t.grand_total - t.prepaid + t.rounding,
            "amount due (BT-115)",
            t.due_payable,
        ),
    ]
    return [
        f"{left} is {cents(lv)}, but the {right} is {cents(rv)}"
        for left, lv, right, rv in checks
        if cents(lv) != cents(rv)
    ]
