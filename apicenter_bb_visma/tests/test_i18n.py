# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
from pathlib import Path

from odoo.tests import tagged
from odoo.tests.common import TransactionCase
from odoo.tools.translate import PoFileReader

I18N = Path(__file__).resolve().parents[1] / "i18n"


@tagged("post_install", "-at_install")
class TestGerman(TransactionCase):
    def test_every_term_of_the_template_has_a_german_translation(self):
        with open(I18N / "apicenter_bb_visma.pot", "rb") as pot:
            terms = {entry["src"] for entry in PoFileReader(pot)}
        with open(I18N / "de.po", "rb") as po:
            german = {entry["src"]: entry["value"] for entry in PoFileReader(po)}
        self.assertTrue(terms)
        self.assertEqual(sorted(terms - {k for k, v in german.items() if v}), [])

    def test_menus_labels_and_selections_read_in_german(self):
        self.env["res.lang"]._activate_lang("de_DE")
        self.env["ir.module.module"]._load_module_terms(["apicenter_bb_visma"], ["de_DE"])
        env = self.env(context={"lang": "de_DE"})
        self.assertEqual(
            env.ref("apicenter_bb_visma.menu_apicenter_logs").name, "Aktivitätsprotokoll"
        )
        fields = env["apicenter.flow"].fields_get(["flow_type", "stock_mode"])
        self.assertEqual(fields["flow_type"]["string"], "Art")
        self.assertIn(("orders", "Aufträge"), fields["flow_type"]["selection"])
        self.assertEqual(
            env.ref("apicenter_bb_visma.group_apicenter_manager").name, "Integrationsmanager"
        )
        transforms = dict(env["apicenter.mapping.line"]._selection_transform())
        self.assertEqual(transforms["truncate"], "Kürzen")
        self.assertEqual(transforms["country"], "Ländercode (ISO 3166 Alpha-2)")
        run = env["apicenter.run"].new(
            {"state": "partial", "created_count": 2, "failed_count": 1, "duration": 1.5}
        )
        self.assertIn("2 angelegt", run._summary_text())
