# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
"""The operator views render: the dashboard, the integration form and the setup assistant, for
an Integration User and an Integration Manager -- in a real browser (Chromium) with no
JavaScript error, and on the server (arch checks, menus) without one."""

import json
import shutil
import unittest

from odoo.exceptions import AccessError
from odoo.tests import HttpCase, new_test_user, tagged

from .common import MANAGER, USER, ApicenterCase

BROWSERS = ("google-chrome", "chromium", "chromium-browser", "google-chrome-stable")
VIEWS = {
    "apicenter.flow": ["apicenter_flow_view_kanban", "apicenter_flow_view_form"],
    "apicenter.integration": [
        "apicenter_integration_view_kanban",
        "apicenter_integration_view_form",
    ],
    "apicenter.run": [
        "apicenter_run_view_graph",
        "apicenter_run_view_pivot",
        "apicenter_run_view_form",
    ],
    "apicenter.log": [
        "apicenter_log_view_graph",
        "apicenter_log_view_pivot",
        "apicenter_log_view_list_dry_run",
        "apicenter_log_view_form",
    ],
    "apicenter.problem": ["apicenter_problem_view_list", "apicenter_problem_view_form"],
}


@tagged("post_install", "-at_install")
class TestOpsViewsServerSide(ApicenterCase):
    def test_every_operator_view_loads_for_users_and_managers(self):
        for user in (self.user, self.manager):
            for model, xmlids in VIEWS.items():
                for xmlid in xmlids:
                    view = self.env.ref(f"apicenter_bb_visma.{xmlid}")
                    result = self.env[model].with_user(user).get_views([(view.id, view.type)])
                    self.assertIn(view.type, result["views"], (user.login, xmlid))

    def test_the_manager_sees_the_buttons_the_user_does_not(self):
        view = self.env.ref("apicenter_bb_visma.apicenter_flow_view_kanban")
        arch_user = (
            self.env["apicenter.flow"]
            .with_user(self.user)
            .get_views([(view.id, "kanban")])["views"]["kanban"]["arch"]
        )
        arch_manager = (
            self.env["apicenter.flow"]
            .with_user(self.manager)
            .get_views([(view.id, "kanban")])["views"]["kanban"]["arch"]
        )
        self.assertNotIn("action_run_now", arch_user)
        self.assertIn("action_run_now", arch_manager)

    def test_the_setup_assistant_is_for_managers(self):
        menu = self.env.ref("apicenter_bb_visma.menu_apicenter_setup")
        visible_user = self.env["ir.ui.menu"].with_user(self.user)._visible_menu_ids()
        visible_manager = self.env["ir.ui.menu"].with_user(self.manager)._visible_menu_ids()
        self.assertNotIn(menu.id, visible_user)
        self.assertIn(menu.id, visible_manager)
        with self.assertRaises(AccessError):
            self.env["apicenter.setup"].with_user(self.user).search([])
        view = self.env.ref("apicenter_bb_visma.apicenter_setup_view_form")
        result = self.env["apicenter.setup"].with_user(self.manager).get_views([(view.id, "form")])
        self.assertIn("action_test_bb", result["views"]["form"]["arch"])

    def test_dashboard_is_the_first_entry_and_opens_the_flow_kanban(self):
        root = self.env.ref("apicenter_bb_visma.menu_apicenter_root")
        first = root.child_id.sorted("sequence")[0]
        self.assertEqual(first, self.env.ref("apicenter_bb_visma.menu_apicenter_dashboard"))
        first_child = first.child_id.sorted("sequence")[0]
        action = first_child.action
        self.assertEqual(
            (action.res_model, action.view_mode.split(",")[0]), ("apicenter.flow", "kanban")
        )


