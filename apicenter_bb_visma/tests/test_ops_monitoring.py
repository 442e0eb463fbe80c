# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
"""Monitoring at a run's end: problems grouped by cause, notified once per cause and flow
until they recover, recovery announced, stalled schedules flagged; dashboard measures."""

from datetime import timedelta
from unittest.mock import patch

from odoo import fields
from odoo.tests import tagged

import bbvisma.flows

from .ops_common import ItemsFlow, ItemsFlowCase


def orders(count, prefix="R", **data):
    return {f"{prefix}{n:04d}": dict(data, name=f"Order {n}") for n in range(count)}


@tagged("post_install", "-at_install")
class TestOpsProblems(ItemsFlowCase):
    def problems(self, flow=None):
        return self.env["apicenter.problem"].search([("flow_id", "=", (flow or self.flow).id)])

    def test_same_missing_sku_across_200_orders_is_one_problem_with_200_records(self):
        items = orders(200, missing_sku="SKU-4711")
        items.update(orders(3, prefix="OK"))  # three more that go through
        items["X1"] = {"name": "Other", "missing_sku": "SKU-9"}
        run = self.run_flow(items)
        self.assertEqual(run.state, "partial")
        self.assertEqual(run.parked_count, 201)
        problems = self.problems()
        self.assertEqual(
            sorted(problems.mapped("cause_key")),
            ["data:missing_sku:SKU-4711", "data:missing_sku:SKU-9"],
        )
        sku = problems.filtered(lambda p: p.cause_key.endswith("SKU-4711"))
        self.assertEqual((sku.record_count, sku.state, sku.scope), (200, "open", "record"))
        self.assertEqual(len(sku.log_ids), 200)
        self.assertIn("SKU SKU-4711 does not exist", sku.message)
        self.assertEqual(self.flow.open_problem_count, 2)
        self.assertEqual(self.flow.problem_record_count, 201)

    def test_partial_run_notifies_each_new_cause_once_with_its_records(self):
        items = orders(12, missing_sku="SKU-1")
        run = self.run_flow(items)
        note = self.notifications()
        self.assertEqual(len(note), 1)
        self.assertEqual(note.partner_ids, self.partner)
        self.assertIn("New problem", note.body)
        self.assertIn("SKU SKU-1 does not exist in Visma.net", note.body)
        self.assertIn("12 record(s)", note.body)
        self.assertIn("R0000", note.body)
        self.assertIn("and 2 more", note.body, "ten keys named, the rest counted")
        self.assertIn(f"{run.parked_count} parked", note.body, "the run summary is in it too")
        self.assertTrue(self.problems().notified)

    def test_the_same_cause_in_later_runs_notifies_nobody_again(self):
        items = orders(5, missing_sku="SKU-1")
        for _n in range(4):
            self.run_flow(items)
        self.assertEqual(len(self.notifications()), 1, "one notification, not one per run")
        problem = self.problems()
        self.assertEqual(len(problem), 1)
        self.assertEqual(problem.record_count, 5, "the same 5 records, counted once")
        self.assertEqual(problem.occurrence_count, 20)
        latest = self.flow.message_ids[0]
        self.assertFalse(latest.partner_ids)
        self.assertIn("Still open, reported before", latest.body, "each run still names the cause")
        self.assertIn("SKU-1", latest.body)

    def test_a_new_cause_next_to_a_known_one_notifies_only_the_new_one(self):
        self.run_flow(orders(3, missing_sku="SKU-1"))
        items = orders(3, missing_sku="SKU-1")
        items["F1"] = {"name": "Fails", "fail": True}
        self.run_flow(items)
        notes = self.notifications()
        self.assertEqual(len(notes), 2)
        self.assertIn("server:visma", notes[0].body)
        self.assertNotIn("SKU-1", notes[0].body.split("Still open")[0])

    def test_recovery_resolves_the_problem_and_is_announced_once(self):
        self.run_flow(orders(4, missing_sku="SKU-1"))
        problem = self.problems()
        # the item was created in Visma.net: the same orders go through now
        run = self.run_flow(orders(4))
        self.assertEqual(run.state, "done")
        self.assertEqual((problem.state, problem.record_count), ("resolved", 0))
        self.assertTrue(problem.resolved_date)
        notes = self.notifications()
        self.assertEqual(len(notes), 2)
        self.assertIn("Resolved", notes[0].body)
        self.assertIn("data:missing_sku:SKU-1", notes[0].body)
        old_lines = problem.log_ids
        self.assertTrue(all(line.superseded_by_id.action == "create" for line in old_lines))
        self.assertEqual(set(old_lines.mapped("outcome")), {old_lines[0].outcome})
        self.assertIn("Create", old_lines[0].outcome)
        # a clean run after recovery notifies nobody
        self.run_flow(orders(4))
        self.assertEqual(len(self.notifications()), 2)
        # the cause coming back is a new problem: announced again
        self.run_flow(orders(4, missing_sku="SKU-1"))
        self.assertEqual(len(self.problems()), 2)
        self.assertEqual(len(self.notifications()), 3)

    def test_a_problem_stays_open_while_one_of_its_records_still_fails(self):
        self.run_flow(orders(3, missing_sku="SKU-1"))
        items = orders(3)
        items["R0002"]["missing_sku"] = "SKU-1"
        self.run_flow(items)
        problem = self.problems()
        self.assertEqual((problem.state, problem.record_count), ("open", 1))
        self.assertEqual(len(self.notifications()), 1)

    def test_aborted_run_is_one_problem_notified_once_and_pauses_the_schedule(self):
        self.integration.action_activate()
        for _n in range(3):
            run = self.run_flow({"A": {"name": "A", "auth": True}})
            self.integration.state = "active"
        self.assertEqual(run.state, "failed")
        problem = self.problems()
        self.assertEqual(len(problem), 1)
        self.assertTrue(problem.cause_key.startswith("auth:visma"))
        self.assertEqual(len(self.notifications()), 1)
        self.run_flow({"A": {"name": "A"}})
        self.assertEqual(problem.state, "resolved")
        self.assertIn("Resolved", self.notifications()[0].body)

    def test_run_failing_without_records_is_a_run_problem_resolved_by_the_next_run(self):
        with patch.object(bbvisma.flows, "FLOW_CLASSES", {}, create=True):
            failed = self.flow._run()
            self.flow._run()
        self.env.invalidate_all()
        self.assertEqual(failed.state, "failed")
        problem = self.problems()
        self.assertEqual((problem.scope, problem.cause_key), ("run", "run:failed"))
        self.assertEqual(problem.occurrence_count, 2)
        self.assertIn("not available in this version", self.notifications().body)
        self.assertEqual(len(self.notifications()), 1)
        self.run_flow(orders(1))
        self.assertEqual(problem.state, "resolved")
        self.assertEqual(len(self.notifications()), 2)

    def test_dry_run_opens_no_problem_and_notifies_nobody(self):
        run = self.run_flow(orders(3, missing_sku="SKU-1"), dry_run=True)
        self.assertEqual(run.parked_count, 3)
        self.assertFalse(self.problems())
        self.assertFalse(self.notifications())
        self.assertFalse(run.log_ids.problem_id)

    def test_without_recipients_problems_are_posted_as_notes(self):
        self.integration.notify_partner_ids = False
        self.run_flow(orders(2, missing_sku="SKU-1"))
        self.assertFalse(self.notifications())
        self.assertIn("New problem", self.flow.message_ids[0].body)
        self.assertTrue(self.problems().notified)

    def test_problems_of_two_flows_are_kept_apart(self):
        other = self.make_flow(name="Orders 2", flow_type="orders")
        self.run_flow(orders(2, missing_sku="SKU-1"))
        self.run_flow(orders(2, missing_sku="SKU-1"), flow=other)
        self.assertEqual(len(self.problems()), 1)
        self.assertEqual(len(self.problems(other)), 1)
        self.assertEqual(len(self.notifications(other)), 1, "each flow announces its own")
        self.assertEqual(self.integration.open_problem_count, 2)


