"""BuchhaltungsButler (source system): API client and typed records."""

from .client import DEFAULT_BASE_URL, MAX_LIMIT, BBClient
from .models import (
    BERLIN,
    BatchResult,
    Debtor,
    Receipt,
    ReceiptDetail,
    Transaction,
    TransactionDetail,
    format_berlin_datetime,
    parse_berlin_datetime,
    parse_bool,
    parse_date,
    parse_decimal,
)

__all__ = [
    "BERLIN",
    "DEFAULT_BASE_URL",
    "MAX_LIMIT",
    "BBClient",
    "BatchResult",
    "Debtor",
    "Receipt",
    "ReceiptDetail",
    "Transaction",
    "TransactionDetail",
    "format_berlin_datetime",
    "parse_berlin_datetime",
    "parse_bool",
    "parse_date",
    "parse_decimal",
]
