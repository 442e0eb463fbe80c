# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
"""Integrations, operator side: health of all its flows at a glance, open problems, and the
way back into an unfinished setup assistant."""

from odoo import api, fields, models

from .apicenter_flow_ops import FLOW_HEALTH

#: the worst flow decides the integration's health, in this order
HEALTH_ORDER = ["failed", "stalled", "warning", "never", "paused", "ok"]


class ApicenterIntegrationOps(models.Model):
    _inherit = "apicenter.integration"

    problem_ids = fields.One2many("apicenter.problem", "integration_id", string="Problems")
    open_problem_count = fields.Integer(string="Open Problems", compute="_compute_dashboard")
    records_today = fields.Integer(string="Synced Today", compute="_compute_dashboard")
    stalled_flow_count = fields.Integer(string="Stalled Flows", compute="_compute_dashboard")
    last_sync_date = fields.Datetime(string="Last Real Run", compute="_compute_dashboard")
    health = fields.Selection(FLOW_HEALTH, compute="_compute_dashboard")
    setup_id = fields.Many2one(
        "apicenter.setup",
        string="Unfinished Setup",
        compute="_compute_setup_id",
        groups="apicenter_bb_visma.group_apicenter_manager",
    )

    def _compute_dashboard(self):
        for integration in self:
            flows = integration.flow_ids  # active flows only
            integration.open_problem_count = sum(flows.mapped("open_problem_count"))
            integration.records_today = sum(flows.mapped("records_today"))
            integration.stalled_flow_count = len(flows.filtered("is_stalled"))
            dates = [date for date in flows.mapped("last_sync_date") if date]
            integration.last_sync_date = max(dates) if dates else False
            if integration.state == "error":
                integration.health = "failed"
            elif not flows:
                integration.health = "never"
            else:
                integration.health = min(flows.mapped("health"), key=HEALTH_ORDER.index)

    def _compute_setup_id(self):
        setups = self.env["apicenter.setup"].search(
            [("integration_id", "in", self.ids), ("step", "!=", "done")], order="id desc"
        )
        first = {}
        for setup in setups:
            first.setdefault(setup.integration_id.id, setup)
        for integration in self:
            integration.setup_id = first.get(integration.id, setups.browse())

    def action_open_problems(self):
        self.ensure_one()
        return self.env["apicenter.problem"]._action_open([("integration_id", "=", self.id)])

    @api.model
    def _purge_domains(self, integration, cutoff):
        """The log line of a record still failing under an open problem is kept, whatever its
        age, and so is its run: it is the problem's evidence (its record count, "Records of
        the problem", Retry). Purged, the problem would count no record left and be resolved
        at the next run, while the record was never sent. It goes once the record went
        through (a later line supersedes it) or the problem is resolved."""
        domains = super()._purge_domains(integration, cutoff)
        evidence = [("problem_id.state", "=", "open"), ("superseded_by_id", "=", False)]
        domains["apicenter.log"] = domains["apicenter.log"] + [
            "|",
            "|",
            ("problem_id", "=", False),
            ("problem_id.state", "!=", "open"),
            ("superseded_by_id", "!=", False),
        ]
        domains["apicenter.run"] = domains["apicenter.run"] + [("log_ids", "not any", evidence)]
        # resolved problems go with the runs and log lines past the retention; open ones
        # stay, whatever their age: they still need someone
        domains["apicenter.problem"] = [
            ("integration_id", "=", integration.id),
            ("state", "=", "resolved"),
            ("resolved_date", "<", cutoff),
        ]
        return domains

    def action_continue_setup(self):
        self.ensure_one()
        return self.setup_id._action_open()
