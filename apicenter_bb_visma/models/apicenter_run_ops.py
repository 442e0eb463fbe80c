# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
"""Runs, operator side: what started them, measures for the dashboard, and monitoring.

Monitoring happens at the run's end (:meth:`_on_closed`, called once by the sink through the
run's own cursor, so it is kept even when the flow's transaction is rolled back):

1. every parked or failed log line of the run is filed under the open problem of its flow and
   cause (:mod:`.apicenter_problem`) -- one problem for 200 orders missing the same SKU;
2. the earlier failing lines of the records this run handled are superseded by the new line:
   a record that went through is no longer failing, and the problem counts its records anew;
   a problem left with no failing record is resolved;
3. the flow's chatter gets the summary and, for a failed or partial run, each cause in one
   sentence with the records it concerns. The integration's recipients are notified only for
   problems that are new or resolved -- once per cause and flow until it recovers.

Dry runs take no part: they change nothing and notify nobody.
"""

from markupsafe import Markup

from odoo import api, fields, models

RUN_TRIGGERS = [("manual", "Manual"), ("schedule", "Schedule"), ("replay", "Retry")]
#: the cause a failed run without a typed error is filed under
RUN_CAUSE = "run:failed"
#: the cause a failing record without a cause key is filed under
UNKNOWN_CAUSE = "unknown"

# Earlier failing lines (filed under a problem, not yet superseded) of the records this run
# logged get the run's latest line of the same record as their later attempt.
_SUPERSEDE_SQL = """
    UPDATE apicenter_log AS old
       SET superseded_by_id = latest.id
      FROM (SELECT DISTINCT ON (entity, source_key) id, entity, source_key
              FROM apicenter_log
             WHERE run_id = %(run)s AND source_key IS NOT NULL
          ORDER BY entity, source_key, id DESC) AS latest
     WHERE old.flow_id = %(flow)s
       AND old.entity = latest.entity
       AND old.source_key = latest.source_key
       AND old.problem_id IS NOT NULL
       AND old.superseded_by_id IS NULL
       AND old.id < latest.id
"""


