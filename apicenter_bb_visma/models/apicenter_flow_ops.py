# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
"""Flows, operator side: health for the dashboard, stalled schedules, dry run, retry.

* Health at a glance: the latest real run (dry runs left out), records synced today, open
  problems, stalled. Computed on read, never stored on the flow: a run's own cursor must never
  write the flow row (lock discipline, see sync/sink.py).
* Stalled: a flow whose active schedule produced no run for 3x its interval. A cron
  (data/apicenter_ops_data.xml) flags it, announces it once, and announces when runs come back.
  Only runs started by the schedule count, so clicking "Run now" does not hide a dead cron.
* Dry run: the engine reads, maps and decides without writing; the user is shown the log lines
  with the exact payloads that would be sent.
* Retry (replay): the engine's ``Flow.replay`` for given source keys, with the current mapping,
  as a run of its own whose end links each earlier failing line to the new one.
"""

from datetime import datetime, timedelta
from datetime import time as dt_time

from odoo import api, fields, models

from ..sync.sink import OdooRunSink
from .apicenter_run import RUN_STATES

#: a schedule is stalled when it produced no run for this many intervals
STALL_FACTOR = 3
FLOW_HEALTH = [
    ("never", "Never ran"),
    ("ok", "Healthy"),
    ("warning", "Records need attention"),
    ("failed", "Failing"),
    ("stalled", "Stalled"),
    ("paused", "Paused"),
]


