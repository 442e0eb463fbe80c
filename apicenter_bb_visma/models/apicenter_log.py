# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
"""One line of the activity log: what happened to one record in one run.

Written by :class:`~odoo.addons.apicenter_bb_visma.sync.sink.OdooRunSink` through its own
cursor; payloads arrive redacted from the core and are redacted again before they are stored.
They are stored as compact JSON, which a run writes many times faster than indented JSON; the
form shows them indented (the ``*_display`` fields), a cost paid only when a line is opened.
"""

import json

from odoo import api, fields, models

#: the stored payload fields, each shown indented by the field of the same name + "_display"
PAYLOAD_FIELDS = ("source_payload", "request_payload", "response_payload", "exchanges")

LOG_ACTIONS = [
    ("create", "Create"),
    ("update", "Update"),
    ("skip", "Skip"),
    ("park", "Park"),
    ("error", "Error"),
]


class ApicenterLog(models.Model):
    _name = "apicenter.log"
    _description = "APIcenter Activity Log"
    _order = "date desc, id desc"
    _rec_name = "source_key"

    date = fields.Datetime(required=True, default=fields.Datetime.now, index=True, readonly=True)
    run_id = fields.Many2one("apicenter.run", ondelete="cascade", index=True, readonly=True)
    flow_id = fields.Many2one("apicenter.flow", ondelete="cascade", index=True, readonly=True)
    integration_id = fields.Many2one(
        "apicenter.integration", required=True, ondelete="cascade", index=True, readonly=True
    )
    company_id = fields.Many2one(related="integration_id.company_id", store=True, index=True)
    entity = fields.Char(required=True, readonly=True)
    source_key = fields.Char(index=True, readonly=True)
    target_key = fields.Char(index=True, readonly=True)
    action = fields.Selection(LOG_ACTIONS, required=True, index=True, readonly=True)
    cause_key = fields.Char(string="Cause", index=True, readonly=True)
    message = fields.Text(readonly=True)
    source_payload = fields.Text(readonly=True)
    request_payload = fields.Text(readonly=True)
    response_payload = fields.Text(readonly=True)
    exchanges = fields.Text(string="HTTP Exchanges", readonly=True)
    duration_ms = fields.Integer(string="Duration (ms)", readonly=True)
    dry_run = fields.Boolean(readonly=True)
    source_payload_display = fields.Text(string="Source", compute="_compute_payload_display")
    request_payload_display = fields.Text(string="Request", compute="_compute_payload_display")
    response_payload_display = fields.Text(string="Response", compute="_compute_payload_display")
    exchanges_display = fields.Text(string="HTTP Exchanges", compute="_compute_payload_display")

    @api.depends(*PAYLOAD_FIELDS)
    def _compute_payload_display(self):
        for line in self:
            for name in PAYLOAD_FIELDS:
                line[f"{name}_display"] = _indented(line[name])


def _indented(text):
    """JSON text indented for reading; any other text (or none) as it is."""
    if not text:
        return text
    try:
        return json.dumps(json.loads(text), ensure_ascii=False, indent=1)
    except ValueError:
        return text
