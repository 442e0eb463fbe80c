"""The flows: one class per kind of record synced from BuchhaltungsButler to Visma.net.

``FLOW_CLASSES`` maps a flow type (the Odoo flow record's ``flow_type``) to its class; the
addon looks flows up here. One line per flow, imports at the top.
"""

from __future__ import annotations

from bbvisma.engine import Flow

FLOW_CLASSES: dict[str, type[Flow]] = {}
