# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
from odoo.tests import tagged
from odoo.tests.common import TransactionCase

from bbvisma.simulators.__main__ import merged_default_seed

MODELS = [
    "apicenter.integration",
    "apicenter.flow",
    "apicenter.run",
    "apicenter.log",
    "apicenter.link",
    "apicenter.mapping",
    "apicenter.mapping.line",
    "apicenter.value.map",
    "apicenter.value.map.line",
]


@tagged("post_install", "-at_install")
class TestInstall(TransactionCase):
    def test_module_is_installed_with_its_models_and_access_rights(self):
        module = self.env["ir.module.module"].search([("name", "=", "apicenter_bb_visma")])
        self.assertEqual(module.state, "installed")
        for model in MODELS:
            access = self.env["ir.model.access"].search([("model_id.model", "=", model)])
            groups = access.group_id.mapped(lambda g: g.get_external_id()[g.id])
            self.assertIn("apicenter_bb_visma.group_apicenter_user", groups, model)
            self.assertIn("apicenter_bb_visma.group_apicenter_manager", groups, model)

    def test_top_menu_lists_integrations_flows_runs_log_configuration(self):
        root = self.env.ref("apicenter_bb_visma.menu_apicenter_root")
        self.assertEqual(root.name, "APIcenter")
        self.assertEqual(
            root.child_id.sorted("sequence").mapped("name"),
            ["Dashboard", "Integrations", "Flows", "Runs", "Activity log", "Configuration"],
        )
        config = self.env.ref("apicenter_bb_visma.menu_apicenter_config")
        self.assertEqual(config.child_id.mapped("name")[:2], ["Mappings", "Value maps"])

    def test_manager_group_implies_user_group(self):
        manager = self.env.ref("apicenter_bb_visma.group_apicenter_manager")
        user = self.env.ref("apicenter_bb_visma.group_apicenter_user")
        self.assertIn(user, manager.all_implied_ids)

    def test_purge_cron_runs_daily(self):
        cron = self.env.ref("apicenter_bb_visma.ir_cron_purge_expired")
        self.assertEqual((cron.interval_number, cron.interval_type), (1, "days"))
        self.assertEqual(cron.code.strip(), "model._cron_purge_expired()")

    def test_new_integration_defaults_to_the_real_endpoints_and_30_days(self):
        integration = self.env["apicenter.integration"].create({"name": "Defaults"})
        self.assertEqual(integration.bb_base_url, "https://webapp.buchhaltungsbutler.de/api/v1")
        self.assertEqual(integration.visma_base_url, "https://api.finance.visma.net")
        self.assertEqual(integration.visma_token_url, "https://connect.visma.com/connect/token")
        self.assertEqual(integration.log_retention_days, 30)
        self.assertEqual(integration.state, "draft")

    def test_demo_integration_points_at_the_loopback_simulators(self):
        module = self.env["ir.module.module"].search([("name", "=", "apicenter_bb_visma")])
        if not module.demo:
            self.skipTest("the database was installed without demo data")
        demo = self.env.ref("apicenter_bb_visma.demo_integration").sudo()
        self.assertEqual(demo.bb_base_url, "http://127.0.0.1:8071/api/v1")
        self.assertEqual(demo.visma_token_url, "http://127.0.0.1:8072/connect/token")
        # the credentials are those of the simulators' default seeds
        seed = merged_default_seed()
        bb, visma = seed["buchhaltungsbutler"], seed["vismanet"]["credentials"]
        self.assertEqual(
            (demo.bb_api_client, demo.bb_api_secret),
            (bb["api_clients"][0]["api_client"], bb["api_clients"][0]["api_secret"]),
        )
        self.assertEqual(demo.bb_api_key, bb["companies"][0]["api_key"])
        self.assertEqual(
            (demo.visma_client_id, demo.visma_client_secret),
            (visma["clients"][0]["client_id"], visma["clients"][0]["client_secret"]),
        )
        self.assertEqual(demo.visma_tenant_id, visma["tenants"][0]["tenant_id"])
        self.assertIn(demo.visma_company_id, visma["tenants"][0]["companies"])
        self.assertEqual(demo.state, "draft")
        self.assertTrue(demo.flow_ids)
        # a draft integration's flows have their scheduled action, but it is paused
        self.assertFalse(demo.flow_ids.cron_id.filtered("active"))