@tagged("post_install", "-at_install")
class TestOpsDashboardMeasures(ItemsFlowCase):
    def test_run_measures_for_graphs_records_synced_error_rate(self):
        items = orders(6)
        items["P"] = {"name": "P", "missing_sku": "S"}
        items["F"] = {"name": "F", "fail": True}
        run = self.run_flow(items)
        self.assertEqual((run.record_count, run.synced_count, run.problem_record_count), (8, 6, 2))
        self.assertAlmostEqual(run.error_rate, 25.0)
        self.assertEqual(run.trigger, "manual")

    def test_flow_health_and_records_synced_today(self):
        self.assertEqual(self.flow.health, "never")
        self.run_flow(orders(5))
        self.flow.invalidate_recordset()
        self.assertEqual((self.flow.health, self.flow.records_today), ("ok", 5))
        self.assertEqual(self.flow.last_sync_state, "done")
        self.run_flow(orders(5, missing_sku="X"), dry_run=True)
        self.flow.invalidate_recordset()
        self.assertEqual(self.flow.health, "ok", "a dry run does not change the health")
        self.assertEqual(self.flow.records_today, 5)
        self.run_flow({"Z": {"name": "Z", "missing_sku": "X"}})
        self.flow.invalidate_recordset()
        self.assertEqual(self.flow.health, "warning")
        self.assertEqual(self.integration.health, "warning")
        self.assertEqual(self.integration.records_today, 5)
        self.integration.state = "error"
        self.flow.invalidate_recordset()
        self.assertEqual(self.flow.health, "failed")

    def test_open_problems_of_a_flow_and_of_its_integration(self):
        self.run_flow({"Z": {"name": "Z", "missing_sku": "X"}})
        Problem = self.env["apicenter.problem"]
        for record, field in ((self.flow, "flow_id"), (self.integration, "integration_id")):
            action = record.action_open_problems()
            self.assertEqual(action["res_model"], "apicenter.problem")
            self.assertEqual(action["domain"], [(field, "=", record.id)])
            self.assertEqual(len(Problem.search(action["domain"] + [("state", "=", "open")])), 1)


