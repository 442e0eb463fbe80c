# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
"""One execution of a flow: when, how it ended, what it did (counts), and its log lines."""

from odoo import api, fields, models

RUN_STATES = [
    ("running", "Running"),
    ("done", "Done"),
    ("partial", "Partially done"),
    ("failed", "Failed"),
]


class ApicenterRun(models.Model):
    _name = "apicenter.run"
    _description = "APIcenter Run"
    _inherit = ["mail.thread"]
    _order = "date_start desc, id desc"

    name = fields.Char(compute="_compute_name", store=True)
    flow_id = fields.Many2one("apicenter.flow", required=True, ondelete="cascade", index=True)
    flow_type = fields.Selection(related="flow_id.flow_type", store=True)
    integration_id = fields.Many2one(
        "apicenter.integration", required=True, ondelete="cascade", index=True
    )
    company_id = fields.Many2one(related="integration_id.company_id", store=True, index=True)
    date_start = fields.Datetime(
        string="Start", required=True, default=fields.Datetime.now, index=True
    )
    date_end = fields.Datetime(string="End")
    duration = fields.Float(string="Duration (s)", digits=(16, 1))
    state = fields.Selection(RUN_STATES, default="running", required=True, index=True)
    dry_run = fields.Boolean(help="Nothing was written to Visma.net; the log shows what would be.")
    created_count = fields.Integer(string="Created")
    updated_count = fields.Integer(string="Updated")
    skipped_count = fields.Integer(string="Skipped")
    parked_count = fields.Integer(string="Parked")
    failed_count = fields.Integer(string="Failed")
    message = fields.Text()
    cause_key = fields.Char(string="Cause")
    log_ids = fields.One2many("apicenter.log", "run_id", string="Log Lines")
    log_count = fields.Integer(compute="_compute_log_count")

    @api.depends("flow_id.name", "date_start")
    def _compute_name(self):
        for run in self:
            run.name = f"{run.flow_id.name or ''} {run.date_start or ''}".strip()

    def _compute_log_count(self):
        counts = dict(
            self.env["apicenter.log"]._read_group(
                [("run_id", "in", self.ids)], ["run_id"], ["__count"]
            )
        )
        for run in self:
            run.log_count = counts.get(run, 0)

    def _summary_text(self):
        """The one-line summary posted to the run's and the flow's chatter."""
        self.ensure_one()
        state = dict(self._fields["state"]._description_selection(self.env))[self.state]
        text = self.env._(
            "%(state)s: %(created)s created, %(updated)s updated, %(skipped)s skipped, "
            "%(parked)s parked, %(failed)s failed in %(duration).1f s.",
            state=state,
            created=self.created_count,
            updated=self.updated_count,
            skipped=self.skipped_count,
            parked=self.parked_count,
            failed=self.failed_count,
            duration=self.duration,
        )
        if self.dry_run:
            text = self.env._("Dry run. %s", text)
        if self.message:
            text = f"{text} {self.message}"
        return text

    def _on_closed(self):
        """Called once when the run has ended, in the run cursor's environment (superuser):
        post the summary to the run's and the flow's chatter; a failed or partial run notifies
        the integration's recipients. Extended by the monitoring (apicenter_run_ops.py)."""
        self.ensure_one()
        summary = self._summary_text()
        self.message_post(body=summary, subtype_xmlid="mail.mt_note")
        recipients = self.integration_id.notify_partner_ids
        if self.state in ("failed", "partial") and recipients:
            self.flow_id.message_post(
                body=summary, partner_ids=recipients.ids, subtype_xmlid="mail.mt_comment"
            )
        else:
            self.flow_id.message_post(body=summary, subtype_xmlid="mail.mt_note")

    def action_open_logs(self):
        self.ensure_one()
        name = self.env._("Activity Log")
        return {
            "type": "ir.actions.act_window",
            "name": name,
            "res_model": "apicenter.log",
            "view_mode": "list,form",
            "domain": [("run_id", "=", self.id)],
        }