@tagged("post_install", "-at_install")
class TestOpsViewsInBrowser(HttpCase):
    """Opens each page in headless Chromium; any JavaScript error or server error fails."""

    @classmethod
    def setUpClass(cls):
        if not any(shutil.which(name) for name in BROWSERS):
            raise unittest.SkipTest(
                "no Chromium/Chrome found: install it (apt-get install -y chromium) to check that "
                "the dashboard, the integration form and the setup assistant render without a "
                "JavaScript error"
            )
        super().setUpClass()
        cls.user = new_test_user(cls.env, login="ops_view_user", groups=f"base.group_user,{USER}")
        cls.manager = new_test_user(
            cls.env, login="ops_view_manager", groups=f"base.group_user,{MANAGER}"
        )
        cls.integration = cls.env["apicenter.integration"].create(
            {"name": "Browser integration", "bb_base_url": "http://127.0.0.1:9/api/v1"}
        )
        cls.flow = cls.env["apicenter.flow"].create(
            {"name": "Browser flow", "integration_id": cls.integration.id, "flow_type": "orders"}
        )
        run = cls.env["apicenter.run"].create(
            {
                "flow_id": cls.flow.id,
                "integration_id": cls.integration.id,
                "state": "partial",
                "created_count": 3,
                "parked_count": 1,
            }
        )
        cls.env["apicenter.problem"].create(
            {
                "integration_id": cls.integration.id,
                "flow_id": cls.flow.id,
                "cause_key": "data:missing_sku:X",
                "message": "SKU X does not exist in Visma.net",
                "record_count": 1,
            }
        )
        cls.env["apicenter.log"].create(
            {
                "run_id": run.id,
                "flow_id": cls.flow.id,
                "integration_id": cls.integration.id,
                "entity": "order",
                "source_key": "R1",
                "action": "park",
                "cause_key": "data:missing_sku:X",
            }
        )

    #: one browser per user: the pages are opened one after another by the web client's
    #: action service (a page load per page would start Chromium each time)
    WALK = """
        (async () => {
            const actions = odoo.__WOWL_DEBUG__.root.env.services.action;
            const waitFor = async (selector) => {
                for (let i = 0; i < 300; i++) {
                    if (document.querySelector(selector)) { return; }
                    await new Promise((resolve) => setTimeout(resolve, 50));
                }
                throw new Error("not rendered: " + selector);
            };
            for (const [action, options, selector] of %s) {
                await actions.doAction(action, options);
                await waitFor(selector);
            }
            console.log("test successful");
        })().catch((error) => console.error("operator views: " + error.message));
    """

    def walk(self, login, pages):
        self.browser_js(
            "/odoo/action-apicenter_bb_visma.apicenter_dashboard_action",
            self.WALK % json.dumps(pages),
            ready="!!document.querySelector('.o_kanban_record .o_field_widget[name=health]')",
            login=login,
        )

    def pages(self):
        health = ".o_kanban_record .o_field_widget[name='health']"
        return [
            ["apicenter_bb_visma.apicenter_dashboard_action", {}, health],
            ["apicenter_bb_visma.apicenter_integration_dashboard_action", {}, health],
            [
                "apicenter_bb_visma.apicenter_integration_action",
                {"props": {"resId": self.integration.id}, "viewType": "form"},
                ".o_form_view .o_field_widget[name='open_problem_count']",
            ],
            ["apicenter_bb_visma.apicenter_run_analysis_action", {}, ".o_graph_renderer"],
            ["apicenter_bb_visma.apicenter_problem_action", {}, ".o_list_renderer .o_data_row"],
            [
                "apicenter_bb_visma.apicenter_log_analysis_action",
                {"viewType": "pivot"},
                ".o_pivot",
            ],
        ]

    def test_pages_render_for_an_integration_user(self):
        self.walk("ops_view_user", self.pages())

    def test_pages_and_the_setup_assistant_render_for_a_manager(self):
        assistant = [
            "apicenter_bb_visma.action_apicenter_setup_open",
            {},
            ".o_form_view .o_field_widget[name='bb_api_key']",
        ]
        self.walk("ops_view_manager", [*self.pages(), assistant])


@tagged("post_install", "-at_install")
class TestOpsGerman(ApicenterCase):
    def test_operator_terms_read_in_german(self):
        self.env["res.lang"]._activate_lang("de_DE")
        self.env["ir.module.module"]._load_module_terms(["apicenter_bb_visma"], ["de_DE"])
        env = self.env(context={"lang": "de_DE"})
        self.assertEqual(env.ref("apicenter_bb_visma.menu_apicenter_dashboard").name, "Übersicht")
        self.assertEqual(
            env.ref("apicenter_bb_visma.menu_apicenter_setup").name, "Einrichtungsassistent"
        )
        health = dict(env["apicenter.flow"].fields_get(["health"])["health"]["selection"])
        self.assertEqual(health["stalled"], "Ins Stocken geraten")
        from bbvisma.errors import AuthError

        from ..wizards.apicenter_setup import _plain_error

        text = _plain_error(env, "bb", AuthError("BuchhaltungsButler ... (error 11)", code=11))
        self.assertTrue(text.startswith("Inaktiver Kunde"), text)
