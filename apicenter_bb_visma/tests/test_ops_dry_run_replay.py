# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
"""Dry run and retry with the real customers flow against both simulators on loopback.

Dry run: the user sees the exact payloads, and the simulators' request logs prove that
nothing was written (no link, no watermark either). Retry: records parked for a missing value
map entry go through once the map is fixed, their outcome lands on the old log lines and the
problem is resolved.
"""

import json

from odoo.exceptions import AccessError, UserError
from odoo.tests import tagged

from bbvisma.flows.defaults import default_value_maps
from bbvisma.simulators.buchhaltungsbutler import default_seed

from .ops_common import SimulatorCase

ATLANTIS = [
    {
        "postingaccount_number": str(number),
        "name": f"Atlantis Trading {number}",
        "contact_person_name": "Poseidon",
        "street": "Harbour 1",
        "zip": "12345",
        "city": "Atlantis City",
        "country": "Atlantis",
        "email": f"atlantis{number}@example.com",
    }
    for number in (19001, 19002, 19003)
]


class OpsSimulatorFlowCase(SimulatorCase):
    def setUp(self):
        super().setUp()
        self.bb_sim.reset()
        self.visma_sim.reset()
        self.integration.write(self.good_credentials())
        self.flow = self.make_flow(name="Customers", flow_type="customers")

    def links(self):
        return self.env["apicenter.link"].search([("integration_id", "=", self.integration.id)])


@tagged("post_install", "-at_install")
class TestOpsDryRun(OpsSimulatorFlowCase):
    def test_dry_run_shows_the_payloads_and_sends_nothing(self):
        self.flow.watermark = "2026-01-01 00:00:00"
        action = self.flow.action_dry_run()
        self.env.invalidate_all()
        # what the user sees: the dry run's log lines in the payload list
        self.assertEqual(action["res_model"], "apicenter.log")
        view = self.env.ref("apicenter_bb_visma.apicenter_log_view_list_dry_run")
        self.assertEqual(action["views"][0], (view.id, "list"))
        lines = self.env["apicenter.log"].search(action["domain"])
        self.assertEqual(len(lines), 30, "every debtor of the seed")
        self.assertTrue(all(lines.mapped("dry_run")))
        created = lines.filtered(lambda line: line.action == "create")
        self.assertTrue(created)
        payload = json.loads(created[0].request_payload)
        self.assertEqual(payload["number"], created[0].source_key, "the exact payload")
        self.assertIn("name", payload)
        run = lines.run_id
        self.assertTrue(run.dry_run)
        # and nothing was sent, linked or moved
        self.assertEqual(self.visma_writes(), [])
        self.assertEqual(self.bb_writes(), [])
        self.assertIn(
            "/api/v1/settings/get/debtors",
            [entry["path"] for entry in self.bb_sim.requests.entries],
            "the source was read",
        )
        self.assertFalse(self.links())
        self.assertEqual(self.flow.watermark, "2026-01-01 00:00:00")
        self.assertFalse(self.env["apicenter.problem"].search([("flow_id", "=", self.flow.id)]))
        self.assertEqual(len(self.visma_sim.customers), len(self.visma_sim._seed["customers"]))

    def test_dry_run_that_cannot_read_opens_the_run_with_the_reason(self):
        self.integration.bb_api_secret = "wrong-secret"
        action = self.flow.action_dry_run()
        self.env.invalidate_all()
        self.assertEqual(action["res_model"], "apicenter.run")
        run = self.env["apicenter.run"].browse(action["res_id"])
        self.assertEqual(run.state, "failed")
        self.assertIn("rejected the API credentials", run.message)
        self.assertFalse(self.env["apicenter.problem"].search([("flow_id", "=", self.flow.id)]))

    def test_the_same_run_for_real_writes_so_the_check_can_fail(self):
        run = self.flow._run()
        self.env.invalidate_all()
        self.assertGreater(run.created_count, 0)
        self.assertTrue(self.visma_writes())
        self.assertTrue(self.links())

    def test_dry_run_after_a_change_shows_the_update_it_would_send(self):
        self.flow._run()
        self.env.invalidate_all()
        debtor = self.bb_sim.companies["bbsim-key-demo-gmbh-8c1d2e"].debtors["10002"]
        debtor["city"] = "Potsdam"
        self.visma_sim.requests.clear()
        action = self.flow.action_dry_run()
        self.env.invalidate_all()
        lines = self.env["apicenter.log"].search(action["domain"])
        changed = lines.filtered(lambda line: line.source_key == "10002")
        self.assertEqual(changed.action, "update")
        self.assertIn("Potsdam", changed.request_payload)
        self.assertEqual(set(lines.mapped("action")) - {"update", "park"}, {"skip"})
        self.assertEqual(self.visma_writes(), [])
        link = self.links().filtered(lambda link: link.source_key == "10002")
        self.assertNotIn("Potsdam", json.dumps(link.read()[0], default=str))