class ApicenterRunOps(models.Model):
    _inherit = "apicenter.run"

    trigger = fields.Selection(
        RUN_TRIGGERS,
        default=lambda self: self.env.context.get("apicenter_trigger") or "manual",
        required=True,
        readonly=True,
        index=True,
        help="What started the run: its schedule, a user (Run now, Dry run) or a retry of "
        "parked or failed records.",
    )
    # aggregated as averages in graphs and pivots: a sum of durations says little
    duration = fields.Float(aggregator="avg")
    record_count = fields.Integer(
        string="Records", compute="_compute_measures", store=True, help="Records handled."
    )
    synced_count = fields.Integer(
        string="Synced",
        compute="_compute_measures",
        store=True,
        help="Records created or updated in Visma.net.",
    )
    problem_record_count = fields.Integer(
        string="Parked or Failed", compute="_compute_measures", store=True
    )
    error_rate = fields.Float(
        string="Error Rate (%)",
        compute="_compute_measures",
        store=True,
        aggregator="avg",
        digits=(16, 1),
        help="Parked and failed records as a share of the records handled.",
    )

    @api.depends("created_count", "updated_count", "skipped_count", "parked_count", "failed_count")
    def _compute_measures(self):
        for run in self:
            problems = run.parked_count + run.failed_count
            total = run.created_count + run.updated_count + run.skipped_count + problems
            run.record_count = total
            run.synced_count = run.created_count + run.updated_count
            run.problem_record_count = problems
            run.error_rate = 100.0 * problems / total if total else 0.0

    def action_open_dry_run(self):
        """The log lines of a dry run, each with the exact payload it would have sent."""
        self.ensure_one()
        name = self.env._("Dry run: what would be sent")
        return {
            "type": "ir.actions.act_window",
            "name": name,
            "res_model": "apicenter.log",
            "view_mode": "list,form",
            "views": [
                (self.env.ref("apicenter_bb_visma.apicenter_log_view_list_dry_run").id, "list"),
                (False, "form"),
            ],
            "domain": [("run_id", "=", self.id)],
        }

    # -- the run's end --------------------------------------------------------------------------
    def _on_closed(self):
        """Summary, problems and notifications (replaces the base notification, see module doc)."""
        self.ensure_one()
        summary = self._summary_text()
        self.message_post(body=summary, subtype_xmlid="mail.mt_note")
        if self.dry_run:
            self.flow_id.message_post(body=summary, subtype_xmlid="mail.mt_note")
            return
        opened, known, resolved = self._monitor()
        self._announce(summary, opened, known, resolved)

    def _monitor(self):
        """File this run's failures under problems, supersede earlier failures, resolve.

        Returns ``(opened, known, resolved)``: problems of this run not yet announced, problems
        of this run announced before, and announced problems this run resolved.
        """
        self.ensure_one()
        Log = self.env["apicenter.log"]
        Problem = self.env["apicenter.problem"]
        Log.flush_model()
        Problem.flush_model()
        cr = self.env.cr
        now = fields.Datetime.now()
        touched = Problem.browse()
        # 1. this run's failing lines, grouped by cause
        cr.execute(
            """
            SELECT COALESCE(cause_key, %(unknown)s), (ARRAY_AGG(message ORDER BY id DESC))[1]
              FROM apicenter_log
             WHERE run_id = %(run)s AND action IN ('park', 'error')
          GROUP BY 1
            """,
            {"run": self.id, "unknown": UNKNOWN_CAUSE},
        )
        line_causes = dict(cr.fetchall())
        for cause, message in line_causes.items():
            problem = self._open_problem("record", cause, message, now)
            cr.execute(
                """
                UPDATE apicenter_log SET problem_id = %(problem)s
                 WHERE run_id = %(run)s AND action IN ('park', 'error')
                   AND COALESCE(cause_key, %(unknown)s) = %(cause)s
                """,
                {"problem": problem.id, "run": self.id, "cause": cause, "unknown": UNKNOWN_CAUSE},
            )
            touched |= problem
        # 2. records this run handled again: their earlier failing lines are superseded
        cr.execute(_SUPERSEDE_SQL, {"run": self.id, "flow": self.flow_id.id})
        Log.invalidate_model(["problem_id", "superseded_by_id"])
        # 3. a failed run with no record to blame is a problem of the run itself
        run_cause = self.cause_key or RUN_CAUSE
        resolved = Problem.browse()
        if self.state == "failed" and self.message and run_cause not in line_causes:
            problem = self._open_problem("run", run_cause, self.message, now)
            problem.occurrence_count += 1
            touched |= problem
        else:
            # the run itself got through: whatever stopped earlier runs is over
            run_problems = Problem.search(
                [("flow_id", "=", self.flow_id.id), ("scope", "=", "run"), ("state", "=", "open")]
            )
            run_problems.write({"state": "resolved", "resolved_date": now})
            resolved |= run_problems
        # 4. count the records still failing per open problem of the flow; none left: resolved
        resolved |= self._recount_problems(now)
        opened = touched.filtered(lambda p: p.state == "open" and not p.notified)
        known = touched.filtered(lambda p: p.state == "open" and p.notified)
        opened.notified = True
        return opened, known, resolved.filtered("notified")

    def _open_problem(self, scope, cause, message, now):
        Problem = self.env["apicenter.problem"]
        problem = Problem.search(
            [
                ("flow_id", "=", self.flow_id.id),
                ("scope", "=", scope),
                ("cause_key", "=", cause),
                ("state", "=", "open"),
            ],
            limit=1,
        )
        if problem:
            problem.write({"last_seen": now, "message": message or problem.message})
            return problem
        return Problem.create(
            {
                "integration_id": self.integration_id.id,
                "flow_id": self.flow_id.id,
                "scope": scope,
                "cause_key": cause,
                "message": message or cause,
                "first_seen": now,
                "last_seen": now,
            }
        )

    def _recount_problems(self, now):
        """Record counts of the flow's open record problems; returns those resolved now."""
        Problem = self.env["apicenter.problem"]
        problems = Problem.search(
            [("flow_id", "=", self.flow_id.id), ("scope", "=", "record"), ("state", "=", "open")]
        )
        if not problems:
            return Problem.browse()
        self.env.cr.execute(
            """
            SELECT problem_id,
                   COUNT(DISTINCT COALESCE(source_key, id::text))
                       FILTER (WHERE superseded_by_id IS NULL),
                   COUNT(*)
              FROM apicenter_log
             WHERE problem_id IN %s
          GROUP BY problem_id
            """,
            [tuple(problems.ids)],
        )
        counts = {row[0]: row[1:] for row in self.env.cr.fetchall()}
        resolved = Problem.browse()
        for problem in problems:
            failing, occurrences = counts.get(problem.id, (0, 0))
            vals = {"record_count": failing, "occurrence_count": occurrences}
            if not failing:
                vals.update(state="resolved", resolved_date=now)
                resolved |= problem
            problem.write(vals)
        return resolved

    def _announce(self, summary, opened, known, resolved):
        """One message on the flow; it notifies the recipients only when something is new."""
        body = Markup("<p>%s</p>") % summary
        if opened:
            body += _section(self.env._("New problem, reported once until it is resolved:"), opened)
        if known:
            body += _section(self.env._("Still open, reported before:"), known)
        if resolved:
            items = [
                self.env._(
                    "%(message)s (cause %(cause)s, first seen %(first)s, %(count)s occurrence(s))",
                    message=problem.message or "",
                    cause=problem.cause_key,
                    first=fields.Datetime.to_string(problem.first_seen),
                    count=problem.occurrence_count,
                )
                for problem in resolved
            ]
            body += _section(self.env._("Resolved:"), items)
        recipients = self.integration_id.notify_partner_ids
        if (opened or resolved) and recipients:
            self.flow_id.message_post(
                body=body, partner_ids=recipients.ids, subtype_xmlid="mail.mt_comment"
            )
        else:
            self.flow_id.message_post(body=body, subtype_xmlid="mail.mt_note")


def _section(title, items):
    """``<p><b>title</b></p><ul><li>...</li></ul>``; problems are described by their sentence."""
    texts = [item if isinstance(item, str) else item._sentence() for item in items]
    lines = Markup("").join(Markup("<li>%s</li>") % text for text in texts)
    return Markup("<p><b>%s</b></p><ul>%s</ul>") % (title, lines)
