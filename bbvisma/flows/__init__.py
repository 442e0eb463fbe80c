"""The flows: one class per kind of record synced from BuchhaltungsButler to Visma.net.

``FLOW_CLASSES`` maps a flow type (the Odoo flow record's ``flow_type``) to its class; the
addon looks flows up here. One line per flow, imports at the top. Default mappings and value
maps: :mod:`bbvisma.flows.defaults`.
"""

from __future__ import annotations

from bbvisma.engine import Flow

from .customers import CustomersFlow
from .orders import OrdersFlow
from .prices import PricesFlow
from .products import ProductsFlow
from .shipments import ShipmentsFlow
from .stock import StockFlow

FLOW_CLASSES: dict[str, type[Flow]] = {
    "customers": CustomersFlow,
    "orders": OrdersFlow,
    "products": ProductsFlow,
    "stock": StockFlow,
    "prices": PricesFlow,
    "shipments": ShipmentsFlow,
}
