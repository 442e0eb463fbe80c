# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
"""The setup assistant, step by step, against both simulators served on loopback: real calls,
the APIs' own errors in plain words, choices read live from Visma.net, nothing lost when the
user leaves in the middle, and what it creates at the end."""

from unittest.mock import patch

from odoo.exceptions import AccessError, UserError
from odoo.tests import Form, tagged

from .ops_common import (
    BB_INACTIVE_KEY,
    BB_KEY,
    BB_SECRET,
    VISMA_SECRET,
    VISMA_UNLICENSED_TENANT,
    SimulatorCase,
)


@tagged("post_install", "-at_install")
class TestOpsSetupAssistant(SimulatorCase):
    def setUp(self):
        super().setUp()
        self.Setup = self.env["apicenter.setup"].with_user(self.manager)

    def new_setup(self, **vals):
        creds = self.good_credentials()
        creds.update(vals)
        return self.Setup.create(dict(creds, name="From the assistant"))

    def setup_at(self, step, **vals):
        setup = self.new_setup(**vals)
        while setup.step != step:
            setup.action_next()
        return setup

    # -- step 1: BuchhaltungsButler -----------------------------------------------------------
    def test_bb_wrong_secret_is_unknown_credentials_and_keeps_the_step(self):
        setup = self.new_setup(bb_api_secret="wrong-secret")
        setup.action_next()
        self.assertEqual(setup.step, "bb")
        self.assertEqual(setup.bb_test_state, "failed")
        self.assertIn("Unknown credentials", setup.bb_test_message)
        self.assertIn("error 3", setup.bb_test_message, "the API's own error follows")
        self.assertNotIn("wrong-secret", setup.bb_test_message)
        self.assertEqual(setup.integration_id.state, "draft")

    def test_bb_unknown_api_key_and_inactive_customer_in_plain_words(self):
        setup = self.new_setup(bb_api_key="no-such-key")
        setup.action_test_bb()
        self.assertIn("Unknown API key", setup.bb_test_message)
        self.assertIn("error 4", setup.bb_test_message)
        setup.bb_api_key = BB_INACTIVE_KEY
        self.assertEqual(setup.bb_test_state, "untested", "changed credentials need a new test")
        setup.action_test_bb()
        self.assertEqual(setup.bb_test_state, "failed")
        self.assertIn("Inactive customer", setup.bb_test_message)
        self.assertIn("error 11", setup.bb_test_message)

    def test_bb_quota_reached_in_plain_words(self):
        Integration = type(self.env["apicenter.integration"])
        real = Integration._get_client

        def one_attempt(integration, system, **options):
            # the client factory: one attempt, so the test does not wait for back-offs
            return real(integration, system, max_attempts=1, **options)

        self.addCleanup(self.bb_sim.faults.clear)
        self.bb_sim.faults.add("rate_limit", retry_after=30)
        setup = self.new_setup()
        with patch.object(Integration, "_get_client", one_attempt):
            setup.action_test_bb()
        self.assertEqual(setup.bb_test_state, "failed")
        self.assertIn("Quota reached", setup.bb_test_message)
        self.assertIn("quota", setup.bb_test_message.splitlines()[1].lower())

    def test_bb_good_credentials_pass_to_visma(self):
        setup = self.new_setup()
        setup.action_next()
        self.assertEqual((setup.step, setup.bb_test_state), ("visma", "ok"))
        self.assertIn("Connected to BuchhaltungsButler", setup.bb_test_message)
        self.assertEqual(self.bb_sim.requests.entries[-1]["path"], "/api/v1/settings/get/debtors")

    # -- step 2: Visma.net --------------------------------------------------------------------
    def test_visma_errors_in_plain_words(self):
        setup = self.setup_at("visma", visma_client_secret="wrong")
        setup.action_next()
        self.assertEqual((setup.step, setup.visma_test_state), ("visma", "failed"))
        self.assertIn("Unknown credentials", setup.visma_test_message)
        self.assertIn("invalid_client", setup.visma_test_message)
        setup.write(
            {"visma_client_secret": VISMA_SECRET, "visma_tenant_id": VISMA_UNLICENSED_TENANT}
        )
        setup.action_test_visma()
        self.assertIn("No licence", setup.visma_test_message)
        setup.write({"visma_tenant_id": "6c4a3f0e-demo-tenant", "visma_company_id": "NOPE"})
        setup.action_test_visma()
        self.assertIn("Wrong company", setup.visma_test_message)

    def test_visma_test_takes_a_token_and_reads_once(self):
        setup = self.setup_at("visma")
        self.visma_sim.requests.clear()
        setup.action_next()
        self.assertEqual((setup.step, setup.visma_test_state), ("flows", "ok"))
        self.assertIn("Muster Handel GmbH", setup.visma_test_message)
        paths = [entry["path"] for entry in self.visma_sim.requests.entries]
        self.assertEqual(paths, ["/connect/token", "/v1/branch"])

    # -- step 3 and 4: flows, questions with live choices -------------------------------------
    def test_choosing_no_flow_is_refused(self):
        setup = self.setup_at("flows", flow_customers=False, flow_orders=False)
        with self.assertRaises(UserError):
            setup.action_next()
        self.assertEqual(setup.step, "flows")

    def test_questions_offer_what_visma_lists_now(self):
        setup = self.setup_at("flows", flow_products=True, flow_stock=True, flow_shipments=True)
        self.visma_sim.carriers["GLS"] = {"carrierId": "GLS", "carrierDescription": "GLS Paket"}
        self.addCleanup(self.visma_sim.carriers.pop, "GLS")
        setup.action_next()
        self.assertEqual(setup.step, "questions")
        choices = {kind: set() for kind in ("branch", "order_type", "warehouse", "carrier")}
        for choice in setup.choice_ids:
            choices.setdefault(choice.kind, set()).add(choice.code)
        self.assertEqual(choices["branch"], {"1", "2"})
        self.assertEqual(choices["warehouse"], {"MAIN", "MUC"})
        self.assertIn("GLS", choices["carrier"], "read live, not from a list in the code")
        self.assertEqual(choices["order_type"], {"SO", "SI"})
        self.assertIn("30", choices["credit_term"])
        self.assertIn("UEB", choices["payment_method"])
        self.assertIn("WAREN", choices["item_class"])
        # the core's defaults are preselected when Visma.net lists them
        self.assertEqual(setup.credit_terms_company_id.code, "30")
        self.assertEqual(setup.item_class_goods_id.code, "WAREN")
        self.assertEqual(setup.branch_choice_id.code, "1")
        self.assertFalse(setup.choices_message)

    def test_questions_need_the_warehouse_for_managed_stock(self):
        setup = self.setup_at("questions", flow_stock=True)
        setup.warehouse_id = False
        with self.assertRaises(UserError):
            setup.action_next()
        setup.stock_mode = "unmanaged"
        setup.action_next()
        self.assertEqual(setup.step, "review")

    def test_reading_choices_again_keeps_the_answers(self):
        setup = self.setup_at("questions", flow_stock=True)
        setup.warehouse_id = setup.choice_ids.filtered(lambda c: c.code == "MUC")
        old_ids = setup.choice_ids.ids
        setup.action_reload_choices()
        self.assertFalse(set(old_ids) & set(setup.choice_ids.ids))
        self.assertEqual(setup.warehouse_id.code, "MUC")

    # -- leaving in the middle ----------------------------------------------------------------
    def test_leaving_in_the_middle_loses_nothing_and_reopening_continues(self):
        setup = self.setup_at("flows", flow_stock=True)
        setup.interval_number = 30
        # the user leaves; later the menu opens the assistant again
        action = self.Setup.action_open_assistant()
        self.assertEqual((action["res_model"], action["res_id"]), ("apicenter.setup", setup.id))
        reopened = self.Setup.browse(action["res_id"])
        self.assertEqual(reopened.step, "flows")
        self.assertEqual(reopened.interval_number, 30)
        self.assertTrue(reopened.flow_stock)
        self.assertEqual(reopened.bb_api_secret, BB_SECRET)
        integration = reopened.integration_id
        self.assertEqual(integration.sudo().bb_api_key, BB_KEY, "stored once, on the integration")
        self.assertEqual(integration.state, "draft")
        self.assertEqual(integration.with_user(self.manager).setup_id, setup)
        self.assertEqual(
            integration.with_user(self.manager).action_continue_setup()["res_id"], setup.id
        )
        # going back keeps what was entered
        reopened.action_back()
        self.assertEqual((reopened.step, reopened.visma_test_state), ("visma", "ok"))

    def test_a_finished_assistant_is_not_reopened(self):
        setup = self.setup_at("review")
        setup.action_apply()
        self.assertEqual(setup.step, "done")
        action = self.Setup.action_open_assistant()
        self.assertFalse(action.get("res_id"), "a new assistant")

    def test_the_form_walks_the_first_step(self):
        creds = self.good_credentials()
        with Form(self.Setup) as form:
            self.assertEqual(form.step, "bb")
            for name in ("bb_base_url", "bb_api_client", "bb_api_secret", "bb_api_key"):
                setattr(form, name, creds[name])
        setup = form.record
        self.assertEqual(setup.integration_id.name, "BuchhaltungsButler to Visma.net")
        self.assertEqual(setup.integration_id.sudo().bb_base_url, creds["bb_base_url"])
        setup.action_next()
        self.assertEqual(setup.step, "visma")
        with Form(setup) as form:
            for name in (
                "visma_base_url",
                "visma_token_url",
                "visma_client_id",
                "visma_client_secret",
                "visma_tenant_id",
                "visma_company_id",
            ):
                setattr(form, name, creds[name])
        setup.action_next()
        self.assertEqual(setup.step, "flows")
        with Form(setup) as form:
            form.flow_stock = True
        setup.action_next()
        with Form(setup) as form:
            self.assertEqual(form.step, "questions")
            form.stock_mode = "on_hand"
            form.warehouse_id = setup.choice_ids.filtered(lambda c: c.code == "MAIN")
        setup.action_next()
        self.assertEqual(setup.step, "review")

    # -- review and apply ---------------------------------------------------------------------
    def test_apply_creates_flows_settings_value_maps_and_schedules(self):
        setup = self.setup_at(
            "questions",
            flow_products=True,
            flow_stock=True,
            flow_shipments=True,
            interval_number=20,
        )
        pick = {c.kind + ":" + c.code: c for c in setup.choice_ids}
        setup.write(
            {
                "order_target": "sales_order",
                "order_type_id": pick["order_type:SI"].id,
                "warehouse_id": pick["warehouse:MUC"].id,
                "carrier_id": pick["carrier:DPD"].id,
                "branch_choice_id": pick["branch:2"].id,
                "credit_terms_company_id": pick["credit_term:14"].id,
                "item_class_service_id": pick["item_class:DIENST"].id,
                "update_product_info": True,
            }
        )
        setup.action_next()
        self.assertEqual(setup.step, "review")
        self.assertIn("MUC", setup.review_html)
        self.assertIn("DPD", setup.review_html)
        setup.action_apply()
        self.assertEqual(setup.step, "done")
        integration = setup.integration_id
        self.assertEqual(integration.state, "active")
        self.assertEqual(integration.visma_branch, "2")
        flows = {flow.flow_type: flow for flow in integration.flow_ids}
        self.assertEqual(set(flows), {"customers", "orders", "products", "stock", "shipments"})
        self.assertEqual(flows["orders"].visma_order_type, "SI")
        self.assertEqual(flows["orders"].order_target, "sales_order")
        self.assertEqual(flows["stock"].warehouse_id_visma, "MUC")
        self.assertEqual(flows["shipments"].default_carrier, "DPD")
        self.assertTrue(flows["products"].update_product_info)
        for flow in flows.values():
            self.assertEqual(flow.interval_number, 20)
            self.assertTrue(flow.cron_id.active, "the schedule runs")
        self.assertEqual(flows["customers"].mapping_id.code, "customers")
        maps = (
            self.env["apicenter.value.map"]
            .search([("company_id", "=", integration.company_id.id)])
            ._to_core()
        )
        self.assertEqual(maps["customer_credit_terms"]["company"], "14")
        self.assertEqual(maps["item_classes"], {"goods": "WAREN", "service": "DIENST"})
        self.assertIn(
            "Deutschland",
            self.env["apicenter.value.map"]
            .search([("code", "=", "countries")], limit=1)
            ._to_core()["countries"],
            "other tables stay as they are",
        )
        # back at review and applied again: no second flow of a type
        setup.step = "review"
        setup.action_apply()
        self.assertEqual(len(integration.flow_ids), 5)

    def test_apply_without_activation_leaves_a_draft_that_runs_on_demand(self):
        setup = self.setup_at("review", activate=False)
        setup.action_apply()
        self.assertEqual(setup.integration_id.state, "draft")
        self.assertFalse(any(setup.integration_id.flow_ids.cron_id.mapped("active")))
        self.assertEqual(len(setup.integration_id.flow_ids), 2)

    def test_integration_user_cannot_use_the_assistant(self):
        with self.assertRaises(AccessError):
            self.env["apicenter.setup"].with_user(self.user).create({"name": "x"})