@tagged("post_install", "-at_install")
class TestOpsStalled(ItemsFlowCase):
    def setUp(self):
        super().setUp()
        self.flow.write({"interval_number": 15, "interval_type": "minutes"})
        self.integration.action_activate()
        self.start = self.flow.schedule_since
        self.assertTrue(self.start, "switching the schedule on is remembered")

    def test_no_scheduled_run_for_three_intervals_flags_and_announces_once(self):
        self.assertFalse(self.flow._check_stalled(now=self.start + timedelta(minutes=44)))
        self.assertFalse(self.flow.is_stalled)
        later = self.start + timedelta(minutes=46)
        self.assertEqual(self.flow._check_stalled(now=later), self.flow)
        self.assertTrue(self.flow.is_stalled)
        self.assertEqual(self.flow.stalled_since, later)
        self.assertEqual(self.flow.health, "stalled")
        notes = self.notifications()
        self.assertEqual(len(notes), 1)
        self.assertIn("Stalled", notes.body)
        self.flow._check_stalled(now=later + timedelta(hours=5))
        self.assertEqual(len(self.notifications()), 1, "announced once, not at every check")

    def test_a_manual_run_does_not_hide_a_dead_schedule(self):
        self.run_flow(orders(1))
        self.env["apicenter.run"].search([("flow_id", "=", self.flow.id)]).date_start = (
            self.start + timedelta(hours=2)
        )
        self.flow._check_stalled(now=self.start + timedelta(hours=2, minutes=5))
        self.assertTrue(self.flow.is_stalled)

    def test_a_scheduled_run_ends_the_stall_and_says_so(self):
        self.flow._check_stalled(now=self.start + timedelta(hours=1))
        self.assertTrue(self.flow.is_stalled)
        ItemsFlow.ITEMS.clear()
        self.env["apicenter.flow"]._cron_run(self.flow.id)
        self.env.invalidate_all()
        run = self.flow.run_ids
        self.assertEqual(run.trigger, "schedule")
        self.flow._check_stalled(now=run.date_start + timedelta(minutes=20))
        self.assertFalse(self.flow.is_stalled)
        self.assertIn("runs again", self.notifications()[0].body)

    def test_a_paused_schedule_is_not_stalled(self):
        self.integration.action_set_draft()
        self.assertFalse(self.flow.schedule_since)
        self.flow._check_stalled(now=fields.Datetime.now() + timedelta(days=3))
        self.assertFalse(self.flow.is_stalled)

    def test_stalled_cron_checks_every_scheduled_flow(self):
        cron = self.env.ref("apicenter_bb_visma.ir_cron_check_stalled")
        self.assertEqual(cron.code, "model._cron_check_stalled()")
        self.flow.schedule_since = fields.Datetime.now() - timedelta(hours=2)
        self.env["apicenter.flow"]._cron_check_stalled()
        self.assertTrue(self.flow.is_stalled)


@tagged("post_install", "-at_install")
class TestOpsProblemRetention(ItemsFlowCase):
    def test_resolved_problems_past_retention_are_purged_open_ones_stay(self):
        self.run_flow(orders(2, missing_sku="OLD"))
        self.run_flow(orders(2))
        self.run_flow(orders(1, prefix="N", missing_sku="NEW"))
        Problem = self.env["apicenter.problem"]
        old = Problem.search([("cause_key", "=", "data:missing_sku:OLD")])
        new = Problem.search([("cause_key", "=", "data:missing_sku:NEW")])
        self.assertEqual((old.state, new.state), ("resolved", "open"))
        later = fields.Datetime.now() + timedelta(days=self.integration.log_retention_days + 1)
        self.env["apicenter.integration"]._purge_expired(now=later)
        self.assertFalse(old.exists())
        self.assertTrue(new.exists(), "an open problem still needs someone")
        # ... and so does its evidence: the record's line (and its run), so the next run does
        # not count the problem as resolved and Retry still finds the record
        self.assertEqual(new.record_count, 1)
        self.assertEqual(new.log_ids.mapped("source_key"), ["N0000"])
        self.assertTrue(new.log_ids.run_id.exists())
        self.run_flow(orders(0))
        self.assertEqual((new.state, new.record_count), ("open", 1))
