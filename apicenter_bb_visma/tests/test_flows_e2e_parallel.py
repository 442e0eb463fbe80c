# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
"""Parallel runs: a run split into queue_job batches, against the simulators on loopback.

Two ways to perform the jobs, both from queue_job: ``trap_jobs`` (the jobs are not stored; the
test checks what was enqueued and performs it), and stored jobs performed the way the job
runner does it (:meth:`TestParallelRuns.perform_stored_jobs`: started, performed, done -- or,
on a RetryableJobError, postponed by the job function's back-off and pending again), for what
depends on the job queue's state: retries, identity keys, cancelled jobs.
"""

from odoo import fields
from odoo.tests import tagged

from odoo.addons.queue_job.exception import RetryableJobError
from odoo.addons.queue_job.job import Job
from odoo.addons.queue_job.tests.common import trap_jobs

from ..sync.fanout import job_key
from .test_flows_e2e import ServedSimulatorsCase

DEBTORS = 30  # in the default BuchhaltungsButler seed; two of them Visma.net refuses (AF, HR)


@tagged("post_install", "-at_install")
class TestParallelRuns(ServedSimulatorsCase):
    def setUp(self):
        super().setUp()
        self.customers = self.make_flow(
            name="Customers", flow_type="customers", parallel_batches=True, batch_size=8
        )

    # -- helpers ----------------------------------------------------------------------------
    def apicenter_jobs(self, states=("pending",)):
        return self.env["queue.job"].search(
            [("identity_key", "=like", "apicenter_bb_visma:run:%"), ("state", "in", states)],
            order="id",
        )

    def perform_stored_jobs(self, jobs=None):
        """Perform pending jobs as the job runner does; returns the RetryableJobErrors."""
        retried = []
        for record in jobs if jobs is not None else self.apicenter_jobs():
            job = Job.load(self.env, record.uuid)
            job.set_started()
            job.store()
            try:
                job.perform()
            except RetryableJobError as err:
                job.postpone(result=str(err), seconds=err.seconds)
                job.set_pending(reset_retry=False)
                job.store()
                retried.append(err)
            else:
                job.set_done()
                job.store()
        self.env.invalidate_all()
        return retried

    def check_run_against_its_logs(self, run):
        """The run's counts are the sum of its batches' and match its log lines."""
        for action, field in (
            ("create", "created_count"),
            ("update", "updated_count"),
            ("skip", "skipped_count"),
            ("park", "parked_count"),
        ):
            self.assertEqual(run[field], sum(run.batch_ids.mapped(field)), field)
            self.assertEqual(
                run[field],
                len(run.log_ids.filtered(lambda line, a=action: line.action == a)),
                field,
            )

    # -- tests ------------------------------------------------------------------------------
    def test_scheduled_action_queues_the_run_and_the_batches_finish_it(self):
        with trap_jobs() as trap:
            self.customers._cron_run(self.customers.id)
            run = self.customers.last_run_id
            self.assertEqual((run.state, run.parallel), ("running", True))
            trap.assert_jobs_count(1)
            trap.assert_enqueued_job(
                run._job_stream, properties={"identity_key": job_key(run.id, "stream")}
            )
            self.assertFalse(self.visma_writes(), "nothing is written before a worker runs")
            trap.perform_enqueued_jobs()  # the stream job
            self.env.invalidate_all()
            self.assertEqual(run.batch_count, 4, "30 debtors in batches of 8")
            trap.assert_jobs_count(4)  # the trap keeps the jobs not performed yet
            for number in (1, 2, 3, 4):
                job = trap.enqueued_jobs[number - 1]
                self.assertEqual(job.identity_key, job_key(run.id, f"batch:{number}"))
                self.assertEqual(job.channel, "root.apicenter")
            self.assertEqual(
                [len(job.args[1]) for job in trap.enqueued_jobs], [8, 8, 8, 6], "the records"
            )
            self.assertEqual(run.state, "running")
            trap.perform_enqueued_jobs()  # the four batch jobs
        self.env.invalidate_all()
        self.assertEqual(run.state, "partial", run.message)
        self.assertEqual((run.created_count, run.parked_count), (DEBTORS - 2, 2))
        self.assertEqual(len(run.log_ids), DEBTORS)
        self.assertEqual(run.batch_ids.mapped("state"), ["done"] * 4)
        self.check_run_against_its_logs(run)
        links = self.links("customer").filtered("target_key")
        self.assertEqual(len(links), DEBTORS - 2)
        self.assertEqual(len(self.visma_sim.customers), len(links) + 1)  # + the seed's own
        self.assertIn(f"{DEBTORS - 2} created", self.customers.message_ids[0].body)
        # the source was read once, by the stream job: one debtor list, no record fetched again
        debtor_reads = [e for e in self.bb_sim.requests.entries if "debtors" in e["path"]]
        self.assertEqual(len(debtor_reads), 1)

    def test_switched_off_the_scheduled_action_runs_the_flow_itself(self):
        self.customers.parallel_batches = False
        with trap_jobs() as trap:
            run = self.run_scheduled(self.customers)
            trap.assert_jobs_count(0)
        self.assertEqual((run.state, run.parallel), ("partial", False))
        self.assertEqual(run.created_count, DEBTORS - 2)

    def test_a_batch_hit_by_an_outage_is_retried_after_a_back_off_and_counts_stay_true(self):
        # Visma.net answers 503 to a create (the client does not resend a write on its own: it
        # may have been processed; the batch's next attempt looks the customer up first)
        self.visma_sim.faults.add("status", method="POST", path=r"^/v1/customer$", times=1)
        self.run_scheduled(self.customers)  # through the cron: the run and its stream job
        run = self.customers.last_run_id
        self.assertEqual(self.perform_stored_jobs(), [])  # stream
        stream = self.apicenter_jobs(("done",))
        self.assertEqual(stream.identity_key, job_key(run.id, "stream"))
        before = fields.Datetime.now()
        retried = self.perform_stored_jobs()  # the four batches; the first meets the outage
        self.assertEqual(len(retried), 1)
        waiting = self.apicenter_jobs()
        self.assertEqual(waiting.identity_key, job_key(run.id, "batch:1"))
        self.assertEqual(waiting.retry, 1)
        # the job function's retry pattern: the first retry one minute later
        delay = (waiting.eta - before).total_seconds()
        self.assertAlmostEqual(delay, 60, delta=10)
        batch = run.batch_ids.filtered(lambda b: b.sequence == 1)
        self.assertEqual((batch.state, batch.attempts, batch.failed_count), ("retrying", 1, 1))
        self.assertIn("transient", batch.message)
        self.assertEqual(run.state, "running", "a batch is still open")
        self.assertEqual(self.perform_stored_jobs(), [])  # the retry: the outage is over
        self.assertEqual(run.state, "partial", run.message)
        self.assertEqual(
            (run.created_count, run.parked_count, run.failed_count), (DEBTORS - 2, 2, 0)
        )
        self.assertEqual((batch.state, batch.attempts), ("done", 2))
        # the log keeps both attempts of the record that failed first
        errors = run.log_ids.filtered(lambda line: line.action == "error")
        self.assertEqual(len(errors), 1)
        self.assertEqual(
            run.log_ids.filtered(
                lambda line: line.source_key == errors.source_key and line.action == "create"
            ).source_key,
            errors.source_key,
        )
        names = [c.get("name") for c in self.visma_sim.customers.values()]
        self.assertEqual(len(names), len(set(names)), "no customer twice")

    def test_a_flow_whose_run_is_queued_is_not_queued_twice(self):
        first = self.customers._run()
        again = run_or_busy(self.customers)
        self.assertEqual(again, "busy")
        self.assertEqual(len(self.apicenter_jobs()), 1)
        # enqueueing the same stream job again leaves one pending job (its identity key)
        first.with_delay(identity_key=job_key(first.id, "stream"))._job_stream()
        self.assertEqual(len(self.apicenter_jobs()), 1)
        self.perform_stored_jobs()
        batches = self.apicenter_jobs()
        self.assertEqual(len(batches), 4)
        # a stream job performed twice (requeued after its worker died) queues nothing more
        self.assertEqual(first._job_stream(), f"run {first.id} is not waiting for its stream job")
        self.assertEqual(len(self.apicenter_jobs()), 4)
        self.perform_stored_jobs()
        self.assertEqual(first.state, "partial")

    def test_a_run_whose_jobs_were_cancelled_is_closed_when_the_flow_starts_again(self):
        stale = self.customers._run()
        self.apicenter_jobs().button_cancelled()
        fresh = self.customers._run()
        self.env.invalidate_all()
        self.assertNotEqual(fresh, stale)
        self.assertEqual((stale.state, stale.cause_key), ("failed", "run:jobs_ended"))
        self.perform_stored_jobs()
        self.perform_stored_jobs()
        self.assertEqual(fresh.state, "partial")
        self.assertEqual(fresh.created_count, DEBTORS - 2)

    def test_orders_in_parallel_store_the_watermark_when_the_last_batch_ends(self):
        self.customers.parallel_batches = False
        self.run_scheduled(self.customers)
        orders = self.make_flow(
            name="Orders", flow_type="orders", parallel_batches=True, batch_size=10
        )
        run = orders._run()
        self.perform_stored_jobs()  # stream
        self.assertEqual(run.batch_count, 5, "41 outgoing receipts in batches of 10")
        self.assertTrue(run.fanout_watermark)
        self.assertFalse(orders.watermark, "not before the batches are done")
        self.perform_stored_jobs()
        self.assertEqual(run.state, "partial", run.message)
        self.assertEqual(run.failed_count, 0)
        self.assertEqual(orders.watermark, run.fanout_watermark)
        self.check_run_against_its_logs(run)
        documents = self.visma_documents()
        self.assertEqual(sum(documents.values()), run.created_count)
        self.assertEqual(max(documents.values()), 1)
        self.assertEqual(max(self.receipt_reads().values()), 1, "each file read once")


def run_or_busy(flow):
    from ..sync.sink import FlowBusy

    try:
        return flow._run()
    except FlowBusy:
        return "busy"
