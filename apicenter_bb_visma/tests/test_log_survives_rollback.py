# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
"""The run's log lines and links are written through their own cursor: a rolled-back main
transaction does not take them along.

This needs real, separately committed transactions, which a TransactionCase does not give
when the registry is in test mode. So this class leaves the registry out of test mode: then
``registry.cursor()`` is a real new connection, as in production. The integration and flow are
committed first (a separate transaction cannot reference rows the test's own uncommitted
transaction created), and everything committed is deleted again at the end.
"""

from odoo import SUPERUSER_ID, api
from odoo.tests import tagged
from odoo.tests.common import TransactionCase

from ..sync.linkstore import OdooLinkStore
from ..sync.sink import FlowBusy, OdooRunSink, run_lock_key


class _Result:
    """The fields of bbvisma.engine.RecordResult that the sink reads."""

    def __init__(self, **kw):
        self.__dict__.update(
            dict(
                entity="customer",
                target_key=None,
                message="",
                cause_key=None,
                source=None,
                payload=None,
                response=None,
                exchanges=[],
                duration_ms=1.0,
                dry_run=False,
                aborted_run=False,
            )
        )
        self.__dict__.update(kw)


@tagged("post_install", "-at_install")
class TestLogSurvivesRollback(TransactionCase):
    def _committed(self, func):
        with self.registry.cursor() as cr:
            return func(api.Environment(cr, SUPERUSER_ID, {}))

    def test_logs_and_links_survive_a_rolled_back_main_transaction(self):
        def setup(env):
            integration = env["apicenter.integration"].create({"name": "Rollback test"})
            flow = env["apicenter.flow"].create(
                {
                    "name": "Rollback flow",
                    "integration_id": integration.id,
                    "flow_type": "customers",
                }
            )
            return integration.id, flow.id

        integration_id, flow_id = self._committed(setup)

        def cleanup(env):
            # flows (with their scheduled actions), runs, logs and links go with it
            env["apicenter.integration"].browse(integration_id).unlink()

        self.addCleanup(self._committed, cleanup)

        # the main cursor is rolled back when the block raises
        with self.assertRaises(ZeroDivisionError), self.registry.cursor() as main_cr:
            env = api.Environment(main_cr, SUPERUSER_ID, {})
            flow = env["apicenter.flow"].browse(flow_id)
            sink = OdooRunSink.open(flow)
            store = OdooLinkStore(sink.env, integration_id, commit=sink.commit)
            store.put("customer", "C-1", "V-1", "hash")
            sink.record(_Result(source_key="C-1", action="create", target_key="V-1"))
            sink.batch_done(None, [])
            flow.watermark = "2026-01-01"  # main transaction work, to be rolled back
            main_cr.execute("SELECT 1")
            sink.close()
            raise ZeroDivisionError  # the main transaction fails after the work

        def check(env):
            flow = env["apicenter.flow"].browse(flow_id)
            logs = env["apicenter.log"].search([("flow_id", "=", flow_id)])
            links = env["apicenter.link"].search([("integration_id", "=", integration_id)])
            runs = env["apicenter.run"].search([("flow_id", "=", flow_id)])
            return (
                logs.mapped("source_key"),
                links.mapped("target_key"),
                runs.mapped("state"),
                flow.watermark,
                len(flow.message_ids.filtered(lambda m: "1 created" in m.body)),
            )

        logs, links, states, watermark, summaries = self._committed(check)
        self.assertEqual(logs, ["C-1"], "the log line survived")
        self.assertEqual(links, ["V-1"], "the link survived")
        self.assertEqual(states, ["done"], "the run and its final state survived")
        self.assertEqual(summaries, 1, "the chatter summary survived")
        self.assertFalse(watermark, "the main transaction's own work was rolled back")


@tagged("post_install", "-at_install")
class TestOneRunAtATime(TransactionCase):
    """Two runs of the same flow type of one integration would both create the same records:
    the second one must not start. Real connections again (the lock is a PostgreSQL session
    lock, shared by everything on the test's own connection)."""

    def test_a_second_run_of_the_same_flow_type_does_not_start(self):
        integration = self.env["apicenter.integration"].create({"name": "Busy"})
        flow = self.env["apicenter.flow"].create(
            {"name": "Orders", "integration_id": integration.id, "flow_type": "orders"}
        )
        other_type = self.env["apicenter.flow"].create(
            {"name": "Stock", "integration_id": integration.id, "flow_type": "stock"}
        )
        with self.registry.cursor() as running:  # another worker, running the orders flow
            key = run_lock_key(integration.id, "orders")
            running.execute("SELECT pg_advisory_lock(%s)", [key])
            try:
                with self.assertRaises(FlowBusy):
                    flow._run()
                # the scheduled action skips quietly instead of failing
                integration.action_activate()
                self.env["apicenter.flow"]._cron_run(flow.id)
                # another flow type of the same integration is not blocked by this lock
                self.assertNotEqual(run_lock_key(integration.id, "stock"), key)
                self.assertTrue(other_type.active)
            finally:
                running.execute("SELECT pg_advisory_unlock(%s)", [key])
