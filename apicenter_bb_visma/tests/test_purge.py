# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
from datetime import datetime, timedelta

from odoo.tests import tagged

from .common import ApicenterCase

NOW = datetime(2026, 6, 30, 12, 0, 0)


@tagged("post_install", "-at_install")
class TestPurge(ApicenterCase):
    def _history(self, integration, flow, ages_in_days):
        """One run with one log line per age, dated ``age`` days before NOW."""
        runs = logs = self.env["apicenter.run"]
        logs = self.env["apicenter.log"]
        for age in ages_in_days:
            when = NOW - timedelta(days=age)
            run = self.env["apicenter.run"].create(
                {
                    "flow_id": flow.id,
                    "integration_id": integration.id,
                    "date_start": when,
                    "state": "done",
                }
            )
            runs |= run
            logs |= self.env["apicenter.log"].create(
                {
                    "run_id": run.id,
                    "flow_id": flow.id,
                    "integration_id": integration.id,
                    "date": when,
                    "entity": "customer",
                    "source_key": f"age-{age}",
                    "action": "create",
                }
            )
        return runs, logs

    def test_purge_deletes_only_what_is_older_than_the_retention(self):
        flow = self.make_flow()
        self.integration.log_retention_days = 30
        runs, logs = self._history(self.integration, flow, [1, 29, 31, 400])
        deleted = self.env["apicenter.integration"]._purge_expired(now=NOW)
        self.assertEqual(deleted, (2, 2))
        self.assertEqual(logs.exists().mapped("source_key"), ["age-1", "age-29"])
        self.assertEqual(len(runs.exists()), 2)

    def test_each_integration_keeps_its_own_retention(self):
        short = self.integration.copy({"name": "Short", "log_retention_days": 7})
        short_flow = self.env["apicenter.flow"].create(
            {"name": "Stock", "integration_id": short.id, "flow_type": "stock"}
        )
        flow = self.make_flow()
        self.integration.log_retention_days = 30
        _runs, logs_30 = self._history(self.integration, flow, [10])
        _runs, logs_7 = self._history(short, short_flow, [10])
        self.env["apicenter.integration"]._purge_expired(now=NOW)
        self.assertTrue(logs_30.exists())
        self.assertFalse(logs_7.exists())

    def test_purge_works_in_batches_until_nothing_old_is_left(self):
        flow = self.make_flow()
        self.integration.log_retention_days = 1
        _runs, logs = self._history(self.integration, flow, [5, 6, 7, 8, 9])
        unlinked = []
        Log = type(self.env["apicenter.log"])
        original = Log.unlink

        def counting_unlink(records):
            unlinked.append(len(records))
            return original(records)

        Log.unlink = counting_unlink
        try:
            deleted = self.env["apicenter.integration"]._purge_expired(batch_size=2, now=NOW)
        finally:
            Log.unlink = original
        self.assertEqual(deleted, (5, 5))
        self.assertEqual(unlinked, [2, 2, 1], "at most batch_size ids per statement")
        self.assertFalse(logs.exists())

    def test_cron_entry_point_does_not_commit_inside_a_test(self):
        flow = self.make_flow()
        _runs, logs = self._history(self.integration, flow, [365 * 5])
        # would raise "Cannot commit or rollback a cursor from inside a test" if it committed
        self.env["apicenter.integration"]._cron_purge_expired()
        self.assertFalse(logs.exists())
