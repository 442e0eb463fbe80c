# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
"""Parallel runs: a run split into batches that queue_job workers process side by side.

A flow with "Parallel batches" on (customers and orders: the flows whose records are
independent documents) does not run in its scheduled action. The action creates the run and
enqueues its *stream job*, which reads the source once, cuts it into batches of the flow's batch
size and enqueues one *batch job* per batch, carrying the records themselves (no record is read
twice). Each batch job processes its records with the engine (``Flow.run_items``) and reports
to its batch row; the last batch to end closes the run: counts, state, chatter summary and --
when every batch ended without an error -- the flow's watermark. The machinery is in
``sync/fanout.py``; the job options (channel, retry back-off) are data
(``data/apicenter_queue_job.xml``).

Why a row per batch: a batch job can run more than once (queue_job retries it after a
transient error, or requeues it after its worker died). Its row keeps what each record became
across the attempts (a record created by the first attempt and skipped by the second was
created), so the run's counts stay true however often a batch ran.
"""

from odoo import api, fields, models

BATCH_STATES = [
    ("queued", "Queued"),
    ("retrying", "Waiting for a retry"),
    ("done", "Done"),
    ("skipped", "Not processed"),
]


class ApicenterRunBatch(models.Model):
    _name = "apicenter.run.batch"
    _description = "APIcenter Run Batch"
    _order = "run_id, sequence"

    run_id = fields.Many2one("apicenter.run", required=True, ondelete="cascade", index=True)
    company_id = fields.Many2one(related="run_id.company_id", store=True, index=True)
    sequence = fields.Integer(required=True)
    state = fields.Selection(BATCH_STATES, default="queued", required=True, index=True)
    record_count = fields.Integer(string="Records")
    attempts = fields.Integer(help="How often a worker processed this batch.")
    created_count = fields.Integer(string="Created")
    updated_count = fields.Integer(string="Updated")
    skipped_count = fields.Integer(string="Skipped")
    parked_count = fields.Integer(string="Parked")
    failed_count = fields.Integer(string="Failed")
    #: source key -> action over all attempts (see the module docstring)
    actions = fields.Json(string="Actions per Record")
    message = fields.Text()

    _run_sequence_uniq = models.Constraint(
        "UNIQUE(run_id, sequence)", "A batch number is used once per run."
    )


class ApicenterRun(models.Model):
    _inherit = "apicenter.run"

    parallel = fields.Boolean(
        readonly=True, help="The run was split into batches processed by queue_job workers."
    )
    batch_ids = fields.One2many("apicenter.run.batch", "run_id", string="Batches")
    batch_count = fields.Integer(string="Number of Batches", readonly=True)
    #: the watermark the run stores when its last batch ends without an error
    fanout_watermark = fields.Char(
        string="Watermark of the Run",
        readonly=True,
        help="Stored on the flow when the last batch ends and no record failed.",
    )

    # -- runs whose process died ----------------------------------------------------------------
    @api.model
    def _close_interrupted(self, flow):
        """Close the in-process runs of ``flow``'s type that are still ``running`` though
        their process is gone; call it while holding the flow type's run lock.

        A run in this process (not ``parallel``) holds that lock from its start to its end, on
        the connection of its own cursor. Whoever holds the lock now therefore knows that any
        other such run still ``running`` lost its process (a killed worker, a server restart)
        before it could end. Its counts are those of its last completed batch; its watermark
        was not moved past what it completed, so the next run reads the rest again. Parallel
        runs are not concerned: their queue jobs end them (sync/fanout.py).
        """
        runs = self.search(
            [
                ("integration_id", "=", flow.integration_id.id),
                ("flow_type", "=", flow.flow_type),
                ("state", "=", "running"),
                ("parallel", "=", False),
            ]
        )
        for run in runs:
            # the last time its process wrote the run: the end of its last completed batch
            ended = max(run.write_date or run.date_start, run.date_start)
            run.write(
                {
                    "state": "failed",
                    "date_end": ended,
                    "duration": (ended - run.date_start).total_seconds(),
                    "cause_key": "run:interrupted",
                    "message": self.env._(
                        "The process running this run stopped before it ended (a killed "
                        "worker or a server restart); closed when the next run started. Its "
                        "counts are those of its last completed batch; records it had not "
                        "completed are read again by the next run."
                    ),
                }
            )
            run._on_closed()
        return runs

    def _job_stream(self):
        """Read the source once and enqueue the batch jobs of this (queued) run."""
        from ..sync.fanout import stream

        return stream(self)

    def _job_batch(self, sequence, items):
        """Process batch ``sequence`` of this run: ``items`` are the serialized source items
        the stream job read."""
        from ..sync.fanout import process_batch

        return process_batch(self, sequence, items)