class ApicenterFlowOps(models.Model):
    _inherit = "apicenter.flow"

    schedule_since = fields.Datetime(
        readonly=True,
        copy=False,
        help="When the scheduled action was last switched on: the reference for a flow that "
        "has no scheduled run yet.",
    )
    is_stalled = fields.Boolean(
        string="Stalled",
        readonly=True,
        copy=False,
        index=True,
        help="The schedule produced no run for three times its interval: check the scheduled "
        "action and the cron workers of this Odoo.",
    )
    stalled_since = fields.Datetime(readonly=True, copy=False)
    problem_ids = fields.One2many("apicenter.problem", "flow_id", string="Problems")
    open_problem_count = fields.Integer(string="Open Problems", compute="_compute_dashboard")
    problem_record_count = fields.Integer(
        string="Records with Problems", compute="_compute_dashboard"
    )
    records_today = fields.Integer(
        string="Synced Today",
        compute="_compute_dashboard",
        help="Records created or updated in Visma.net today (real runs, retries included).",
    )
    last_sync_date = fields.Datetime(
        string="Last Real Run", compute="_compute_dashboard", help="Dry runs left out."
    )
    last_sync_state = fields.Selection(
        RUN_STATES, string="Last Real Run State", compute="_compute_dashboard"
    )
    last_sync_run_id = fields.Many2one(
        "apicenter.run", string="Latest Real Run", compute="_compute_dashboard"
    )
    health = fields.Selection(FLOW_HEALTH, compute="_compute_dashboard")

    # -- dashboard ----------------------------------------------------------------------------
    def _compute_dashboard(self):
        Run = self.env["apicenter.run"]
        latest = dict(
            Run._read_group(
                [("flow_id", "in", self.ids), ("dry_run", "=", False)], ["flow_id"], ["id:max"]
            )
        )
        start_of_day = datetime.combine(fields.Date.context_today(self), dt_time.min)
        today = dict(
            Run._read_group(
                [
                    ("flow_id", "in", self.ids),
                    ("dry_run", "=", False),
                    ("date_start", ">=", start_of_day),
                ],
                ["flow_id"],
                ["synced_count:sum"],
            )
        )
        problems = {
            flow: (count, records)
            for flow, count, records in self.env["apicenter.problem"]._read_group(
                [("flow_id", "in", self.ids), ("state", "=", "open")],
                ["flow_id"],
                ["__count", "record_count:sum"],
            )
        }
        for flow in self:
            run = Run.browse(latest.get(flow))
            count, records = problems.get(flow, (0, 0))
            flow.last_sync_run_id = run
            flow.last_sync_date = run.date_start
            flow.last_sync_state = run.state
            flow.records_today = today.get(flow, 0)
            flow.open_problem_count = count
            flow.problem_record_count = records
            flow.health = flow._health(run, count)

    def _health(self, run, open_problems):
        if not (self.active and self.integration_id.active) or self.integration_id.state == "error":
            return "failed" if self.integration_id.state == "error" else "paused"
        if self.is_stalled:
            return "stalled"
        if not run:
            return "never"
        if run.state == "failed":
            return "failed"
        if run.state == "partial" or open_problems:
            return "warning"
        return "ok"

    def action_open_problems(self):
        self.ensure_one()
        return self.env["apicenter.problem"]._action_open([("flow_id", "=", self.id)])

    def action_open_runs(self):
        self.ensure_one()
        name = self.env._("Runs")
        return {
            "type": "ir.actions.act_window",
            "name": name,
            "res_model": "apicenter.run",
            "view_mode": "list,form,graph,pivot",
            "domain": [("flow_id", "=", self.id)],
        }

    # -- schedule and stalled detection -----------------------------------------------------------
    def _sync_cron(self):
        """Also remember when each flow's schedule was switched on (the stall reference)."""
        was_active = {
            flow.id: flow.cron_id.active for flow in self.sudo().with_context(active_test=False)
        }
        result = super()._sync_cron()
        now = fields.Datetime.now()
        for flow in self.sudo().with_context(active_test=False):
            active = flow.cron_id.active
            if active and not was_active.get(flow.id):
                flow.schedule_since = now
            elif not active and (flow.schedule_since or flow.is_stalled):
                flow.write({"schedule_since": False, "is_stalled": False, "stalled_since": False})
        return result

    @api.model
    def _cron_run(self, flow_id):
        """The scheduled action: its runs are marked as started by the schedule."""
        return super(ApicenterFlowOps, self.with_context(apicenter_trigger="schedule"))._cron_run(
            flow_id
        )

    @api.model
    def _cron_check_stalled(self):
        self.search([("cron_id", "!=", False)])._check_stalled()

    def _interval(self):
        return timedelta(**{self.interval_type: self.interval_number})

    def _check_stalled(self, now=None):
        """Flag the flows whose schedule produced no run for 3x the interval; announce each
        change once (stalled, running again). Returns the flows that are stalled now."""
        now = now or fields.Datetime.now()
        last_scheduled = dict(
            self.env["apicenter.run"]
            .sudo()
            ._read_group(
                [("flow_id", "in", self.ids), ("trigger", "=", "schedule")],
                ["flow_id"],
                ["date_start:max"],
            )
        )
        stalled = self.browse()
        for flow in self.sudo():
            reference = max(
                filter(None, [last_scheduled.get(flow), flow.schedule_since]), default=None
            )
            is_stalled = bool(
                flow._cron_should_run()
                and reference
                and now - reference > STALL_FACTOR * flow._interval()
            )
            if is_stalled:
                stalled |= flow
            if is_stalled == flow.is_stalled:
                continue
            flow.write({"is_stalled": is_stalled, "stalled_since": now if is_stalled else False})
            if is_stalled:
                body = self.env._(
                    "Stalled: the schedule of this flow has produced no run since %(since)s, "
                    "more than %(factor)s times its interval of %(number)s %(unit)s. Check that "
                    "its scheduled action is active and that Odoo's cron workers run.",
                    since=fields.Datetime.to_string(reference),
                    factor=STALL_FACTOR,
                    number=flow.interval_number,
                    unit=dict(self._fields["interval_type"]._description_selection(self.env))[
                        flow.interval_type
                    ],
                )
            else:
                body = self.env._(
                    "The schedule of this flow runs again (last scheduled run %(date)s).",
                    date=fields.Datetime.to_string(last_scheduled.get(flow) or now),
                )
            recipients = flow.integration_id.notify_partner_ids
            flow.message_post(
                body=body,
                partner_ids=recipients.ids,
                subtype_xmlid="mail.mt_comment" if recipients else "mail.mt_note",
            )
        return stalled

    # -- dry run ------------------------------------------------------------------------------
    def action_dry_run(self):
        """Run without writing, then show the log lines with the payloads that would be sent."""
        action = super().action_dry_run()
        if action.get("res_model") != "apicenter.run" or not action.get("res_id"):
            return action
        run = self.env["apicenter.run"].browse(action["res_id"])
        self.env.invalidate_all()  # the run was written through its own cursor
        if not run.log_count:
            return action  # nothing was read (e.g. wrong credentials): the run says why
        return run.action_open_dry_run()

    # -- retry (replay) ---------------------------------------------------------------------------
    def _replay(self, source_keys):
        """Process ``source_keys`` again with the current mapping and settings; returns the run.

        Mirrors :meth:`_run` with the engine's ``replay`` instead of ``run``: same sink (logs,
        links, summary, monitoring), no watermark change, the same handling of setup errors.
        """
        self.ensure_one()
        flow = self.with_context(apicenter_trigger="replay")
        keys = list(source_keys)
        return flow._execute(
            OdooRunSink.open(flow),
            lambda engine_flow: engine_flow.replay(keys),
            what=f"retry of {len(keys)} records",
        )
