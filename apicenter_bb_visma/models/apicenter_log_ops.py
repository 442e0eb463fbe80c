# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
"""Activity log, operator side: the problem a failing line belongs to, the later attempt that
superseded it, and retrying parked or failed records (replay).

A retry goes through the engine's ``Flow.replay`` with the current mapping and settings, as a
run of its own (flagged ``is_replay``); the run's end links each old line to the new line of
the same record (``superseded_by_id``), so the old line shows how its record ended, and the
problem loses the record when it went through.
"""

from collections import defaultdict

from odoo import api, fields, models
from odoo.exceptions import UserError

from .apicenter_integration import check_manager

RETRYABLE_ACTIONS = ("park", "error")


class ApicenterLogOps(models.Model):
    _inherit = "apicenter.log"

    problem_id = fields.Many2one(
        "apicenter.problem", ondelete="set null", index=True, readonly=True
    )
    superseded_by_id = fields.Many2one(
        "apicenter.log",
        string="Later Attempt",
        ondelete="set null",
        index="btree_not_null",
        readonly=True,
        help="The next log line of the same record (a later run or a retry).",
    )
    supersedes_ids = fields.One2many(
        "apicenter.log", "superseded_by_id", string="Earlier Attempts", readonly=True
    )
    outcome = fields.Char(
        compute="_compute_outcome",
        help="How the record ended: this line's action, or the latest attempt's.",
    )
    still_failing = fields.Boolean(
        compute="_compute_outcome",
        search="_search_still_failing",
        help="Parked or failed, and no later attempt of the record exists yet.",
    )

    @api.depends("action", "superseded_by_id")
    def _compute_outcome(self):
        labels = dict(self._fields["action"]._description_selection(self.env))
        for line in self:
            latest = line
            seen = set()
            while latest.superseded_by_id and latest.id not in seen:
                seen.add(latest.id)
                latest = latest.superseded_by_id
            line.still_failing = line.action in RETRYABLE_ACTIONS and not line.superseded_by_id
            if latest == line:
                line.outcome = labels.get(line.action, line.action)
            else:
                line.outcome = self.env._(
                    "%(action)s later (%(date)s)",
                    action=labels.get(latest.action, latest.action),
                    date=fields.Datetime.to_string(latest.date),
                )

    def _search_still_failing(self, operator, value):
        if operator not in ("=", "!=") or not isinstance(value, bool):
            raise UserError(self.env._("Unsupported search on 'still failing'."))
        domain = [("action", "in", RETRYABLE_ACTIONS), ("superseded_by_id", "=", False)]
        if (operator == "=") == value:
            return domain
        return ["!", "&", *domain]

    # -- replay -------------------------------------------------------------------------------
    def _retryable(self):
        return self.filtered(
            lambda line: (
                line.action in RETRYABLE_ACTIONS
                and not line.dry_run
                and not line.superseded_by_id
                and line.source_key
                and line.flow_id
            )
        )

    def action_replay(self):
        """Retry these parked or failed records, one replay run per flow.

        Lines already superseded (their record went through again since), dry-run lines and
        lines without a record key are left out; when nothing is left, the user is told why.
        """
        # a retry writes to Visma.net with the integration's credentials
        check_manager(self.env, self.env._("Only an Integration Manager can retry records."))
        lines = self._retryable()
        if not lines:
            raise UserError(
                self.env._(
                    "Nothing to retry: only parked or failed records of real runs whose record has "
                    "not been processed again since can be retried."
                )
            )
        by_flow = defaultdict(list)
        for line in lines.sorted("id"):
            by_flow[line.flow_id].append(line.source_key)
        runs = self.env["apicenter.run"]
        for flow, keys in by_flow.items():
            runs |= flow._replay(keys)
        self.env.invalidate_all()  # written through the runs' own cursors
        if len(runs) == 1:
            return runs.action_open_logs()
        name = self.env._("Retry runs")
        return {
            "type": "ir.actions.act_window",
            "name": name,
            "res_model": "apicenter.run",
            "view_mode": "list,form",
            "domain": [("id", "in", runs.ids)],
        }
