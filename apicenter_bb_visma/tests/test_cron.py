# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
from unittest.mock import patch

from odoo.tests import tagged

from .common import ApicenterCase


@tagged("post_install", "-at_install")
class TestCron(ApicenterCase):
    def test_creating_a_flow_creates_its_scheduled_action(self):
        flow = self.make_flow(interval_number=5, interval_type="minutes")
        cron = flow.cron_id
        self.assertTrue(cron)
        self.assertEqual(cron.model_id.model, "apicenter.flow")
        self.assertEqual(cron.code, f"model._cron_run({flow.id})")
        self.assertEqual((cron.interval_number, cron.interval_type), (5, "minutes"))
        self.assertIn(flow.name, cron.name)

    def test_schedule_is_paused_while_the_integration_is_not_active(self):
        flow = self.make_flow()
        self.assertEqual(self.integration.state, "draft")
        self.assertFalse(flow.cron_id.active)
        self.integration.action_activate()
        self.assertTrue(flow.cron_id.active)
        self.integration.state = "error"
        self.assertFalse(flow.cron_id.active)

    def test_changing_the_interval_updates_the_scheduled_action(self):
        self.integration.action_activate()
        flow = self.make_flow(interval_number=15, interval_type="minutes")
        cron = flow.cron_id
        flow.write({"interval_number": 2, "interval_type": "hours", "name": "Hourly"})
        self.assertEqual(flow.cron_id, cron, "updated in place, not replaced")
        self.assertEqual((cron.interval_number, cron.interval_type), (2, "hours"))
        self.assertIn("Hourly", cron.name)

    def test_archiving_the_flow_archives_its_scheduled_action_and_back(self):
        self.integration.action_activate()
        flow = self.make_flow()
        cron = flow.cron_id
        self.assertTrue(cron.active)
        flow.active = False
        self.assertFalse(cron.active)
        flow.active = True
        self.assertTrue(cron.active)

    def test_deleting_the_flow_deletes_its_scheduled_action(self):
        flow = self.make_flow()
        cron = flow.cron_id
        flow.unlink()
        self.assertFalse(cron.exists())

    def test_cron_entry_point_runs_only_a_runnable_flow(self):
        flow = self.make_flow()
        Flow = type(self.env["apicenter.flow"])
        with patch.object(Flow, "_run", autospec=True) as run:
            self.env["apicenter.flow"]._cron_run(flow.id)  # integration in draft
            self.env["apicenter.flow"]._cron_run(flow.id + 10_000)  # deleted flow
            run.assert_not_called()
            self.integration.action_activate()
            self.env["apicenter.flow"]._cron_run(flow.id)
            run.assert_called_once()
            self.assertEqual(run.call_args.args[0], flow)
