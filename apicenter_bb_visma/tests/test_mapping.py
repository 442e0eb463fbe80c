# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
import json

from odoo.exceptions import UserError
from odoo.tests import tagged

from bbvisma.errors import ConfigError
from bbvisma.flows.defaults import DEFAULTS_DIR, default_mapping, default_value_maps
from bbvisma.mapper import transform_selection

from ..sync.context import flow_mapping, flow_value_maps
from .common import ApicenterCase


@tagged("post_install", "-at_install")
class TestMapping(ApicenterCase):
    def test_core_default_mappings_are_installed_as_editable_records(self):
        Mapping = self.env["apicenter.mapping"]
        for path in DEFAULTS_DIR.glob("*.json"):
            if path.stem == "value_maps":
                continue
            with self.subTest(flow_type=path.stem):
                record = Mapping._find_by_code([path.stem], self.env.company)
                self.assertTrue(record, f"no mapping record for {path.stem}")
                core = default_mapping(path.stem)
                built = record._to_core()
                # the record round-trips to exactly the core's rules, child mappings included
                self.assertEqual(built.to_rows(), core.to_rows())
                self.assertEqual(
                    {k: v.to_rows() for k, v in built.children.items()},
                    {k: v.to_rows() for k, v in core.children.items()},
                )

    def test_core_default_value_maps_are_installed(self):
        records = self.env["apicenter.value.map"].search([])
        self.assertEqual(records._to_core() | {}, records._to_core())
        installed = records._to_core()
        for code, table in default_value_maps().items():
            self.assertEqual(installed[code], table, code)

    def test_loading_defaults_again_keeps_the_users_edits(self):
        mapping = self.env["apicenter.mapping"]._find_by_code(["customers"], self.env.company)
        mapping.line_ids[:1].target_field = "name"
        count = self.env["apicenter.mapping"].search_count([])
        self.env["apicenter.mapping"]._load_core_defaults()
        self.assertEqual(self.env["apicenter.mapping"].search_count([]), count)
        self.assertEqual(mapping.line_ids[:1].target_field, "name")

    def test_a_run_uses_the_flows_mapping_then_the_type_default_then_the_core(self):
        flow = self.make_flow(flow_type="customers")
        default = self.env["apicenter.mapping"]._find_by_code(["customers"], self.env.company)
        self.assertEqual(flow_mapping(flow).to_rows(), default._to_core().to_rows())
        own = self.env["apicenter.mapping"].create(
            {
                "name": "Mine",
                "code": "mine",
                "line_ids": [(0, 0, {"source_path": "name", "target_field": "name"})],
            }
        )
        flow.mapping_id = own
        self.assertEqual([row["target"] for row in flow_mapping(flow).to_rows()], ["name"])
        flow.mapping_id = False
        default.code = "renamed"
        self.assertEqual(
            flow_mapping(flow).to_rows(), default_mapping("customers").to_rows(), "core default"
        )

    def test_an_invalid_rule_is_reported_by_the_core_with_the_rule(self):
        broken = self.env["apicenter.mapping"].create(
            {
                "name": "Broken",
                "code": "broken",
                "line_ids": [(0, 0, {"target_field": "x", "transform": "truncate"})],
            }
        )
        with self.assertRaises(ConfigError) as caught:
            broken._to_core()
        self.assertIn("truncate", caught.exception.message)

    def test_a_value_map_record_replaces_the_default_table_of_its_code(self):
        flow = self.make_flow(flow_type="orders")
        vat = self.env["apicenter.value.map"].search([("code", "=", "vat_codes")])
        vat.line_ids = [(5, 0, 0), (0, 0, {"source_value": "S:19", "target_value": "99"})]
        self.assertEqual(flow_value_maps(flow)["vat_codes"], {"S:19": "99"})

    def test_every_core_transform_is_offered_in_the_rule_form(self):
        offered = dict(self.env["apicenter.mapping.line"]._selection_transform())
        self.assertEqual(set(offered), {name for name, _label in transform_selection()})
        self.assertIn("country", offered, "a flow's own transform is offered too")


@tagged("post_install", "-at_install")
class TestMappingPreview(ApicenterCase):
    """The 'Test mapping' action shows what a sample record becomes, and why not."""

    def make_mapping(self):
        return self.env["apicenter.mapping"].create(
            {
                "name": "Preview",
                "code": "preview_test",
                "line_ids": [
                    (0, 0, {"sequence": 1, "source_path": "name", "target_field": "name"}),
                    (
                        0,
                        0,
                        {
                            "sequence": 2,
                            "source_path": "country",
                            "target_field": "mainAddress.countryId",
                            "transform": "value_map",
                            "transform_arg": "countries",
                        },
                    ),
                    (
                        0,
                        0,
                        {
                            "sequence": 3,
                            "source_path": "email",
                            "target_field": "mainContact.email",
                            "when": "update",
                        },
                    ),
                ],
            }
        )

    def test_the_payload_of_a_sample_record_is_shown_with_the_value_maps(self):
        mapping = self.make_mapping()
        mapping.test_source = json.dumps(
            {"name": "Fjord Handel AS", "country": "Dänemark", "email": "a@b.dk"}
        )
        mapping.action_test_mapping()
        payload = json.loads(mapping.test_result)
        # "Dänemark" goes through the installed 'countries' value map; the update-only rule
        # is left out of a create
        self.assertEqual(payload, {"name": "Fjord Handel AS", "mainAddress": {"countryId": "DK"}})
        mapping.test_mode = "update"
        mapping.action_test_mapping()
        self.assertEqual(json.loads(mapping.test_result)["mainContact"], {"email": "a@b.dk"})

    def test_an_unmapped_value_is_named_above_the_payload(self):
        mapping = self.make_mapping()
        mapping.test_source = '{"name": "X", "country": "Atlantis"}'
        mapping.action_test_mapping()
        first_line = mapping.test_result.splitlines()[0]
        self.assertIn("countries", first_line)
        self.assertIn("Atlantis", first_line)

    def test_a_sample_that_is_not_a_json_object_is_refused(self):
        mapping = self.make_mapping()
        for sample in ("{name: 1", "[1, 2]"):
            mapping.test_source = sample
            with self.subTest(sample=sample), self.assertRaises(UserError):
                mapping.action_test_mapping()

    def test_load_a_sample_takes_the_latest_logged_source_record(self):
        mapping = self.make_mapping()
        mapping.flow_type = "customers"
        flow = self.make_flow(flow_type="customers")
        run = self.env["apicenter.run"].create(
            {"flow_id": flow.id, "integration_id": flow.integration_id.id}
        )
        self.env["apicenter.log"].create(
            {
                "run_id": run.id,
                "flow_id": flow.id,
                "integration_id": flow.integration_id.id,
                "entity": "customer",
                "source_key": "10001",
                "action": "create",
                "source_payload": json.dumps({"name": "Logged GmbH", "country": "Dänemark"}),
            }
        )
        mapping.action_load_sample()
        self.assertEqual(json.loads(mapping.test_result)["name"], "Logged GmbH")
