# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
"""A problem: the failed or parked records of one flow that share one cause.

Why group: the same missing SKU across 200 orders is one thing for a human to fix, not 200.
The engine gives every failure a stable ``cause_key`` (``data:missing_sku:ABC``,
``auth:visma:invalid_client``, ...); the monitoring of a run's end
(:meth:`~.apicenter_run_ops.ApicenterRunOps._monitor`) files each failing log line under the
open problem of its flow and cause, and resolves the problem once none of its records is
failing any more. A problem is announced to the integration's recipients once when it opens
and once when it is resolved -- never per run, so a flow failing every five minutes does not
send a mail every five minutes.

Two scopes: ``record`` problems hold log lines (a record parked or failed; resolved when each
of those records has since gone through); ``run`` problems are a run that stopped without a
record to blame (unreadable source, missing flow type); resolved by the next run that ends.
"""

from odoo import api, fields, models

PROBLEM_STATES = [("open", "Open"), ("resolved", "Resolved")]
PROBLEM_SCOPES = [("record", "Records"), ("run", "Whole run")]
#: source keys named in a notification; the rest are counted
NOTIFY_MAX_KEYS = 10


class ApicenterProblem(models.Model):
    _name = "apicenter.problem"
    _description = "APIcenter Problem"
    _order = "state, last_seen desc, id desc"
    _rec_name = "message"

    integration_id = fields.Many2one(
        "apicenter.integration", required=True, ondelete="cascade", index=True, readonly=True
    )
    flow_id = fields.Many2one(
        "apicenter.flow", required=True, ondelete="cascade", index=True, readonly=True
    )
    company_id = fields.Many2one(related="integration_id.company_id", store=True, index=True)
    cause_key = fields.Char(string="Cause", required=True, index=True, readonly=True)
    message = fields.Text(
        string="Problem",
        readonly=True,
        help="The cause in one sentence, as the latest record said it.",
    )
    scope = fields.Selection(PROBLEM_SCOPES, required=True, default="record", readonly=True)
    state = fields.Selection(
        PROBLEM_STATES, required=True, default="open", index=True, readonly=True
    )
    first_seen = fields.Datetime(required=True, default=fields.Datetime.now, readonly=True)
    last_seen = fields.Datetime(required=True, default=fields.Datetime.now, readonly=True)
    resolved_date = fields.Datetime(string="Resolved", readonly=True)
    record_count = fields.Integer(
        string="Records", readonly=True, help="Records still failing with this cause."
    )
    occurrence_count = fields.Integer(
        string="Occurrences", readonly=True, help="Log lines filed under this problem, all runs."
    )
    notified = fields.Boolean(
        readonly=True, help="Announced to the integration's recipients (once per problem)."
    )
    log_ids = fields.One2many("apicenter.log", "problem_id", string="Log Lines", readonly=True)

    # -- reading ------------------------------------------------------------------------------
    @api.model
    def _action_open(self, domain):
        """The open problems of ``domain`` (a flow's or an integration's), as a window action."""
        return {
            "type": "ir.actions.act_window",
            "name": self.env._("Problems"),
            "res_model": "apicenter.problem",
            "view_mode": "list,form",
            "domain": domain,
            "context": {"search_default_open": 1},
        }

    def _open_logs(self):
        """The failing log lines no later attempt has superseded: one per failing record."""
        return self.env["apicenter.log"].search(
            [("problem_id", "in", self.ids), ("superseded_by_id", "=", False)]
        )

    def _sentence(self):
        """The notification's text for this problem: the cause and the records it concerns."""
        self.ensure_one()
        if self.scope == "run":
            return self.env._(
                "%(message)s (cause %(cause)s)", message=self.message or "", cause=self.cause_key
            )
        keys = [key for key in self._open_logs().mapped("source_key") if key]
        shown = ", ".join(sorted(set(keys))[:NOTIFY_MAX_KEYS])
        more = self.record_count - min(len(set(keys)), NOTIFY_MAX_KEYS)
        records = shown + (self.env._(" and %s more", more) if more > 0 else "")
        return self.env._(
            "%(message)s (cause %(cause)s) -- %(count)s record(s): %(records)s",
            message=self.message or "",
            cause=self.cause_key,
            count=self.record_count,
            records=records,
        )

    # -- buttons ------------------------------------------------------------------------------
    def action_open_logs(self):
        self.ensure_one()
        name = self.env._("Records of the problem")
        return {
            "type": "ir.actions.act_window",
            "name": name,
            "res_model": "apicenter.log",
            "view_mode": "list,form",
            "domain": [("problem_id", "=", self.id)],
            "context": {"search_default_still_failing": 1},
        }

    def action_replay(self):
        """Retry every record that still fails with this cause, with the current mapping."""
        return self._open_logs().action_replay()
