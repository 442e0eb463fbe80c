# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
"""The settings the Odoo flow hands to the pure flows: exactly the keys each flow reads, with
the same defaults, so that a flow behaves in Odoo as in the core's tests and the bench."""

from datetime import timedelta

from odoo.exceptions import ValidationError
from odoo.tests import tagged

from bbvisma.flows import FLOW_CLASSES
from bbvisma.flows.products import IMAGES_NOTE
from bbvisma.mapper import Mapping

from ..models.apicenter_flow import FLOW_TYPES, TYPE_SETTINGS
from .common import ApicenterCase

#: keys whose Odoo value comes from other records, not from a field default
DERIVED = {"branch", "customer_settings", "customer_mapping", "documents_since"}


@tagged("post_install", "-at_install")
class TestFlowSettings(ApicenterCase):
    def test_every_flow_type_gets_exactly_the_keys_its_flow_reads(self):
        self.assertEqual(set(TYPE_SETTINGS), {code for code, _label in FLOW_TYPES})
        for flow_type, flow_class in FLOW_CLASSES.items():
            flow = self.make_flow(name=flow_type, flow_type=flow_type)
            self.assertEqual(
                set(flow._flow_settings()), set(flow_class.SETTINGS_DEFAULTS), flow_type
            )

    def test_a_new_flow_has_the_defaults_of_the_core(self):
        for flow_type, flow_class in FLOW_CLASSES.items():
            settings = self.make_flow(name=flow_type, flow_type=flow_type)._flow_settings()
            for key, default in flow_class.SETTINGS_DEFAULTS.items():
                if key in DERIVED:
                    continue
                with self.subTest(flow_type=flow_type, key=key):
                    self.assertEqual(settings[key], default)

    def test_unchecked_boxes_reach_the_flow_as_false_and_empty_fields_as_none(self):
        flow = self.make_flow(match_by_email=False, update_on_match=False)
        settings = flow._flow_settings()
        self.assertIs(settings["match_by_email"], False)
        self.assertIs(settings["update_on_match"], False)
        orders = self.make_flow(
            name="Orders", flow_type="orders", fallback_item=False, date_from="2026-01-31"
        )
        settings = orders._flow_settings()
        self.assertIsNone(settings["fallback_item"])
        self.assertEqual(settings["date_from"], "2026-01-31")
        self.assertEqual(settings["totals_tolerance"], "0.01")

    def test_opening_balances_are_lines_of_sku_and_quantity(self):
        flow = self.make_flow(
            name="Stock",
            flow_type="stock",
            opening_balance_ids=[
                (0, 0, {"sku": " JB007 ", "quantity": 12}),
                (0, 0, {"sku": "KR3M", "quantity": 2.5}),
            ],
        )
        self.assertEqual(flow._flow_settings()["opening_balances"], {"JB007": "12", "KR3M": "2.5"})

    def test_orders_create_customers_with_the_customers_flow_settings_and_mapping(self):
        orders = self.make_flow(name="Orders", flow_type="orders")
        self.assertIsNone(orders._flow_settings()["customer_settings"])
        customers = self.make_flow(company_rule="person", match_by_email=False)
        settings = orders._flow_settings()
        self.assertEqual(settings["customer_settings"], customers._flow_settings())
        self.assertIsInstance(settings["customer_mapping"], Mapping)
        self.assertEqual(settings["customer_mapping"].name, "customers")

    def test_branch_is_the_flow_override_else_the_integration(self):
        self.integration.visma_branch = "1"
        stock = self.make_flow(name="Stock", flow_type="stock")
        self.assertEqual(stock._flow_settings()["branch"], "1")
        stock.branch = "2"
        self.assertEqual(stock._flow_settings()["branch"], "2")

    def test_orders_documents_since_is_the_integration_creation_unless_set(self):
        orders = self.make_flow(name="Orders", flow_type="orders")
        created = self.integration.create_date.isoformat(timespec="seconds")
        self.assertEqual(orders._flow_settings()["documents_since"], f"{created}+00:00")
        orders.documents_since = "2025-01-02 03:04:05"
        self.assertEqual(orders._flow_settings()["documents_since"], "2025-01-02T03:04:05+00:00")
        with self.assertRaises(ValidationError):
            orders.documents_since = self.integration.create_date + timedelta(seconds=1)

    def test_products_form_explains_that_bb_has_no_images(self):
        products = self.make_flow(name="Products", flow_type="products")
        self.assertEqual(products.images_note, IMAGES_NOTE)
        self.assertFalse(self.make_flow(name="Stock", flow_type="stock").images_note)

    def test_the_new_settings_read_in_german(self):
        self.env["res.lang"]._activate_lang("de_DE")
        self.env["ir.module.module"]._load_module_terms(["apicenter_bb_visma"], ["de_DE"])
        env = self.env(context={"lang": "de_DE"})
        fields = env["apicenter.flow"].fields_get(["update_on_match", "parallel_batches"])
        self.assertEqual(fields["update_on_match"]["string"], "Gefundene Kunden aktualisieren")
        self.assertIn("queue_job-Worker", fields["parallel_batches"]["help"])
        products = self.make_flow(name="Products", flow_type="products").with_env(env)
        products.invalidate_recordset(["images_note"])
        self.assertTrue(products.images_note.startswith("BuchhaltungsButler hält keine"))
        self.assertEqual(
            env["apicenter.run.batch"]._fields["state"]._description_selection(env)[1],
            ("retrying", "Wartet auf Wiederholung"),
        )
