# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
"""The link between a source record and its target record: idempotency and delta sync.

One row per (integration, entity, source key), enforced by the database: a record synced
twice can never get two targets, whatever two concurrent workers do.
"""

from odoo import fields, models


class ApicenterLink(models.Model):
    _name = "apicenter.link"
    _description = "APIcenter Link"
    _order = "integration_id, entity, source_key"
    _rec_name = "source_key"

    integration_id = fields.Many2one(
        "apicenter.integration", required=True, ondelete="cascade", index=True
    )
    company_id = fields.Many2one(related="integration_id.company_id", store=True, index=True)
    entity = fields.Char(required=True)
    source_key = fields.Char(required=True)
    target_key = fields.Char()
    content_hash = fields.Char(help="Hash of the last payload sent: unchanged means skip.")
    last_sync = fields.Datetime(default=fields.Datetime.now)
    meta = fields.Json(help="What the flow keeps about the target record, e.g. a document number.")

    _integration_entity_source_uniq = models.Constraint(
        "UNIQUE(integration_id, entity, source_key)",
        "A source record can be linked only once per integration and entity.",
    )
    _target_lookup = models.Index("(integration_id, entity, target_key)")
