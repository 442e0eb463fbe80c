# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
"""Shared pieces of the operator tests (test_ops_*): a scriptable flow run through the real
engine and sink, and the two simulators served on loopback."""

from unittest.mock import patch

import bbvisma.flows
from bbvisma.engine import Flow, SourceItem
from bbvisma.errors import AuthError, DataError, ServerError
from bbvisma.simulators.buchhaltungsbutler import BBSimulator
from bbvisma.simulators.common import serve
from bbvisma.simulators.vismanet import VismaSimulator

from .common import ApicenterCase

#: the simulators' seed credentials (bbvisma/simulators/seed/*.json)
BB_CLIENT = "bbsim-client"
BB_SECRET = "bbsim-secret-5f3a9c2e7d41"
BB_KEY = "bbsim-key-demo-gmbh-8c1d2e"
BB_INACTIVE_KEY = "bbsim-key-inactive-4b7a0f"
VISMA_CLIENT = "bbvisma-demo"
VISMA_SECRET = "demo-secret-not-for-production"
VISMA_TENANT = "6c4a3f0e-demo-tenant"
VISMA_UNLICENSED_TENANT = "unlicensed-company-tenant"
VISMA_COMPANY = "DEMO1"


class FakeClient:
    """Stands in for BBClient/VismaClient: ItemsFlow does not call them."""

    def __init__(self, system, **options):
        self.system = system

    def close(self):
        pass


class ItemsFlow(Flow):
    """Reads ``ITEMS`` (key -> data) on every run; each record's data says how it behaves:
    ``missing_sku`` parks it with that SKU as cause, ``fail`` fails its create (503)."""

    entity = "order"
    ITEMS = {}

    def source_items(self, since):
        for key, data in list(self.ITEMS.items()):
            yield SourceItem(key, None, data, label=data.get("name", ""))

    def fetch_item(self, source_key):
        if source_key not in self.ITEMS:
            raise DataError(f"record {source_key} is gone", cause=f"gone:{source_key}")
        return SourceItem(source_key, None, self.ITEMS[source_key])

    def build(self, item, link):
        sku = item.data.get("missing_sku")
        if sku:
            raise DataError(
                f"SKU {sku} does not exist in Visma.net: create the item, then retry",
                cause=f"missing_sku:{sku}",
            )
        return dict(item.data), {"number": item.key, "name": item.data.get("name", item.key)}

    def create(self, item, payload):  # pylint: disable=method-required-super
        if item.data.get("auth"):
            raise AuthError("Visma.net refused the token", system="visma", status=401, code="x")
        if item.data.get("fail"):
            raise ServerError("Visma.net answered 503", system="visma", status=503)
        return f"V-{item.key}", {"number": f"V-{item.key}"}

    def update(self, item, payload, link):
        return {"updated": link.target_key}


class ItemsFlowCase(ApicenterCase):
    """Flows of type orders run ItemsFlow through the real engine, sink and monitoring."""

    def setUp(self):
        super().setUp()
        Integration = type(self.env["apicenter.integration"])
        self.startPatcher(
            patch.object(Integration, "_get_client", lambda rec, system, **kw: FakeClient(system))
        )
        self.startPatcher(
            patch.object(bbvisma.flows, "FLOW_CLASSES", {"orders": ItemsFlow}, create=True)
        )
        self.startPatcher(patch.object(ItemsFlow, "ITEMS", {}))
        self.partner = self.env["res.partner"].create({"name": "Ops", "email": "ops@example.com"})
        self.integration.notify_partner_ids = self.partner
        self.flow = self.make_flow(name="Orders", flow_type="orders")

    def run_flow(self, items, flow=None, **kw):
        ItemsFlow.ITEMS.clear()
        ItemsFlow.ITEMS.update(items)
        run = (flow or self.flow)._run(**kw)
        self.env.invalidate_all()  # written through the sink's own cursor
        return run

    def notifications(self, flow=None):
        """Messages of the flow that notified someone, newest first."""
        return (flow or self.flow).message_ids.filtered("partner_ids")


class SimulatorCase(ApicenterCase):
    """Both simulators served on loopback for the class, with their default seeds."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.bb_sim = BBSimulator.with_default_seed()
        cls.visma_sim = VismaSimulator.demo()
        cls.served = serve([(0, cls.bb_sim), (0, cls.visma_sim)])
        cls.addClassCleanup(cls.served.stop)
        cls.bb_url, cls.visma_url = cls.served.urls

    def good_credentials(self):
        return {
            "bb_base_url": f"{self.bb_url}/api/v1",
            "bb_api_client": BB_CLIENT,
            "bb_api_secret": BB_SECRET,
            "bb_api_key": BB_KEY,
            "visma_base_url": self.visma_url,
            "visma_token_url": f"{self.visma_url}/connect/token",
            "visma_client_id": VISMA_CLIENT,
            "visma_client_secret": VISMA_SECRET,
            "visma_tenant_id": VISMA_TENANT,
            "visma_company_id": VISMA_COMPANY,
        }

    def visma_writes(self):
        """Requests to Visma.net that change data (the token request is not one)."""
        return [
            entry
            for entry in self.visma_sim.requests.entries
            if entry["method"] in ("POST", "PUT", "PATCH", "DELETE")
            and not entry["path"].startswith("/connect/")
        ]

    def bb_writes(self):
        """BuchhaltungsButler reads are POSTs too: its writes are the add/update endpoints."""
        return [
            entry
            for entry in self.bb_sim.requests.entries
            if "/add" in entry["path"] or "/update" in entry["path"]
        ]