@tagged("post_install", "-at_install")
class TestOpsReplay(OpsSimulatorFlowCase):
    def setUp(self):
        super().setUp()
        # a small company keeps each run short: two seed debtors and the three from Atlantis
        seed = default_seed()
        company = seed["companies"][0]
        company.update(debtors=company["debtors"][:2] + ATLANTIS, receipts=[], transactions=[])
        seed["companies"] = [company]
        self.bb_sim.load_seed(seed)
        self.first = self.flow._run()
        self.env.invalidate_all()
        self.parked = self.first.log_ids.filtered(lambda line: line.action == "park")
        self.atlantis = self.parked.filtered(lambda line: line.source_key.startswith("1900"))

    def fix_the_value_map(self):
        countries = dict(default_value_maps()["countries"], Atlantis="LU")
        self.env["apicenter.value.map"].create(
            {
                "name": "Countries",
                "code": "countries",
                "company_id": self.integration.company_id.id,
                "line_ids": [
                    (0, 0, {"source_value": key, "target_value": value})
                    for key, value in countries.items()
                ],
            }
        )

    def test_parked_records_share_one_problem(self):
        self.assertEqual(len(self.atlantis), 3)
        problem = self.atlantis.problem_id
        self.assertEqual(len(problem), 1)
        self.assertEqual(problem.cause_key, "data:unmapped:countries:Atlantis")
        self.assertEqual(problem.record_count, 3)
        self.assertTrue(all(self.atlantis.mapped("still_failing")))

    def test_retry_after_fixing_the_mapping_goes_through_and_updates_the_old_lines(self):
        self.fix_the_value_map()
        self.visma_sim.requests.clear()
        action = self.atlantis.action_replay()
        self.env.invalidate_all()
        replay = self.env["apicenter.run"].search(
            [("flow_id", "=", self.flow.id), ("trigger", "=", "replay")]
        )
        self.assertEqual(len(replay), 1)
        self.assertEqual(action["domain"], [("run_id", "=", replay.id)])
        self.assertEqual((replay.created_count, replay.record_count), (3, 3), "only the 3 keys")
        for line in self.atlantis:
            self.assertEqual(line.superseded_by_id.run_id, replay)
            self.assertEqual(line.superseded_by_id.action, "create")
            self.assertFalse(line.still_failing)
            self.assertIn("Create", line.outcome)
            self.assertEqual(line.superseded_by_id.supersedes_ids, line)
        payload = json.loads(self.atlantis.superseded_by_id[0].request_payload)
        self.assertEqual(payload["mainAddress"]["countryId"], "LU", "the current mapping")
        posts = [e for e in self.visma_writes() if e["path"] == "/v1/customer"]
        self.assertEqual(len(posts), 3)
        problem = self.atlantis.problem_id
        self.assertEqual((problem.state, problem.record_count), ("resolved", 0))
        self.assertFalse(self.flow.watermark, "a retry moves no watermark")

    def test_retry_of_one_record_alone(self):
        self.fix_the_value_map()
        one = self.atlantis.sorted("source_key")[0]
        one.action_replay()
        self.env.invalidate_all()
        self.assertEqual(one.superseded_by_id.action, "create", one.superseded_by_id.message)
        problem = one.problem_id
        self.assertEqual((problem.state, problem.record_count), ("open", 2))
        self.assertEqual(len(self.atlantis.filtered("still_failing")), 2)

    def test_retry_without_a_fix_parks_again_under_the_same_problem(self):
        self.atlantis.action_replay()
        self.env.invalidate_all()
        problem = self.atlantis.problem_id
        self.assertEqual((problem.state, problem.record_count), ("open", 3))
        self.assertEqual(problem.occurrence_count, 6)
        newer = self.atlantis.superseded_by_id
        self.assertEqual(set(newer.mapped("action")), {"park"})
        self.assertEqual(newer.problem_id, problem)

    def test_bulk_retry_from_the_log_list_server_action(self):
        self.fix_the_value_map()
        action = self.env.ref("apicenter_bb_visma.action_apicenter_log_replay")
        self.assertEqual(action.binding_model_id.model, "apicenter.log")
        result = action.with_context(
            active_model="apicenter.log",
            active_ids=self.atlantis.ids,
            active_id=self.atlantis[0].id,
        ).run()
        self.env.invalidate_all()
        self.assertEqual(result["res_model"], "apicenter.log")
        self.assertFalse(any(self.atlantis.mapped("still_failing")))

    def test_lines_already_retried_or_of_dry_runs_cannot_be_retried(self):
        self.fix_the_value_map()
        self.atlantis.action_replay()
        self.env.invalidate_all()
        with self.assertRaises(UserError):
            self.atlantis.action_replay()
        created = self.first.log_ids.filtered(lambda line: line.action == "create")[:1]
        with self.assertRaises(UserError):
            created.action_replay()

    def test_an_integration_user_cannot_retry(self):
        with self.assertRaises(AccessError):
            self.atlantis.with_user(self.user).action_replay()
        self.assertTrue(all(self.atlantis.mapped("still_failing")))

    def test_the_problem_retries_all_its_records(self):
        self.fix_the_value_map()
        problem = self.atlantis.problem_id
        problem.action_replay()
        self.env.invalidate_all()
        self.assertEqual(problem.state, "resolved")
